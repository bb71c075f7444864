"""Shared code of per-sensor streaming detectors over one quantity.

A subclass declares its per-sensor state (``state_fields``) and one vectorized
step: given distinct sensors and one reading each, score the readings against
the state, then fold them in. This base selects the quantity's normal-flag
rows, drops late readings, and steps the rest round by round
(``detectors.rounds``), which makes scores independent of batch boundaries.
A subclass whose recursion is exact as a segmented scan over the whole batch
(integer counters, comparisons with the previous value, functions of a window
of past readings) sets ``exact_scan`` and implements ``scan`` instead: one call
per batch, however many readings per sensor it holds.

Late readings: a reading whose event time is not newer than the last reading
the detector learned from for that sensor (out of order, or a duplicate) is
not learned from and scores 0. Replaying a stream reproduces this exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray, ReadingBatch, Scores
from detectors.rounds import Segments, distinct, group_by_sensor, newest_before, rounds
from detectors.views import Series as Series
from detectors.views import views
from detectors.state import NEVER_MS, Field, SensorState, StateBacked


class SeriesDetector(StateBacked, ABC):
    """One quantity per sensor, in arrival order; subclasses implement ``step``."""

    #: name of the score in alarms, e.g. "ewma_z"; subclasses set it
    measure: ClassVar[str]
    #: True when ``scan`` computes what ``step`` would, round by round, bit for bit
    exact_scan: ClassVar[bool] = False
    #: with fewer rounds than this, stepping is cheaper than a scan's fixed cost (both give
    #: the same scores; see ``exact_scan``)
    scan_min_rounds: ClassVar[int] = 1

    def __init__(self, context: DetectorContext, *, quantity: str) -> None:
        if quantity not in context.quantities:
            msg = f"quantity: {quantity!r} is not in this kind's catalog; valid: {list(context.quantities)}"
            raise ValueError(msg)
        self.context = context
        self.quantity = quantity
        self._quantity_idx = context.quantities.index(quantity)
        self.state = SensorState({"last_ms": Field(np.int64, NEVER_MS), **self.state_fields()})
        self.n_late = 0  # readings not learned from because they were late

    # -- what a subclass provides -------------------------------------------------
    @abstractmethod
    def state_fields(self) -> Mapping[str, Field]:
        """Per-sensor arrays this detector keeps (``last_ms`` is added by the base)."""

    @abstractmethod
    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        """Score one reading per sensor (``sensor`` distinct) and fold it into the state."""

    def scan(self, series: Series) -> FloatArray:
        """Score every reading of ``series`` and fold them into the state, in one call
        (only with ``exact_scan``). The base updates ``last_ms`` afterwards."""
        msg = f"{type(self).__name__} has no scan; it steps round by round"
        raise NotImplementedError(msg)

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        """Parameter sets the contract suite runs (besides those in topology.yaml)."""
        yield {}

    # -- the Detector protocol ---------------------------------------------------------
    def score_and_update(self, batch: ReadingBatch) -> Scores:
        shared = views(batch)
        if len(batch):  # every sensor of the batch gets state (a checkpoint may ask for any of them)
            self.resize(shared.n_sensors())
        rows = shared.quantity_rows(self._quantity_idx)
        if rows.shape[0] == 0:
            return Scores(rows=rows, score=np.zeros(0, np.float64), measure=self.measure)
        found = shared.quantity_series(self._quantity_idx)
        if found.grouped is None and found.ordered:
            # the decoder's layout, every sensor's rows in rising event time: the batch's shared
            # series is the detector's as soon as each sensor's first row is fresh
            series = found.series
            heads = series.head_sensor()
            last = self.state["last_ms"]
            t = series.event_ms
            if bool(np.all(t[series.segments.head] > last[heads])):
                score: FloatArray = self._scan_or_step(series)
                last[heads] = t[series.segments.tail]
                return Scores(rows=rows, score=score, measure=self.measure)
        score = self.step_rounds(batch.sensor_idx[rows], batch.event_time_ms[rows], batch.value[rows])
        return Scores(rows=rows, score=score, measure=self.measure)

    def select(self, batch: ReadingBatch) -> IntArray:
        """The rows this detector scores: its quantity, HJ 212 flag N (read-only, shared)."""
        return views(batch).quantity_rows(self._quantity_idx)

    def step_rounds(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        """Scores of the rows (0 for late ones), folding the fresh ones in, per sensor in row order."""
        n = sensor.shape[0]
        if n == 0:
            return np.zeros(0, np.float64)
        last = self.state["last_ms"]
        if bool(np.all(sensor[1:] > sensor[:-1])):  # the usual batch: every sensor once, in order
            seed = last[sensor]
            if bool(np.all(event_ms > seed)):
                series = Series(sensor, event_ms, value, distinct(n))
                score: FloatArray = self._scan_or_step(series)
                last[sensor] = event_ms
                return score
        out = np.zeros(n, np.float64)
        g = group_by_sensor(sensor)
        identity = bool(g.order[-1] == n - 1) and bool(np.all(g.order[1:] > g.order[:-1]))
        s, t, v = (sensor, event_ms, value) if identity else (sensor[g.order], event_ms[g.order], value[g.order])
        seed = last[s[g.head]]
        fresh = self._fresh(t, g, seed)
        if fresh is not None:
            self.n_late += int(n - np.count_nonzero(fresh))
            g = g.subset(fresh)
            s, t, v = s[fresh], t[fresh], v[fresh]
            if s.shape[0] == 0:
                return out
        series = Series(s, t, v, g)
        score = self._scan_or_step(series)
        tail = g.tail
        last[s[tail]] = t[tail]
        out[g.order] = score
        return out

    def _scan_or_step(self, series: Series) -> FloatArray:
        if self.exact_scan and (self.scan_min_rounds <= 1 or series.plan().n_rounds >= self.scan_min_rounds):
            return self.scan(series)
        return self.step_by_round(series)

    @staticmethod
    def _fresh(t: IntArray, g: Segments, seed: IntArray) -> npt.NDArray[np.bool_] | None:
        """Rows newer than their sensor's earlier ones (None: all of them, the usual case)."""
        later = t[1:] > t[:-1]
        later[g.head[1:] - 1] = True
        if bool(later.all()) and bool(np.all(t[g.head] > seed)):
            return None
        out: npt.NDArray[np.bool_] = t > newest_before(t, g, seed)
        return out

    def step_by_round(self, series: Series) -> FloatArray:
        """``step`` round by round (each sensor's k-th reading in round k)."""
        by_rank, bounds = rounds(series.segments)
        if len(bounds) == 1:
            score: FloatArray = self.step(series.sensor, series.event_ms, series.value)
            return score
        s, t, v = series.sensor[by_rank], series.event_ms[by_rank], series.value[by_rank]
        out = np.empty(s.shape[0], np.float64)
        last = self.state["last_ms"]
        for lo, hi in bounds:  # round k: every sensor's k-th reading, a contiguous slice
            out[lo:hi] = self.step(s[lo:hi], t[lo:hi], v[lo:hi])
            last[s[lo:hi]] = t[lo:hi]  # steps may read the previous reading's time
        back = np.empty_like(out)
        back[by_rank] = out
        return back
