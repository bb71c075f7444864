"""``load_profile``: a load far above the meter's own learned profile for this hour.

A plant's power follows its shifts and its week, so "high" means high for *this* hour
of *this* weekday. Each sensor learns three baselines online, all by event time in
the city's local clock (``context.utc_offset_s``):

* hour of the week (168 slots): the profile once a week of history exists;
* hour of the day (24 slots): used while this hour-of-week slot is still cold. It
  mixes weekdays with days off, so it tracks the *upper* level of the hour: it
  rises at the usual weight and sinks at ``protect_weight`` times it, and a quiet
  Sunday does not make Monday's shift start look like a surge;
* the whole history: used while this hour of the day is cold too (the first day).

A reading is scored against the most specific baseline that has seen ``warmup``
readings, and for an hourly profile on at least two different days (weeks for the
hour of the week): one day's first half hour at 7:00 says nothing of 7:30, when a
shift may start. Scores: ``z = (x - mean) / (sd + floor * |mean|)``, positive side only (a drop is
``idle_in_hours``' business). The relative floor makes ``z`` a multiple of the usual
level as well as of its spread, so a quiet, steady meter does not alarm on a 5 % step.
It is ``rel_floor`` against an hourly profile and the larger ``overall_rel_floor``
against the overall baseline: on its first day a meter has not yet shown its shift
pattern, and a plant first seen at night ramps up several-fold at its shift start,
so then only a load of about ``protect_z * overall_rel_floor + 1`` times the usual
level counts (4x with the defaults: the 6x surge of a 200 kW meter does).

Learning is protected: a reading more than ``protect_z`` above its baseline is learned
clipped to that bound and with ``protect_weight`` times the usual weight, and not at
all by a baseline still warming up; its effect on the spread is capped at one scale
(Huber's clipped residuals). An hour-long surge thus cannot teach the profile that it
is normal. A lasting new level is adopted only slowly (over days of its hours), so it
stands as one alarm until an operator acknowledges it or the profile catches up.

Contract capacity is a separate, fixed check (``quantity_value`` against the catalog's
``power_kw.high``); this detector finds surges well inside it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_at_least, check_below_one, floats, ints
from detectors.seasonal import hour_of_week
from detectors.series import SeriesDetector
from detectors.state import Field
from detectors.stats import ewma_fold

LEVELS = ("week", "day", "all")
ABS_FLOOR = 1e-9


class LoadProfile(SeriesDetector):
    """(x - baseline) / scale against the hour-of-week, hour-of-day or overall baseline."""

    measure: ClassVar[str] = "profile_z"
    anomaly: ClassVar[str] = "spike"

    def __init__(self, context: DetectorContext, *, quantity: str, alpha: float = 0.1, overall_alpha: float = 0.002,
                 warmup: int = 20, rel_floor: float = 0.1, overall_rel_floor: float = 0.5,
                 protect_z: float = 6.0, protect_weight: float = 0.05) -> None:
        check_below_one("alpha", alpha)
        check_below_one("overall_alpha", overall_alpha)
        check_at_least("warmup", warmup, 2)
        check_at_least("rel_floor", rel_floor, 0.0)
        check_at_least("overall_rel_floor", overall_rel_floor, 0.0)
        check_at_least("protect_z", protect_z, 1.0)
        check_below_one("protect_weight", protect_weight, allow_zero=True)
        self.alpha, self.overall_alpha, self.warmup = float(alpha), float(overall_alpha), int(warmup)
        self.rel_floor, self.protect_z = float(rel_floor), float(protect_z)
        self.overall_rel_floor, self.protect_weight = float(overall_rel_floor), float(protect_weight)
        super().__init__(context, quantity=quantity)

    def state_fields(self) -> Mapping[str, Field]:
        fields: dict[str, Field] = {}
        for level, slots in zip(LEVELS, (168, 24, 1), strict=True):
            fields |= {f"{level}_n": Field(np.int64, 0, (slots,)), f"{level}_mean": Field(np.float64, 0.0, (slots,)),
                       f"{level}_var": Field(np.float64, 0.0, (slots,)),
                       f"{level}_visits": Field(np.int64, 0, (slots,)), f"{level}_last": Field(np.int64, -1, (slots,))}
        return fields

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value"}
        yield {"quantity": "value", "warmup": 5, "rel_floor": 0.0, "protect_z": 3.0}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        offset = self.context.utc_offset_s
        slots = (hour_of_week(event_ms, offset), hour_of_week(event_ms, offset, weekly=False), np.zeros_like(event_ms))
        state = [(ints(self.state[f"{lv}_n"]), floats(self.state[f"{lv}_mean"]), floats(self.state[f"{lv}_var"]))
                 for lv in LEVELS]
        seen = [n[sensor, slot] for (n, _, _), slot in zip(state, slots, strict=True)]
        local_day = (event_ms + offset * 1000) // 86_400_000
        visit_ids = (local_day // 7, local_day, np.zeros_like(local_day))  # a new week, a new day
        visits = [ints(self.state[f"{lv}_visits"]) for lv in LEVELS]
        last_visit = [ints(self.state[f"{lv}_last"]) for lv in LEVELS]
        enough = [visits[i][sensor, slots[i]] >= need for i, need in enumerate((2, 2, 1))]
        mean = np.zeros(sensor.shape[0])
        var = np.zeros(sensor.shape[0])
        rel = np.zeros(sensor.shape[0])
        warm = np.zeros(sensor.shape[0], np.bool_)
        floors = (self.rel_floor, self.rel_floor, self.overall_rel_floor)
        for (_, means, variances), slot, n, floor, ok in zip(reversed(state), reversed(slots), reversed(seen),
                                                             reversed(floors), reversed(enough), strict=True):
            here = (n >= self.warmup) & ok  # most specific last: it wins
            mean = np.where(here, means[sensor, slot], mean)
            var = np.where(here, variances[sensor, slot], var)
            rel = np.where(here, floor, rel)
            warm |= here
        spread = np.sqrt(np.maximum(var, 0.0)) + rel * np.abs(mean) + ABS_FLOOR
        z: FloatArray = np.where(warm, np.maximum((value - mean) / spread, 0.0), 0.0)
        protected = z > self.protect_z
        learned = np.where(protected, mean + self.protect_z * spread, value)
        for level, (counts, means, variances), slot, n in zip(LEVELS, state, slots, seen, strict=True):
            least = self.overall_alpha if level == "all" else self.alpha
            weight = np.maximum(least, 1.0 / (n + 1)) * np.where(protected, self.protect_weight, 1.0)
            if level == "day":  # the hour's upper level across days (see the module docstring)
                weight = weight * np.where(learned < means[sensor, slot], self.protect_weight, 1.0)
            skip = protected & (n < self.warmup)  # a cold baseline does not start from a surge
            weight = np.where(skip, 0.0, weight)
            mean_here, var_here = means[sensor, slot], variances[sensor, slot]
            new_mean, new_var = ewma_fold(mean_here, var_here, learned, weight)
            # a protected reading widens the spread by at most one scale's worth, as Huber's
            # clipped residuals do, so a surge cannot inflate the spread it is judged against
            capped = (1.0 - weight) * (var_here + weight * spread * spread)
            means[sensor, slot] = new_mean
            variances[sensor, slot] = np.where(protected, np.minimum(new_var, capped), new_var)
            counts[sensor, slot] = n + ~skip
            i = LEVELS.index(level)
            new_visit = ~skip & (last_visit[i][sensor, slot] != visit_ids[i])
            visits[i][sensor, slot] += new_visit
            last_visit[i][sensor, slot] = np.where(~skip, visit_ids[i], last_visit[i][sensor, slot])
        return z
