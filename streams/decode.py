"""Kafka messages of one sensor kind -> a columnar ReadingBatch + dead letters.

The happy path decodes the whole micro-batch with a single msgspec call (the
message bodies are spliced into one JSON array) into typed structs whose
``values`` struct has one field per catalog quantity, then builds columns with
numpy. Only when that call fails does it fall back to one message at a time to
find and dead-letter the culprits; valid readings in the same batch, and in the
same gateway array, are still processed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from detectors.base import FLAG_CODE, ReadingBatch
from streams.catalog import SensorIndex
from streams.deadletter import DeadLetter, Reason
from streams.topology_spec import InputSpec, KindSpec

SensorId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
EventTime = Annotated[datetime, msgspec.Meta(tz=True)] | int
Flag = Literal["N", "F", "M", "S", "D", "C", "T", "B"]
# everything msgspec may raise on hostile input (invalid UTF-8 inside a Raw
# element surfaces as UnicodeDecodeError, deep nesting as RecursionError)
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One Kafka record as the worker received it."""

    value: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int = -1  # the record's Kafka timestamp (broker or producer time); -1: unknown


@dataclass(frozen=True, slots=True)
class ParsedReadings:
    """One row per reading that parsed, in arrival order, plus the messages that did not."""

    values: np.ndarray  # (n, n_quantities) float64, NaN = absent
    event_ms: np.ndarray  # (n,) int64
    sensor_ids: list[str]
    flags: list[str]  # HJ 212 flag letters
    origins: list[tuple[RawMessage, int | None]]  # per row: its message, its index in a gateway array
    reason: np.ndarray  # (n,) object: "" = valid, else a dead-letter reason code
    detail: list[str]
    dead: list[DeadLetter]  # messages (or array elements) that did not parse

    def __len__(self) -> int:
        return len(self.sensor_ids)


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    batch: ReadingBatch  # rows sorted by (sensor_idx, arrival order)
    dead: list[DeadLetter]
    n_readings: int  # valid readings in `batch`
    n_unknown_sensors: int  # readings from sensors not in the catalog (processed)


