"""``idle_in_hours``: consumption collapsing during working hours.

A plant's meter reading (near) zero at 10:00 on a weekday means a stopped plant,
a bypassed or failed meter, or theft. Per sensor the detector learns the usual
working-hours level (an EWMA of the value, working hours only); during working
hours, once ``warmup`` readings were learned, score = ``1 - value / level``
clipped to 0..1 (1 = nothing consumed). Outside working hours the score is 0 and
nothing is learned.

Working hours come from event time and the city's clock
(``context.utc_offset_s``): local hour in [start_hour, end_hour) on the given
weekdays (0 = Monday). With ``protect`` (the default) a reading scoring at or
above ``protect_above`` is not learned from, so a plant that stays idle does not
drag its own baseline down and clear its alarm.

Cost: the protected EWMA is a nonlinear recursion, so readings are stepped round
by round; readings outside working hours (score 0, nothing learned) are set
aside once per batch and never enter a round.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_fraction, check_int_at_least, floats, ints
from detectors.rounds import RoundPlan
from detectors.series import Series, SeriesDetector
from detectors.state import Field

EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


class WorkingHoursIdle(SeriesDetector):
    """1 - value / learned working-hours level, during working hours only."""

    measure: ClassVar[str] = "idle_fraction"
    anomaly: ClassVar[str] = "none"
    exact_scan: ClassVar[bool] = True

    def __init__(
        self,
        context: DetectorContext,
        *,
        quantity: str,
        start_hour: int = 9,
        end_hour: int = 17,
        weekdays: Sequence[int] = (0, 1, 2, 3, 4, 5),
        alpha: float = 0.05,
        warmup: int = 10,
        protect: bool = True,
        protect_above: float = 0.5,
    ) -> None:
        check_int_at_least("start_hour", start_hour, 0)
        check_int_at_least("end_hour", end_hour, start_hour + 1)
        if end_hour > 24:
            msg = f"end_hour: must be an int in {start_hour + 1}..24, got {end_hour!r}"
            raise ValueError(msg)
        days = list(weekdays)
        if not days or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 6 for d in days):
            msg = f"weekdays: must be a non-empty list of ints 0..6 (0 = Monday), got {weekdays!r}"
            raise ValueError(msg)
        check_fraction("alpha", alpha)
        check_int_at_least("warmup", warmup, 1)
        check_fraction("protect_above", protect_above)
        self.start_hour, self.end_hour = start_hour, end_hour
        self._day_on = np.zeros(7, bool)
        self._day_on[days] = True
        self.alpha, self.warmup = float(alpha), warmup
        self.protect, self.protect_above = bool(protect), float(protect_above)
        super().__init__(context, quantity=quantity)
        self.resize(len(context.sensor_ids))  # catalog sensors: snapshot(sensors) may name any

    def state_fields(self) -> Mapping[str, Field]:
        return {"level": Field(np.float64, 0.0), "n": Field(np.int64, 0)}

    def working(self, event_ms: IntArray) -> np.ndarray:
        local_s = event_ms // 1000 + self.context.utc_offset_s
        hour = (local_s % 86_400) // 3600
        weekday = (local_s // 86_400 + EPOCH_WEEKDAY) % 7
        out: np.ndarray = self._day_on[weekday] & (hour >= self.start_hour) & (hour < self.end_hour)
        return out

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        on = self.working(event_ms)
        score = np.zeros(sensor.shape[0], np.float64)
        score[on] = self._learn(sensor[on], value[on])
        return score

    def scan(self, series: Series) -> FloatArray:
        """Working-hours readings round by round (``_learn``); the others score 0."""
        on = self.working(series.event_ms)
        score = np.zeros(on.shape[0], np.float64)
        if not on.any():
            return score
        if on.all():
            sub = series
        else:
            sub = Series(series.sensor[on], series.event_ms[on], series.value[on], series.segments.subset(on))
        plan = series.plan() if sub is series else RoundPlan.of(sub.segments)
        sensor = sub.head_sensor()[plan.perm].astype(np.int64)  # by place
        level, n = floats(self.state["level"]), ints(self.state["n"])
        base, count = level[sensor], n[sensor]  # compact: round k updates a prefix in place
        v = np.ascontiguousarray(plan.to_rounds(sub.value), np.float64)
        out = np.empty(v.shape[0], np.float64)
        b, c = plan.bounds, plan.counts
        for k in range(len(c)):
            lo, width = b[k], c[k]
            out[lo : lo + width] = self._fold(base[:width], count[:width], v[lo : lo + width])
        level[sensor], n[sensor] = base, count
        score[on] = plan.to_grouped(out)
        return score

    def _learn(self, sensor: Int32Array, value: FloatArray) -> FloatArray:
        """Score working-hours readings of distinct sensors and fold them in."""
        level, n = floats(self.state["level"]), ints(self.state["n"])
        base, count = level[sensor], n[sensor]
        score = self._fold(base, count, value)
        level[sensor], n[sensor] = base, count
        return score

    def _fold(self, level: FloatArray, n: IntArray, value: FloatArray) -> FloatArray:
        """Score readings of distinct sensors against their ``level``/``n`` and fold them
        in (both updated in place)."""
        ready = (n >= self.warmup) & (level > 0)
        score: FloatArray = np.where(ready, np.clip(1.0 - value / np.where(ready, level, 1.0), 0.0, 1.0), 0.0)
        learn = ~(self.protect & (score >= self.protect_above))
        weight = np.maximum(self.alpha, 1.0 / (n + 1.0))  # a plain mean while warming up
        np.copyto(level, level + weight * (value - level), where=learn)
        n += learn
        return score

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value", "start_hour": 0, "end_hour": 24, "weekdays": [0, 1, 2, 3, 4, 5, 6], "warmup": 5}
