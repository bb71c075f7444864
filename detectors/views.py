"""Views of one batch that several detectors and routes need, computed once per batch.

A kind's detectors all score the same batch, and many of them start the same way:
the normal-flag rows of one quantity (``gas_lel`` feeds four detectors), those rows
grouped by sensor, the rounds of that grouping, the readings of the batch. ``views``
hands every caller the same :class:`BatchViews` for the same batch object, which
computes each of these on first use and keeps it for the others.

Everything here is derived from the batch alone (never from detector state), and
the arrays handed out are read-only, so a view is the same whoever asks first and
whatever the caller does with it. The cache holds the most recent batch only; a
batch is immutable (``ReadingBatch`` is frozen, and no detector mutates its
arrays), so the identity check is all the validation needed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.arrays import run_ends, run_starts
from detectors.base import FLAG_NORMAL, FloatArray, Int32Array, IntArray, ReadingBatch
from detectors.readings import Readings, reading_runs
from detectors.rounds import RoundPlan, Segments, distinct, segments_of

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Series:
    """A batch's fresh readings of one quantity, grouped by sensor (each in arrival order).

    ``plan()`` gives the rounds of the grouping (``detectors.rounds.RoundPlan``),
    computed once however many detectors step the same series."""

    sensor: Int32Array
    event_ms: IntArray
    value: FloatArray
    segments: Segments  # segment k = the rows of sensor ``sensor[segments.head[k]]``
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def plan(self) -> RoundPlan:
        plan = self._cache.get("plan")
        if plan is None:
            plan = self._cache["plan"] = RoundPlan.of(self.segments)
        out: RoundPlan = plan
        return out

    def head_sensor(self) -> Int32Array:
        """The sensor of each segment."""
        out = self._cache.get("head_sensor")
        if out is None:
            out = self._cache["head_sensor"] = self.sensor[self.segments.head]
        result: Int32Array = out
        return result


@dataclass(frozen=True, slots=True)
class QuantitySeries:
    """The normal-flag rows of one quantity, grouped by sensor, as the batch holds them.

    ``ordered``: every segment's event times strictly rise (then a detector only has to
    compare each segment's first event time with its own state to know all rows are fresh).
    """

    rows: IntArray  # rows of the batch, ascending
    grouped: IntArray | None  # rows in grouped order (None: ``rows`` already is, the decoder's layout)
    series: Series
    ordered: bool


def _readonly(*arrays: npt.NDArray[Any]) -> None:
    for a in arrays:
        a.flags.writeable = False


class BatchViews:
    """Lazily computed, shared, read-only views of one batch (see the module docstring)."""

    __slots__ = ("batch", "_quantity_rows", "_series", "_readings", "_runs", "_row_groups", "_first_rows", "_n_sensors")

    def __init__(self, batch: ReadingBatch) -> None:
        self.batch = batch
        self._quantity_rows: dict[int, IntArray] = {}
        self._series: dict[int, QuantitySeries] = {}
        self._readings: Readings | None = None
        self._runs: tuple[IntArray | None] | None = None
        self._row_groups: dict[int, tuple[IntArray, RowGroups]] = {}
        self._first_rows: IntArray | None = None
        self._n_sensors = -1

    def n_sensors(self) -> int:
        """1 + the largest sensor index of the batch (0 when empty)."""
        if self._n_sensors < 0:
            self._n_sensors = int(self.batch.sensor_idx.max()) + 1 if len(self.batch) else 0
        return self._n_sensors

    def quantity_rows(self, quantity_idx: int) -> IntArray:
        """Rows of quantity ``quantity_idx`` whose HJ 212 flag is N, ascending (read-only)."""
        rows = self._quantity_rows.get(quantity_idx)
        if rows is None:
            b = self.batch
            mask = b.quantity_idx == quantity_idx
            mask &= b.flag == FLAG_NORMAL
            rows = np.flatnonzero(mask)
            if rows.dtype != np.int64:
                rows = rows.astype(np.int64)
            _readonly(rows)
            self._quantity_rows[quantity_idx] = rows
        return rows

    def quantity_series(self, quantity_idx: int) -> QuantitySeries:
        """The rows of ``quantity_rows`` grouped by sensor, each sensor's in row order."""
        found = self._series.get(quantity_idx)
        if found is not None:
            return found
        b = self.batch
        rows = self.quantity_rows(quantity_idx)
        sensor, t, value = b.sensor_idx[rows], b.event_time_ms[rows], b.value[rows]
        n = rows.shape[0]
        grouped: IntArray | None = None
        if n > 1 and not bool(np.all(sensor[1:] >= sensor[:-1])):
            order = np.argsort(sensor, kind="stable").astype(np.int64)
            grouped = rows[order]
            sensor, t, value = sensor[order], t[order], value[order]
        if n == 0:
            g = distinct(0)
            ordered = True
        else:
            new = sensor[1:] != sensor[:-1]
            if bool(new.all()):
                g = distinct(n)
                ordered = True
            else:
                g = segments_of(np.arange(n, dtype=np.int64), sensor)
                later = t[1:] > t[:-1]
                later |= new
                ordered = bool(later.all())
        _readonly(sensor, t, value)
        found = QuantitySeries(rows, grouped, Series(sensor, t, value, g), ordered)
        self._series[quantity_idx] = found
        return found

    def readings(self) -> Readings:
        if self._readings is None:
            found = Readings.of(self.batch)
            _readonly(found.row, found.of_row, found.row_sorted)
            self._readings = found
        return self._readings

    def reading_starts(self) -> IntArray | None:
        """``detectors.readings.reading_runs`` of the batch (None: not the decoder's layout)."""
        if self._runs is None:
            self._runs = (reading_runs(self.batch) if len(self.batch) else None,)
        return self._runs[0]

    def first_rows(self) -> IntArray:
        """The first row of every reading, ascending."""
        if self._first_rows is None:
            starts = self.reading_starts()
            rows = starts if starts is not None else self.readings().row_sorted
            rows = rows.astype(np.int64, copy=True)
            _readonly(rows)
            self._first_rows = rows
        return self._first_rows

    def row_groups(self, rows: IntArray) -> RowGroups:
        """``RowGroups`` of the batch rows ``rows`` (the same array object gives the same groups)."""
        key = id(rows)
        hit = self._row_groups.get(key)
        if hit is not None and hit[0] is rows:
            return hit[1]
        groups = RowGroups.of(self.batch.sensor_idx[rows], self.batch.event_time_ms[rows])
        self._row_groups[key] = (rows, groups)
        return groups


