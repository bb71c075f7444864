"""``rate_of_change``: how abrupt a reading's change is, against the sensor's usual rate.

rate = (x - previous x) / (seconds since the previous reading), so irregular
reporting does not fake a spike. The score is |rate| / (EWMA RMS of past rates),
weight max(alpha, 1/n). The first ``warmup`` rates of a sensor score 0.

Cost: rates need only the previous reading, so ``scan`` computes them for the whole
batch at once and runs only the EWMA of squared rates round by round
(``detectors.recursions``), bit for bit what ``step`` computes one round at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_at_least, check_below_one, floats, ints
from detectors.recursions import ewma_before, mean_after
from detectors.series import Series, SeriesDetector
from detectors.state import NEVER_MS, Field
from detectors.stats import scale


class RateOfChange(SeriesDetector):
    """|dx/dt| in units of the sensor's EWMA RMS rate."""

    measure: ClassVar[str] = "rate_of_change"
    anomaly: ClassVar[str] = "spike"
    exact_scan: ClassVar[bool] = True
    scan_min_rounds: ClassVar[int] = 2

    def __init__(self, context: DetectorContext, *, quantity: str, alpha: float = 0.05, warmup: int = 10) -> None:
        check_below_one("alpha", alpha)
        check_at_least("warmup", warmup, 1)
        self.alpha, self.warmup = alpha, int(warmup)
        super().__init__(context, quantity=quantity)

    def state_fields(self) -> Mapping[str, Field]:
        # n counts rates (readings after the first); prev is the previous value
        return {"n": Field(np.int64, -1), "prev": Field(np.float64, 0.0), "rate_sq": Field(np.float64, 0.0)}

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value"}
        yield {"quantity": "value", "alpha": 0.5, "warmup": 1}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        n = ints(self.state["n"])[sensor] + 1  # 0 for a sensor's first reading
        last_ms = self._previous_ms(sensor)
        dt_s = np.maximum((event_ms - last_ms) / 1000.0, 1e-3)
        prev, rate_sq = floats(self.state["prev"])[sensor], floats(self.state["rate_sq"])[sensor]
        rate = np.where(n > 0, (value - prev) / dt_s, 0.0)
        score: FloatArray = np.where(n > self.warmup, np.abs(rate) / scale(rate_sq, rate), 0.0)
        weight = np.where(n > 0, np.maximum(self.alpha, 1.0 / np.maximum(n, 1)), 0.0)
        floats(self.state["rate_sq"])[sensor] = rate_sq + weight * (rate * rate - rate_sq)
        floats(self.state["prev"])[sensor] = value
        ints(self.state["n"])[sensor] = n
        return score

    def _previous_ms(self, sensor: Int32Array) -> IntArray:
        """The base's ``last_ms`` (updated after ``step``), i.e. the previous reading's time."""
        last = ints(self.state["last_ms"])[sensor]
        out: IntArray = np.where(last == NEVER_MS, 0, last)  # first reading: no previous time
        return out

    def scan(self, series: Series) -> FloatArray:
        plan, g = series.plan(), series.segments
        counts, prevs, squares = ints(self.state["n"]), floats(self.state["prev"]), floats(self.state["rate_sq"])
        heads = series.head_sensor()
        sensor = heads[plan.perm]  # per place of a round
        n0 = counts[heads]
        n = n0[g.seg] + g.rank + 1  # 0 for a sensor's first reading
        t, value = series.event_ms, series.value
        last_ms = np.empty_like(t)
        last_ms[1:] = t[:-1]
        last_ms[g.head] = self._previous_ms(heads)
        prev = np.empty_like(value)
        prev[1:] = value[:-1]
        prev[g.head] = prevs[heads]
        dt_s = np.maximum((t - last_ms) / 1000.0, 1e-3)
        rate = np.where(n > 0, (value - prev) / dt_s, 0.0)
        weight = np.where(n > 0, np.maximum(self.alpha, 1.0 / np.maximum(n, 1)), 0.0)
        sq_r, w_r = plan.to_rounds(rate * rate), plan.to_rounds(weight)
        before_r, _ = ewma_before(plan, sq_r, w_r, squares[sensor])
        last = plan.last
        squares[sensor] = mean_after(before_r[last], sq_r[last], w_r[last])
        prevs[heads] = value[g.tail]
        counts[heads] = n[g.tail]
        rate_sq = plan.to_grouped(before_r)
        score: FloatArray = np.where(n > self.warmup, np.abs(rate) / scale(rate_sq, rate), 0.0)
        return score
