"""Shared code of per-sensor streaming detectors over one quantity.

A subclass declares its per-sensor state (``state_fields``) and one vectorized
step: given distinct sensors and one reading each, score the readings against
the state, then fold them in. This base selects the quantity's normal-flag
rows, drops late readings, and steps the rest round by round
(``detectors.rounds``), which makes scores independent of batch boundaries.

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

from detectors.base import FLAG_NORMAL, DetectorContext, FloatArray, Int32Array, IntArray, ReadingBatch, Scores
from detectors.rounds import occurrence_rounds
from detectors.state import NEVER_MS, Field, SensorState


class SeriesDetector(ABC):
    """One quantity per sensor, in arrival order; subclasses implement ``step``."""

    #: name of the score in alarms, e.g. "ewma_z"; subclasses set it
    measure: ClassVar[str]

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

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        """Parameter sets the contract suite runs (besides those in topology.yaml)."""
        yield {}

    # -- the Detector protocol ---------------------------------------------------------
    def score_and_update(self, batch: ReadingBatch) -> Scores:
        if len(batch):  # every sensor of the batch gets state (a checkpoint may ask for any of them)
            self.resize(int(batch.sensor_idx.max()) + 1)
        rows = self.select(batch)
        sensor = batch.sensor_idx[rows]
        score = self.step_rounds(sensor, batch.event_time_ms[rows], batch.value[rows])
        return Scores(rows=rows, score=score, measure=self.measure)

    def select(self, batch: ReadingBatch) -> IntArray:
        """The rows this detector scores: its quantity, HJ 212 flag N."""
        mask = (batch.quantity_idx == self._quantity_idx) & (batch.flag == FLAG_NORMAL)
        return np.flatnonzero(mask).astype(np.int64)

    def step_rounds(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        out = np.zeros(sensor.shape[0], np.float64)
        last = self.state["last_ms"]
        for pos in occurrence_rounds(sensor):
            s, t = sensor[pos], event_ms[pos]
            fresh = t > last[s]
            if not fresh.all():
                self.n_late += int(pos.size - np.count_nonzero(fresh))
                pos, s, t = pos[fresh], s[fresh], t[fresh]
            out[pos] = self.step(s, t, value[pos])
            last[s] = t
        return out

    def resize(self, n_sensors: int) -> None:
        self.state.resize(n_sensors)

    def snapshot(self, sensors: IntArray | None = None) -> dict[str, npt.NDArray[np.generic]]:
        return self.state.snapshot(sensors)

    def restore(self, arrays: Mapping[str, npt.NDArray[np.generic]], sensors: IntArray | None = None) -> None:
        self.state.restore(arrays, sensors)
