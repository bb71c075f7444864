"""``ewma_z``: |z| of each reading against the sensor's EWMA mean and variance.

mean and variance are exponentially weighted (West 1979) with weight
max(alpha, 1/n), so the first readings form a plain running mean. The reading
is scored against the state before it is folded in; the first ``warmup``
readings of a sensor score 0.

Cost: ``scan`` runs only the EWMA itself round by round (``detectors.recursions``)
and scores every row at once from the states before them, bit for bit what
``step`` computes one round at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_at_least, check_below_one, floats, ints
from detectors.recursions import ewma_after, ewma_before
from detectors.rounds import RoundPlan
from detectors.series import Series, SeriesDetector
from detectors.state import Field, SensorState
from detectors.stats import ewma_fold, scale


class EwmaZScore(SeriesDetector):
    """|x - EWMA mean| / EWMA std per sensor."""

    measure: ClassVar[str] = "ewma_z"
    anomaly: ClassVar[str] = "spike"
    exact_scan: ClassVar[bool] = True
    scan_min_rounds: ClassVar[int] = 2

    def __init__(self, context: DetectorContext, *, quantity: str, alpha: float = 0.05, warmup: int = 30) -> None:
        check_below_one("alpha", alpha)
        check_at_least("warmup", warmup, 2)
        self.alpha, self.warmup = alpha, int(warmup)
        super().__init__(context, quantity=quantity)

    def state_fields(self) -> Mapping[str, Field]:
        return {"n": Field(np.int64, 0), "mean": Field(np.float64, 0.0), "var": Field(np.float64, 0.0)}

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value"}
        yield {"quantity": "value", "alpha": 0.3, "warmup": 2}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        n = ints(self.state["n"])[sensor] + 1
        mean, var = floats(self.state["mean"])[sensor], floats(self.state["var"])[sensor]
        z: FloatArray = np.where(n > self.warmup, np.abs(value - mean) / scale(var, mean), 0.0)
        mean, var = ewma_fold(mean, var, value, np.maximum(self.alpha, 1.0 / n))
        floats(self.state["mean"])[sensor], floats(self.state["var"])[sensor] = mean, var
        ints(self.state["n"])[sensor] = n
        return z

    def scan(self, series: Series) -> FloatArray:
        run = EwmaRounds.of(series, self.state, self.alpha)
        run.save()
        plan = run.plan
        mean, var = plan.to_grouped(run.mean_r), plan.to_grouped(run.var_r)
        z: FloatArray = np.where(run.n > self.warmup, np.abs(series.value - mean) / scale(var, mean), 0.0)
        return z


@dataclass(frozen=True, slots=True)
class EwmaRounds:
    """A batch's EWMA mean and variance before each reading, round by round, from the
    per-sensor state fields n/mean/var (shared by ewma_z and cusum)."""

    plan: RoundPlan
    state: SensorState
    sensor: Int32Array  # per place of a round
    n0: IntArray  # per segment: readings seen before the batch
    n: IntArray  # per row (grouped): readings seen up to and including it
    sizes: IntArray  # per place of a round: the segment's readings in this batch
    x_r: FloatArray  # round-major rows: value, weight, 1 - weight, mean and variance before the row
    w_r: FloatArray
    omw_r: FloatArray
    mean_r: FloatArray
    var_r: FloatArray

    @classmethod
    def of(cls, series: Series, state: SensorState, alpha: float) -> EwmaRounds:
        plan, g = series.plan(), series.segments
        counts, means, variances = ints(state["n"]), floats(state["mean"]), floats(state["var"])
        sensor = series.head_sensor()[plan.perm]
        n0 = counts[series.head_sensor()]
        n = n0[g.seg] + g.rank + 1
        w = np.maximum(alpha, 1.0 / n)
        x_r, w_r, omw_r = plan.to_rounds(series.value), plan.to_rounds(w), plan.to_rounds(1.0 - w)
        mean_r, var_r = ewma_before(plan, x_r, w_r, means[sensor], variances[sensor], omw_r)
        assert var_r is not None
        return cls(plan, state, sensor, n0, n, g.size[plan.perm], x_r, w_r, omw_r, mean_r, var_r)

    def save(self) -> None:
        """The state after the batch: each sensor's mean and variance after its last row."""
        plan, last, sensor = self.plan, self.plan.last, self.sensor
        floats(self.state["mean"])[sensor], floats(self.state["var"])[sensor] = ewma_after(
            self.mean_r[last], self.var_r[last], self.x_r[last], self.w_r[last], self.omw_r[last])
        ints(self.state["n"])[sensor] = self.n0[plan.perm] + self.sizes