class KindDecoder:
    """Decoder for one sensor kind's topic; holds its msgspec types and limits."""

    def __init__(self, kind: str, spec: KindSpec, limits: InputSpec, foreign_sensors: dict[str, str]) -> None:
        self.kind = kind
        self.quantities = tuple(spec.quantities)
        self._lo = np.array([q.min for q in spec.quantities.values()])
        self._hi = np.array([q.max for q in spec.quantities.values()])
        self._limits = limits
        self._foreign = foreign_sensors  # sensor_id -> kind, for catalog sensors of *other* kinds
        values = msgspec.defstruct(
            f"{kind.capitalize()}Values",
            [(q, float, math.nan) for q in self.quantities],
            forbid_unknown_fields=True,
        )
        reading = msgspec.defstruct(
            f"{kind.capitalize()}Reading",
            [("sensor_id", SensorId), ("ts", EventTime), ("values", values), ("flag", Flag, "N")],
        )
        self._batch_decoder = msgspec.json.Decoder(list[reading | list[reading]])  # type: ignore[valid-type]
        self._one_decoder = msgspec.json.Decoder(reading | list[msgspec.Raw])
        self._raw_decoder = msgspec.json.Decoder(reading)
        self._value_getters = [attrgetter(q) for q in self.quantities]

    def decode(self, messages: Sequence[RawMessage], index: SensorIndex, now_ms: int) -> DecodedBatch:
        return self._to_batch(self.parse(messages, now_ms), index)

    def _oversize(self, msg: RawMessage, dead: list[DeadLetter]) -> bool:
        """Dead-letter messages too large (or empty) to decode; True if it did."""
        if not msg.value.strip():
            dead.append(DeadLetter.of(msg, Reason.EMPTY, "the message has no body (null value or whitespace)"))
            return True
        limit = self._limits.max_message_bytes
        if len(msg.value) <= limit:
            return False
        dead.append(DeadLetter.of(msg, Reason.OVERSIZE, f"{len(msg.value)} bytes > input.max_message_bytes {limit}"))
        return True

    def _decode_all(self, messages: Sequence[RawMessage], dead: list[DeadLetter]) -> tuple[list[Any], list[tuple[RawMessage, int | None]]]:
        """Readings plus, per reading, (its message, its index in a gateway array)."""
        if not messages:
            return [], []
        try:
            decoded = self._batch_decoder.decode(b"[" + b",".join(m.value for m in messages) + b"]")
        except DECODE_ERRORS:
            decoded = None  # at least one bad message: find it the slow way
        readings: list[Any] = []
        origins: list[tuple[RawMessage, int | None]] = []
        for i, msg in enumerate(messages):
            items = decoded[i] if decoded is not None else self._decode_one(msg, dead)
            if isinstance(items, list):
                readings.extend(items)
                positions = getattr(items, "positions", range(len(items)))
                origins.extend((msg, j) for j in positions)
                if not items and decoded is not None:
                    dead.append(DeadLetter.of(msg, Reason.EMPTY, "the message is an empty JSON array"))
            elif items is not None:
                readings.append(items)
                origins.append((msg, None))
        return readings, origins

    def _decode_one(self, msg: RawMessage, dead: list[DeadLetter]) -> Any:
        """A reading, a list of the valid readings of a gateway array, or None."""
        try:
            item = self._one_decoder.decode(msg.value)
        except DECODE_ERRORS as exc:
            dead.append(DeadLetter.of(msg, *classify(exc, msg.value)))
            return None
        if not isinstance(item, list):
            return item
        if not item:
            dead.append(DeadLetter.of(msg, Reason.EMPTY, "the message is an empty JSON array"))
        good = []
        for j, raw in enumerate(item):
            try:
                good.append((j, self._raw_decoder.decode(raw)))
            except DECODE_ERRORS as exc:
                dead.append(DeadLetter.of(msg, *classify(exc, bytes(raw)), reading_index=j))
        # keep the array positions of the good readings for dead letters found later
        return _IndexedList(good)

    def parse(self, messages: Sequence[RawMessage], now_ms: int) -> ParsedReadings:
        """Every reading of ``messages``, one row each, with the reason it is rejected
        ("" if valid) before any catalog lookup: the readings archive keeps these rows."""
        dead: list[DeadLetter] = []
        sized = [m for m in messages if not self._oversize(m, dead)]
        readings, origins = self._decode_all(sized, dead)
        n = len(readings)
        values = self._value_matrix(readings)  # (n, n_quantities), NaN = absent
        event_ms = np.fromiter(map(_event_ms, readings), np.int64, count=n)
        sensor_ids = [r.sensor_id for r in readings]
        reason, detail = self._reject_reasons(values, event_ms, sensor_ids, now_ms)
        return ParsedReadings(values, event_ms, sensor_ids, [r.flag for r in readings], origins, reason, detail, dead)

    def _to_batch(self, parsed: ParsedReadings, index: SensorIndex) -> DecodedBatch:
        dead = parsed.dead
        sensor_ids, origins = parsed.sensor_ids, parsed.origins
        for row in np.flatnonzero(parsed.reason):
            msg, j = origins[row]
            dead.append(DeadLetter.of(msg, parsed.reason[row], parsed.detail[row], reading_index=j))
        keep = np.flatnonzero(parsed.reason == "")
        found = np.asarray(index.lookup([sensor_ids[i] for i in keep], self._limits.max_unknown_sensors), np.int64)
        for row in keep[found < 0]:
            msg, j = origins[row]
            detail = f"sensor {sensor_ids[row]!r} is not in the catalog and input.max_unknown_sensors={self._limits.max_unknown_sensors} are already tracked; add it to the catalog"
            dead.append(DeadLetter.of(msg, Reason.UNKNOWN_SENSOR_LIMIT, detail, reading_index=j))
        keep, sensor_idx = keep[found >= 0], found[found >= 0]
        unknown = int(np.count_nonzero(sensor_idx >= index.n_known))
        flags = np.fromiter((FLAG_CODE[parsed.flags[i]] for i in keep), np.uint8, count=len(keep))
        partitions = np.fromiter((origins[i][0].partition for i in keep), np.int16, count=len(keep))
        batch = _long_format(parsed.values[keep], parsed.event_ms[keep], np.asarray(sensor_idx, np.int32), flags,
                             partitions)
        return DecodedBatch(batch=batch, dead=dead, n_readings=len(keep), n_unknown_sensors=unknown)

    def _value_matrix(self, readings: list[Any]) -> np.ndarray:
        n = len(readings)
        vals = [r.values for r in readings]
        columns = [np.fromiter(map(get, vals), np.float64, count=n) for get in self._value_getters]
        return np.column_stack(columns) if columns else np.zeros((n, 0))

    def _reject_reasons(
        self, values: np.ndarray, event_ms: np.ndarray, sensor_ids: list[str], now_ms: int
    ) -> tuple[np.ndarray, list[str]]:
        """Per reading: a reason code ("" = valid) and a human detail."""
        n = values.shape[0]
        reason = np.full(n, "", dtype=object)
        detail = [""] * n
        present = ~np.isnan(values)
        outside = present & ((values < self._lo) | (values > self._hi))
        checks: list[tuple[np.ndarray, Reason, Callable[[int], str]]] = [
            (~present.any(axis=1), Reason.EMPTY, lambda i: "`values` has no quantity"),
            (outside.any(axis=1), Reason.OUT_OF_RANGE, lambda i: self._range_detail(values[i], outside[i])),
            (event_ms > now_ms + int(self._limits.max_future_skew_s * 1000), Reason.TS_FUTURE,
             lambda i: f"ts {event_ms[i]} ms is more than input.max_future_skew_s={self._limits.max_future_skew_s:g} s ahead"),
            (event_ms < now_ms - int(self._limits.max_age_s * 1000), Reason.TS_PAST,
             lambda i: f"ts {event_ms[i]} ms is older than input.max_age_s={self._limits.max_age_s:g} s"),
        ]
        for mask, code, describe in checks:
            for i in np.flatnonzero(mask & (reason == "")):
                reason[i], detail[i] = code.value, describe(int(i))
        self._reject_foreign(sensor_ids, reason, detail)
        return reason, detail

    def _range_detail(self, row: np.ndarray, bad: np.ndarray) -> str:
        q = int(np.flatnonzero(bad)[0])
        return f"values.{self.quantities[q]}={row[q]:g} is outside [{self._lo[q]:g}, {self._hi[q]:g}]"

    def _reject_foreign(self, sensor_ids: list[str], reason: np.ndarray, detail: list[str]) -> None:
        foreign = self._foreign
        if not foreign.keys() & set(sensor_ids):
            return
        for i, sid in enumerate(sensor_ids):
            other = foreign.get(sid)
            if other is not None and reason[i] == "":
                reason[i] = Reason.KIND_MISMATCH.value
                detail[i] = f"sensor {sid} is a catalog {other!r} sensor; send it to that kind's topic"