@dataclass(frozen=True, slots=True)
class RowGroups:
    """Some rows' sensors (as given) and event times, and whether they come grouped by
    sensor with rising event times; if so, where each sensor's run starts and ends."""

    sensor: Int32Array
    event_ms: IntArray
    starts: IntArray | None  # None: the sensors are not grouped (ascending)
    ends: IntArray | None
    ordered: bool  # grouped, and event times strictly rise within each sensor's run

    @classmethod
    def of(cls, sensor: Int32Array, event_ms: IntArray) -> RowGroups:
        n = sensor.shape[0]
        if n == 0:
            empty = np.zeros(0, np.int64)
            return cls(sensor, event_ms, empty, empty, True)
        step = sensor[1:] != sensor[:-1]
        if not bool(np.all(sensor[1:] >= sensor[:-1])):
            return cls(sensor, event_ms, None, None, False)
        starts = run_starts(sensor)
        ends = run_ends(starts, n)
        later = event_ms[1:] > event_ms[:-1]
        later |= step
        return cls(sensor, event_ms, starts, ends, bool(later.all()))


_lock = threading.Lock()
_last: list[BatchViews | None] = [None]


def views(batch: ReadingBatch) -> BatchViews:
    """The shared views of ``batch`` (the same object for the same batch, until another
    batch is asked about)."""
    found = _last[0]
    if found is not None and found.batch is batch:
        return found
    with _lock:
        found = BatchViews(batch)
        _last[0] = found
    return found
