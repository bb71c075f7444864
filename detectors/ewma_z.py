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
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_at_least, check_below_one, floats, ints
from detectors.recursions import ewma_after, ewma_before
from detectors.series import Series, SeriesDetector
from detectors.state import Field
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
        plan, g = series.plan(), series.segments
        counts, means, variances = ints(self.state["n"]), floats(self.state["mean"]), floats(self.state["var"])
        sensor = series.head_sensor()[plan.perm]  # per place of a round
        n0 = counts[series.head_sensor()]
        n = n0[g.seg] + g.rank + 1
        w = np.maximum(self.alpha, 1.0 / n)
        omw = 1.0 - w
        x = series.value
        x_r, w_r, omw_r = plan.to_rounds(x), plan.to_rounds(w), plan.to_rounds(omw)
        mean_r, var_r = ewma_before(plan, x_r, w_r, means[sensor], variances[sensor], omw_r)
        assert var_r is not None
        last = plan.last
        means[sensor], variances[sensor] = ewma_after(mean_r[last], var_r[last], x_r[last], w_r[last], omw_r[last])
        counts[sensor] = n0[plan.perm] + g.size[plan.perm]
        mean, var = plan.to_grouped(mean_r), plan.to_grouped(var_r)
        z: FloatArray = np.where(n > self.warmup, np.abs(x - mean) / scale(var, mean), 0.0)
        return z
