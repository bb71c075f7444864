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

Cost: the recursion is nonlinear (which baseline scores depends on the counts, what is
learned on the score), so readings are stepped round by round; ``scan`` does it on a
compact block of each sensor's baselines (no gather or scatter per round), bit for bit
what ``step`` computes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_at_least, check_below_one, floats, ints
from detectors.seasonal import hour_of_week
from detectors.recursions import previous_rows
from detectors.series import Series, SeriesDetector
from detectors.state import Field
from detectors.stats import ewma_fold

LEVELS = ("week", "day", "all")
_FIELDS = ("n", "mean", "var", "visits", "last")  # per level and slot
ABS_FLOOR = 1e-9


class LoadProfile(SeriesDetector):
    """(x - baseline) / scale against the hour-of-week, hour-of-day or overall baseline."""

    measure: ClassVar[str] = "profile_z"
    anomaly: ClassVar[str] = "spike"
    exact_scan: ClassVar[bool] = True

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

    def scan(self, series: Series) -> FloatArray:
        """``step`` for a whole batch, round by round on compact state.

        Each sensor's three baselines (its current hour-of-week slot, hour-of-day slot and
        overall) are gathered once into a (sensors, 3) block laid out by the round plan's
        places, so round k updates a prefix of it in place: the same elementwise operations
        as ``step``, for the three levels at once, with no gather or scatter. A sensor whose
        hour changes within the batch writes its week and day slots back and loads the new
        ones at that round."""
        plan, g = series.plan(), series.segments
        sensor = series.head_sensor()[plan.perm].astype(np.int64)  # by place
        offset = self.context.utc_offset_s
        t = plan.to_rounds(series.event_ms)
        x = np.ascontiguousarray(plan.to_rounds(series.value), np.float64)
        rank = plan.to_rounds(g.rank)
        week = hour_of_week(t, offset)
        local_day = (t + offset * 1000) // 86_400_000
        visit = np.stack([local_day // 7, local_day, np.zeros_like(local_day)], axis=1)  # (rows, levels)
        row_place = np.arange(t.shape[0], dtype=np.int64) - np.asarray(plan.bounds, np.int64)[rank]
        cell_week = sensor[row_place] * 168 + week  # flat (sensor, slot) of each row's week and day slots
        cell_day = sensor[row_place] * 24 + week % 24
        moved = (rank > 0) & (cell_week != cell_week[previous_rows(plan, rank)])  # a new hour: other slots
        flat = {f: [ints(self.state[f"{lv}_{f}"]).reshape(-1) if f != "mean" and f != "var"
                    else floats(self.state[f"{lv}_{f}"]).reshape(-1) for lv in LEVELS] for f in _FIELDS}
        n_seg = sensor.shape[0]
        where = [cell_week[:n_seg].copy(), cell_day[:n_seg].copy(), sensor.copy()]  # each place's cells
        block = {f: np.stack([flat[f][i][where[i]] for i in range(3)], axis=1) for f in _FIELDS}
        count, mean3, var3, visits, last = (block[f] for f in _FIELDS)
        z = np.empty(t.shape[0], np.float64)
        least = np.array([self.alpha, self.alpha, self.overall_alpha])
        need = np.array([2, 2, 1], np.int64)
        b, c = plan.bounds, plan.counts
        for k in range(len(c)):
            lo, width = b[k], c[k]
            hi = lo + width
            if k and bool(moved[lo:hi].any()):
                j = np.flatnonzero(moved[lo:hi])
                for f in _FIELDS:
                    for i in (0, 1):
                        flat[f][i][where[i][j]] = block[f][j, i]
                where[0][j], where[1][j] = cell_week[lo + j], cell_day[lo + j]
                for f in _FIELDS:
                    for i in (0, 1):
                        block[f][j, i] = flat[f][i][where[i][j]]
            z[lo:hi] = self._round(x[lo:hi], visit[lo:hi], count[:width], mean3[:width], var3[:width], visits[:width],
                                   last[:width], least, need)
        for f in _FIELDS:
            for i in range(3):
                flat[f][i][where[i]] = block[f][:, i]
        out: FloatArray = plan.to_grouped(z)
        return out

    def _round(self, value: FloatArray, visit_id: IntArray, n: IntArray, means: FloatArray, variances: FloatArray,
               visits: IntArray, last_visit: IntArray, least: FloatArray, need: IntArray) -> FloatArray:
        """``step`` on a block of distinct sensors' baselines ((sensors, levels) views, updated
        in place): the same operations, the three levels side by side."""
        here = n >= self.warmup
        here &= visits >= need
        w_, d_, a_ = here[:, 0], here[:, 1], here[:, 2]
        warm = w_ | d_
        # the most specific warm baseline (a row with none scores 0 and learns its value: what
        # it would be compared with does not matter then)
        mean = np.where(w_, means[:, 0], np.where(d_, means[:, 1], means[:, 2]))
        var = np.where(w_, variances[:, 0], np.where(d_, variances[:, 1], variances[:, 2]))
        rel = np.where(warm, self.rel_floor, self.overall_rel_floor)
        warm |= a_
        spread = np.sqrt(np.maximum(var, 0.0)) + rel * np.abs(mean) + ABS_FLOOR
        z: FloatArray = np.where(warm, np.maximum((value - mean) / spread, 0.0), 0.0)
        protected = z > self.protect_z
        guarded = bool(protected.any())
        learned = np.where(protected, mean + self.protect_z * spread, value) if guarded else value
        weight = np.maximum(least, 1.0 / (n + 1))
        if guarded:
            weight *= np.where(protected, self.protect_weight, 1.0)[:, None]
        day = weight[:, 1]
        np.multiply(day, self.protect_weight, out=day, where=learned < means[:, 1])  # else times 1.0
        if guarded:
            skip = protected[:, None] & (n < self.warmup)
            weight = np.where(skip, 0.0, weight)
        d = learned[:, None] - means
        new_mean = means + weight * d
        new_var = (1.0 - weight) * (variances + weight * d * d)
        if guarded:
            wide = spread[:, None]
            capped = (1.0 - weight) * (variances + weight * wide * wide)
            new_var = np.where(protected[:, None], np.minimum(new_var, capped), new_var)
            learn = ~skip
            visits += learn & (last_visit != visit_id)
            np.copyto(last_visit, visit_id, where=learn)
            n += learn
        else:  # nothing protected: every level learns
            visits += last_visit != visit_id
            last_visit[...] = visit_id
            n += 1
        means[...] = new_mean
        variances[...] = new_var
        return z