class _IndexedList(list[Any]):
    """Valid readings of a gateway array, with their positions in it."""

    def __init__(self, pairs: list[tuple[int, Any]]) -> None:
        super().__init__(r for _, r in pairs)
        self.positions = [j for j, _ in pairs]


def _event_ms(reading: Any) -> int:
    ts = reading.ts
    if type(ts) is int:
        return ts
    return int(ts.timestamp() * 1000)


def _long_format(values: np.ndarray, event_ms: np.ndarray, sensor_idx: np.ndarray, flags: np.ndarray,
                 partitions: np.ndarray) -> ReadingBatch:
    """(reading x quantity) matrix -> one row per present value, sorted by
    (sensor, arrival): per-sensor order is Kafka order, so any batching of the
    same stream gives the same per-sensor sequence. ``reading_idx`` is each reading's
    arrival position in the batch: detectors that look across sensors (no_signal's
    clock) need the order in which readings of different sensors came."""
    order = np.lexsort((np.arange(len(sensor_idx)), sensor_idx))
    values, event_ms, sensor_idx, flags = values[order], event_ms[order], sensor_idx[order], flags[order]
    partitions = partitions[order]
    reading, quantity = np.nonzero(~np.isnan(values))
    return ReadingBatch(
        sensor_idx=sensor_idx[reading].astype(np.int32),
        reading_idx=order[reading].astype(np.int32),
        event_time_ms=event_ms[reading],
        quantity_idx=quantity.astype(np.int16),
        value=values[reading, quantity],
        flag=flags[reading],
        partition=partitions[reading],
    )


def classify(exc: Exception, body: bytes) -> tuple[Reason, str]:
    """A msgspec failure -> (reason code, detail naming the field)."""
    text = str(exc)
    if isinstance(exc, RecursionError):
        return Reason.MALFORMED_JSON, "JSON nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return Reason.MALFORMED_JSON, f"not valid UTF-8: {exc.reason} at byte {exc.start}"
    if not isinstance(exc, msgspec.ValidationError):  # ValidationError subclasses DecodeError
        if _parses_with_nan(body):
            return Reason.NON_FINITE, "NaN or Infinity in the JSON; send a finite number or leave the quantity out"
        return Reason.MALFORMED_JSON, text
    if "Number out of range" in text:
        return Reason.NON_FINITE, text
    if "unknown field" in text and ".values" in text:
        return Reason.UNKNOWN_QUANTITY, text
    if "missing required field" in text:
        return Reason.MISSING_FIELD, text
    if "Invalid enum value" in text and "flag" in text:
        return Reason.INVALID_FLAG, f"{text}; valid HJ 212 flags: N F M S D C T B"
    return Reason.WRONG_TYPE, text


def _parses_with_nan(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True
