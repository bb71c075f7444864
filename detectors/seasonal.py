"""``seasonal``: |z| against an hour-of-week profile learned online per sensor.

Each sensor keeps an EWMA mean and variance per slot: hour of day x weekday
(168 slots; 24 with ``weekly=False``), in the city's local time
(``context.utc_offset_s``) and by event time only. A reading is scored against
its own slot, so the usual 8 o'clock rush is normal at 8:00 and anomalous at
3:00. Slot weights are max(alpha, 1/n_slot); a slot scores 0 until it has seen
``warmup`` readings.

Cost: a slot's recursion sees only its own readings, so ``scan`` groups the batch by
(sensor, slot) and runs only the EWMA round by round (``detectors.recursions``),
scoring every row at once from the states before them: bit for bit what ``step``
computes one round at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_at_least, check_below_one, floats, ints
from detectors.recursions import ewma_after, ewma_before
from detectors.rounds import RoundPlan, group_by_sensor
from detectors.series import Series, SeriesDetector
from detectors.state import Field
from detectors.stats import ewma_fold, scale

MS_PER_HOUR = 3_600_000
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def hour_of_week(event_ms: IntArray, utc_offset_s: int, weekly: bool = True) -> IntArray:
    """Slot of each event time: weekday * 24 + local hour (Monday 0:00 = 0), or the hour alone."""
    hours = (event_ms + utc_offset_s * 1000) // MS_PER_HOUR
    if not weekly:
        return hours % 24
    out: IntArray = (hours + EPOCH_WEEKDAY * 24) % 168
    return out


class SeasonalBaseline(SeriesDetector):
    """|x - slot mean| / slot std, slot = local hour of the week (or of the day)."""

    measure: ClassVar[str] = "seasonal_z"
    anomaly: ClassVar[str] = "spike"
    exact_scan: ClassVar[bool] = True
    scan_min_rounds: ClassVar[int] = 2

    def __init__(
        self, context: DetectorContext, *, quantity: str, alpha: float = 0.1, warmup: int = 10, weekly: bool = True
    ) -> None:
        check_below_one("alpha", alpha)
        check_at_least("warmup", warmup, 2)
        if not isinstance(weekly, bool):
            msg = f"weekly: {weekly!r} is not a boolean; valid: true, false"
            raise ValueError(msg)
        self.alpha, self.warmup, self.weekly = alpha, int(warmup), weekly
        self.n_slots = 168 if weekly else 24
        super().__init__(context, quantity=quantity)

    def state_fields(self) -> Mapping[str, Field]:
        shape = (self.n_slots,)
        return {"n": Field(np.int64, 0, shape), "mean": Field(np.float64, 0.0, shape), "var": Field(np.float64, 0.0, shape)}

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value"}
        yield {"quantity": "value", "alpha": 0.5, "warmup": 2, "weekly": False}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        slot = hour_of_week(event_ms, self.context.utc_offset_s, self.weekly)
        counts, means, variances = ints(self.state["n"]), floats(self.state["mean"]), floats(self.state["var"])
        n = counts[sensor, slot] + 1
        mean, var = means[sensor, slot], variances[sensor, slot]
        z: FloatArray = np.where(n > self.warmup, np.abs(value - mean) / scale(var, mean), 0.0)
        means[sensor, slot], variances[sensor, slot] = ewma_fold(mean, var, value, np.maximum(self.alpha, 1.0 / n))
        counts[sensor, slot] = n
        return z

    def scan(self, series: Series) -> FloatArray:
        slot = hour_of_week(series.event_ms, self.context.utc_offset_s, self.weekly)
        g = series.segments
        cell = series.sensor.astype(np.int64) * self.n_slots + slot  # a recursion per (sensor, slot)
        same = cell[1:] == cell[:-1]
        if bool(np.all(same[g.rank[1:] > 0])):  # one slot per sensor in this batch: the sensor's rounds
            order, plan, head, tail, seg, rank = None, series.plan(), g.head, g.tail, g.seg, g.rank
        else:
            cells = group_by_sensor(cell)
            order, plan, head, tail, seg, rank = (cells.order, RoundPlan.of(cells), cells.head, cells.tail, cells.seg,
                                                  cells.rank)
            cell = cell[order]
        x = series.value if order is None else series.value[order]
        counts, means, variances = (a.reshape(-1) for a in (ints(self.state["n"]), floats(self.state["mean"]),
                                                            floats(self.state["var"])))
        place = cell[head][plan.perm]  # the (sensor, slot) at each place of a round
        n0 = counts[cell[head]]
        n = n0[seg] + rank + 1
        w = np.maximum(self.alpha, 1.0 / n)
        omw = 1.0 - w
        x_r, w_r, omw_r = plan.to_rounds(x), plan.to_rounds(w), plan.to_rounds(omw)
        mean_r, var_r = ewma_before(plan, x_r, w_r, means[place], variances[place], omw_r)
        assert var_r is not None
        last = plan.last
        means[place], variances[place] = ewma_after(mean_r[last], var_r[last], x_r[last], w_r[last], omw_r[last])
        counts[cell[tail]] = n[tail]
        mean, var = plan.to_grouped(mean_r), plan.to_grouped(var_r)
        z: FloatArray = np.where(n > self.warmup, np.abs(x - mean) / scale(var, mean), 0.0)
        if order is None:
            return z
        out = np.empty_like(z)
        out[order] = z
        return out
