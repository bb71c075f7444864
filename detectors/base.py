"""Columnar micro-batch types and the detector protocol.

A micro-batch is *long format*: one row per (reading, quantity). A reading that
carries six pollutants becomes six rows sharing one ``reading_idx``. Rows are
sorted by (sensor_idx, event_time_ms, reading_idx) before detectors see them,
so per-sensor scans are contiguous.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
Int16Array = npt.NDArray[np.int16]
UInt8Array = npt.NDArray[np.uint8]

# HJ 212-2017 data flags, in code order. Code 0 (N) is the only "normal" flag.
HJ212_FLAGS: tuple[str, ...] = ("N", "F", "M", "S", "D", "C", "T", "B")
FLAG_CODE: Mapping[str, int] = {flag: code for code, flag in enumerate(HJ212_FLAGS)}
FLAG_NORMAL = 0


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """One micro-batch of readings of a single sensor kind, columnar."""

    sensor_idx: Int32Array  # dense index from SensorIndex, shape (n,)
    reading_idx: Int32Array  # rows of one reading share it; 0..n_readings-1
    event_time_ms: IntArray
    quantity_idx: Int16Array  # index into the kind's quantity list (topology order)
    value: FloatArray  # always finite (the decoder dead-letters the rest)
    flag: UInt8Array  # HJ 212 flag code per row (copied from its reading)
    # the Kafka partition each row came from (None: all from one, as in tests and benchmarks);
    # event-time clocks are kept per partition (detectors/watermark.py)
    partition: Int16Array | None = None
    # partitions of this worker that delivered nothing for a while (streams/idle.py): their
    # clock may follow the others' (Flink's idleness), so a silent partition is noticed
    idle_partitions: tuple[int, ...] = ()

    def __len__(self) -> int:
        return int(self.value.shape[0])

    @classmethod
    def empty(cls) -> ReadingBatch:
        return cls(
            sensor_idx=np.zeros(0, np.int32),
            reading_idx=np.zeros(0, np.int32),
            event_time_ms=np.zeros(0, np.int64),
            quantity_idx=np.zeros(0, np.int16),
            value=np.zeros(0, np.float64),
            flag=np.zeros(0, np.uint8),
        )

    def take(self, rows: npt.NDArray[np.integer]) -> ReadingBatch:
        """The sub-batch of ``rows`` (indices or a boolean mask)."""
        return ReadingBatch(
            sensor_idx=self.sensor_idx[rows],
            reading_idx=self.reading_idx[rows],
            event_time_ms=self.event_time_ms[rows],
            quantity_idx=self.quantity_idx[rows],
            value=self.value[rows],
            flag=self.flag[rows],
            partition=None if self.partition is None else self.partition[rows],
            idle_partitions=self.idle_partitions,
        )

    def partitions(self) -> Int16Array:
        """The partition of every row (zeros when the batch does not say)."""
        if self.partition is None:
            return np.zeros(len(self), np.int16)
        return self.partition


@dataclass(frozen=True, slots=True)
class Scores:
    """What a detector says about a batch.

    ``rows`` index into the batch the detector was given; ``score`` is what the
    route thresholds compare against (an AQI, a %LEL, a z-score, 0..1...);
    ``measure`` names it in alarms ("aqi", "gas_lel", "hj212_flag").

    A detector may also speak about sensors that sent nothing (``no_signal``):
    such entries have row -1 and carry their own ``sensor_idx`` and
    ``event_time_ms``; otherwise both are None and come from the batch rows.
    """

    rows: IntArray
    score: FloatArray
    measure: str
    sensor_idx: Int32Array | None = None
    event_time_ms: IntArray | None = None

    @classmethod
    def none(cls, measure: str) -> Scores:
        return cls(rows=np.zeros(0, np.int64), score=np.zeros(0, np.float64), measure=measure)

    def sensors_and_times(self, batch: ReadingBatch) -> tuple[Int32Array, IntArray]:
        """Sensor index and event time of every entry."""
        if self.sensor_idx is not None and self.event_time_ms is not None:
            return self.sensor_idx, self.event_time_ms
        return batch.sensor_idx[self.rows], batch.event_time_ms[self.rows]


@dataclass(frozen=True, slots=True)
class DetectorContext:
    """What a detector may know about the world besides the batch.

    Sensor metadata is in dense-index order for the catalog's sensors; sensors
    first seen at runtime have no metadata (their index is past these tuples).
    """

    quantities: tuple[str, ...]  # the kind's quantity catalog, in quantity_idx order
    quantity_ranges: tuple[tuple[float, float], ...] = ()  # physical (min, max) per quantity
    expected_period_s: float = 60.0  # how often a sensor of this kind reports
    utc_offset_s: int = 8 * 3600  # the city's clock, for hour-of-day profiles
    sensor_ids: tuple[str, ...] = ()
    site_ids: tuple[str, ...] = ()
    site_names: tuple[str, ...] = ()
    limits: tuple[Mapping[str, float], ...] = field(default=())
    # the input partition each catalog sensor's key hashes to (Kafka's default partitioner),
    # so a sensor never heard is judged by the clock of the partition that would carry it
    sensor_partitions: tuple[int, ...] = ()


class Detector(Protocol):
    """A vectorized, stateful detector: a whole batch in, one score per selected row out.

    Implementations never loop over rows in Python, never read the wall clock,
    never mutate the batch, and never return NaN. Per-sensor state lives in
    numpy arrays indexed by ``sensor_idx``; scores do not depend on how the
    stream is cut into batches.
    """

    def score_and_update(self, batch: ReadingBatch) -> Scores: ...

    def resize(self, n_sensors: int) -> None:
        """Make room for sensor indices below ``n_sensors`` (new sensors at runtime)."""

    def snapshot(self, sensors: IntArray | None = None) -> dict[str, npt.NDArray[np.generic]]:
        """Copies of the state, of all sensors or of ``sensors`` (first axis follows it)."""

    def restore(self, arrays: Mapping[str, npt.NDArray[np.generic]], sensors: IntArray | None = None) -> None:
        """Load what ``snapshot`` gave; ValueError when it does not fit this detector."""

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        """Extra parameter sets for the contract suite."""


class Stateless:
    """For detectors whose score depends on the reading alone: nothing to keep."""

    def resize(self, n_sensors: int) -> None:
        return None

    def snapshot(self, sensors: IntArray | None = None) -> dict[str, npt.NDArray[np.generic]]:
        return {}

    def restore(self, arrays: Mapping[str, npt.NDArray[np.generic]], sensors: IntArray | None = None) -> None:
        if arrays:
            msg = f"snapshot arrays do not match: unexpected {sorted(arrays)}"
            raise ValueError(msg)

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield from ()
