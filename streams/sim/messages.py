"""Readings -> Kafka message bytes (design.md input contract), with gateway batching.

Some sensors sit behind a buffering data logger: it uploads its last k (2..4)
readings as one JSON array. Their key stays the sensor_id, so a sensor's
readings keep their order on one partition. A logger uploads at once while its
sensor is in an incident (as gas detectors in alarm do) and at the end of a run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from detectors.base import FloatArray, IntArray
from streams.sim.city import FlagArray

_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One Kafka record: a reading, or a JSON array of one sensor's readings."""

    topic: str
    key: bytes
    value: bytes
    event_ms: int  # event time of the (last) reading in it
    n_readings: int = 1


class Reading(msgspec.Struct, omit_defaults=False):
    sensor_id: str
    ts: str | int
    values: dict[str, float]
    flag: str = "N"


def parse_offset(text: str) -> int:
    """``+08:00`` -> 28800 seconds."""
    m = _OFFSET.match(text.strip())
    if not m:
        msg = f"timezone: {text!r} is not an offset like +08:00"
        raise ValueError(msg)
    sign = -1 if m.group(1) == "-" else 1
    return sign * (int(m.group(2)) * 3600 + int(m.group(3)) * 60)


def format_rfc3339(epoch_ms: IntArray, tz_offset_s: int) -> list[str]:
    """Epoch milliseconds -> RFC 3339 local time with offset, millisecond precision."""
    local = (epoch_ms + tz_offset_s * 1000).astype("datetime64[ms]")
    sign = "-" if tz_offset_s < 0 else "+"
    minutes = abs(tz_offset_s) // 60
    suffix = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return [f"{s}{suffix}" for s in np.datetime_as_string(local, unit="ms").tolist()]


@dataclass(frozen=True, slots=True)
class TickReadings:
    """The readings of one kind in one tick, sorted by (event time, sensor)."""

    topic: str
    sensor: IntArray  # global sensor index
    event_ms: IntArray
    values: FloatArray  # (n, q) in ``quantities`` order, NaN = not reported
    quantities: tuple[str, ...]
    flag: FlagArray


class Assembler:
    """Turns readings into messages; holds the loggers' buffers between ticks."""

    def __init__(
        self, sensor_ids: Sequence[str], epoch_ms_ts: Sequence[bool], buffer_size: IntArray, tz_offset_s: int
    ) -> None:
        self._ids = list(sensor_ids)
        self._keys = [sid.encode() for sid in sensor_ids]
        self._epoch_ts = list(epoch_ms_ts)  # per sensor: ts as epoch ms (else RFC 3339)
        self._size = buffer_size.tolist()  # per sensor: readings per upload, 1 = no logger
        self._tz = tz_offset_s
        self._buffers: dict[int, list[tuple[int, Reading]]] = {}  # sensor -> (event ms, reading)
        self._encoder = msgspec.json.Encoder()

    def add(self, part: TickReadings, urgent: Sequence[bool]) -> list[tuple[int, SimMessage]]:
        """Messages completed by these readings, each with its sort key (event ms)."""
        out: list[tuple[int, SimMessage]] = []
        stamps = format_rfc3339(part.event_ms, self._tz)
        rows = part.values.tolist()
        flags = part.flag.tolist()
        for i, (g, ms) in enumerate(zip(part.sensor.tolist(), part.event_ms.tolist(), strict=True)):
            values = {q: v for q, v in zip(part.quantities, rows[i], strict=True) if v == v}  # v == v: not NaN
            reading = Reading(self._ids[g], ms if self._epoch_ts[g] else stamps[i], values, flags[i])
            if self._size[g] <= 1 and g not in self._buffers:
                out.append((ms, SimMessage(part.topic, self._keys[g], self._encoder.encode(reading), ms)))
                continue
            buffer = self._buffers.setdefault(g, [])
            buffer.append((ms, reading))
            if urgent[i] or len(buffer) >= self._size[g]:
                out.append((ms, self._flush(part.topic, g)))
        return out

    def flush_held_since(self, cutoff_ms: int, topic_of: Sequence[str]) -> list[tuple[int, SimMessage]]:
        """Upload every buffer whose oldest reading is at or before ``cutoff_ms``
        (loggers also upload on a timer, so a slow sensor's data is not held for long)."""
        stale = sorted(g for g, buffer in self._buffers.items() if buffer[0][0] <= cutoff_ms)
        return [(self._buffers[g][-1][0], self._flush(topic_of[g], g)) for g in stale]

    def _flush(self, topic: str, g: int) -> SimMessage:
        buffer = self._buffers.pop(g)
        body = self._encoder.encode([reading for _, reading in buffer])
        return SimMessage(topic, self._keys[g], body, buffer[-1][0], len(buffer))
