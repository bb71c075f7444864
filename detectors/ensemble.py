"""``ensemble``: multi-scale statistics, calibrated to one tail probability, 0..1.

Three |z| of each reading against the sensor's own recent past:

* ``point``: the value against a fast EWMA mean/variance (a spike or dip);
* ``step``: the step from the previous reading against the EWMA variance of
  steps (an abrupt change, whatever the level);
* ``shift``: a short EWMA of the value against a slow EWMA mean/variance
  (a level shift or drift that no single reading shows).

A fourth score asks "have I seen this pattern before?" (``detectors.novelty``):
each reading is quantized into ``bins`` equal bins of the sensor's running
[min, max], the last ``pattern`` bins form a key, and a per-sensor bitset of
``bins**pattern`` bits remembers every key seen. The rate of novel keys (a short
EWMA, weight ``short_alpha``, of "this key is new") catches changes of shape
that no |z| sees: a new rhythm, new combinations of familiar levels. A second
bitset of ``phases * bins**phase_pattern`` bits asks the same question *at this time of
day*: its key is the part of the local day (``phases`` equal parts, in
``context.utc_offset_s`` time, by event time) and the last ``phase_pattern`` bins, so a
daily rhythm that skips or shifts a beat is new even though each pattern of values
is familiar. Its novel-key rate (same smoothing) is a fifth score.

The raw score is log(1 + max |z|) (log1p is monotone, so this is the largest of
the three log-compressed z, computed once per reading). It is calibrated much as
Numenta's "anomaly likelihood" is: compared with its own long-horizon EWMA mean
and variance (weight ``likelihood_alpha``), and its Gaussian upper tail
probability Q becomes "nines", -log10 Q, mapped to 0..1 as nines / (nines + 12)
(0.5 means Q = 1e-12; order is kept, no ties). The novelty rate is calibrated
the same way against its own EWMA mean and variance, and so is the day-phase
novelty rate; the largest of the three Gaussian z gives the nines (the tail is
monotone, so that is the largest nines).

The score reported is that level only where it is a *new peak*: above the
sensor's previous peak, which decays by ``peak_decay`` per reading, and at
least ``refractory`` readings after the sensor's last reported peak (default
1 / ``alpha``, the fast statistics' own horizon: an anomaly that keeps growing
does not re-alarm reading after reading) unless the level is more than twice the
peak in nines (a far larger event, not the growth of the last one: a weak report
must not mute it). Elsewhere the score is 0. An anomaly
so scores once, as early as its evidence allows.

Every EWMA starts as a plain running mean (weight max(alpha, 1/n)), so the
first readings are weighted as a sample average would weigh them. Per reading
this is a few dozen elementwise operations on 1-D state arrays, one word
gathered and scattered from the bitset, one square root, one log1p and one
Gaussian tail per reading. State per sensor: 21 float64, the base's int64 event
time and ``(bins**pattern + phases * bins**phase_pattern) / 64`` uint64 words (1,456
bytes with the defaults: 104 words).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.novelty import _BIT, MAX_KEYS, WORD_BITS, day_phase, mark_seen, n_words, phase_key, quantize, roll
from detectors.params import check_at_least, check_below_one
from detectors.recursions import ewma_after, ewma_before, fold_after, previous_rows
from detectors.rounds import RoundPlan, Segments, group_by_sensor, rounds
from detectors.series import Series, SeriesDetector
from detectors.state import Field
from detectors.stats import ABS_FLOOR, REL_FLOOR, TAIL_NINES, gaussian_nines

#: one 1-D float64 array per statistic: gathers/scatters of 1-D arrays are the cheap ones
#: (one (n_sensors, 18) array gathered by rows leaves strided columns, slower to compute on).
#: ``quiet_until``: reading count up to which the sensor stays quiet after a report.
#: ``lo``/``hi``: running min/max; ``key``: the last bins as a number; ``novel``: the
#: rate of novel keys, calibrated by ``novel_mean``/``novel_var``; ``day_novel``: the rate of
#: novel (day phase, last ``phase_pattern`` bins) keys, calibrated by ``day_mean``/``day_var``.
STATE = ("n", "prev", "fast_mean", "fast_var", "step_var", "short_mean", "slow_mean", "slow_var",
         "raw_mean", "raw_var", "peak", "quiet_until", "lo", "hi", "key", "novel", "novel_mean", "novel_var",
         "day_novel", "day_mean", "day_var", "first_ms")
_FILL = {"lo": np.inf, "hi": -np.inf}
#: the 1-D statistics live packed in one (n_sensors, len(STATE)) array: one gather and one
#: scatter of a sensor's row per reading instead of one per statistic
STATS = "stats"
#: the bitset of seen keys, (n_sensors, words) uint64: not gathered with the 1-D statistics
SEEN = "seen"
#: the bitset of seen (day phase, last ``phase_pattern`` bins) keys, (n_sensors, words) uint64
DAY_SEEN = "day_seen"
#: per (sensor, part of the day): EWMA mean and variance of the value, and visits; (n_sensors, phases)
SEASON = ("season_mean", "season_var", "season_n")
#: visits of a part of the day before its mean/variance may explain a reading
SEASON_MIN_VISITS = 3
_FLOOR2 = ABS_FLOOR * ABS_FLOOR
#: a level with a tail probability above 10 % is no evidence of anything: it is not reported,
#: so it does not start a refractory period that could mute a real anomaly just after it
REPORT_FLOOR_NINES = 1.0
#: within the refractory period a level at least this many times the sensor's running peak
#: (in nines: the tail probability squared) is a new event and is reported
REFRACTORY_BREAK = 2.0
N_TEMPS, N_BOOLS = 9, 3
BoolArray = npt.NDArray[np.bool_]


class Ensemble(SeriesDetector):
    """Tail-calibrated max of point / step / level-shift |z|, new peaks only."""

    measure: ClassVar[str] = "anomaly_likelihood"
    anomaly: ClassVar[str] = "spike"
    exact_scan: ClassVar[bool] = True
    scan_min_rounds: ClassVar[int] = 3

    def __init__(
        self,
        context: DetectorContext,
        *,
        quantity: str,
        alpha: float = 0.05,
        short_alpha: float = 0.2,
        slow_alpha: float = 0.005,
        likelihood_alpha: float = 0.0002,
        warmup: int = 100,
        peak_decay: float = 0.9998,
        refractory: int | None = None,
        bins: int = 16,
        pattern: int = 3,
        phases: int = 24,
        phase_pattern: int = 2,
        seasonal_alpha: float = 0.02,
        warmup_s: float = 2 * 86_400.0,
    ) -> None:
        for name, value in (("alpha", alpha), ("short_alpha", short_alpha), ("slow_alpha", slow_alpha),
                            ("likelihood_alpha", likelihood_alpha), ("seasonal_alpha", seasonal_alpha)):
            check_below_one(name, value)
        check_below_one("peak_decay", peak_decay, allow_zero=True)
        check_at_least("warmup", warmup, 1)
        check_at_least("bins", bins, 2)
        check_at_least("pattern", pattern, 1)
        check_at_least("phases", phases, 1)
        check_at_least("phase_pattern", phase_pattern, 1)
        check_at_least("warmup_s", warmup_s, 0)
        if bins**pattern > MAX_KEYS:
            msg = f"bins, pattern: {bins}**{pattern} keys is out of range; valid: bins**pattern <= {MAX_KEYS}"
            raise ValueError(msg)
        if phase_pattern > pattern:
            msg = f"phase_pattern: {phase_pattern} is out of range; valid: 1 <= phase_pattern <= pattern ({pattern})"
            raise ValueError(msg)
        if phases * bins**phase_pattern > MAX_KEYS:
            msg = (f"phases, phase_pattern: {phases} * {bins}**{phase_pattern} keys is out of range; "
                   f"valid: phases * bins**phase_pattern <= {MAX_KEYS}")
            raise ValueError(msg)
        if refractory is None:
            refractory = round(1.0 / alpha)
        check_at_least("refractory", refractory, 0)
        self.alpha, self.short_alpha, self.slow_alpha = alpha, short_alpha, slow_alpha
        self.likelihood_alpha = likelihood_alpha
        self.warmup, self.peak_decay, self.refractory = int(warmup), peak_decay, int(refractory)
        self.bins, self.pattern = int(bins), int(pattern)
        self.phases, self.phase_pattern = int(phases), int(phase_pattern)
        self.seasonal_alpha = seasonal_alpha
        self.warmup_ms = round(float(warmup_s) * 1000.0)
        self._scratch = _Scratch()
        super().__init__(context, quantity=quantity)

    def state_fields(self) -> Mapping[str, Field]:
        fill = tuple(_FILL.get(name, 0.0) for name in STATE)
        day_words = n_words(self.bins, self.phase_pattern) * self.phases
        return {STATS: Field(np.float64, fill, (len(STATE),)), SEEN: Field(np.uint64, 0, (n_words(self.bins, self.pattern),)),
                DAY_SEEN: Field(np.uint64, 0, (day_words,)),
                **{name: Field(np.float64, 0.0, (self.phases,)) for name in SEASON}}

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        # the contract streams are hours long: the default two-day warm-up would keep them silent
        yield {"quantity": "value", "warmup_s": 0}
        yield {"quantity": "value", "warmup": 20, "likelihood_alpha": 0.02, "peak_decay": 0.9, "refractory": 0,
               "bins": 4, "pattern": 2, "phases": 3, "phase_pattern": 1, "seasonal_alpha": 0.2, "warmup_s": 600}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        m = sensor.shape[0]
        g, t, b = self._scratch.views(m)
        s = self._scratch.index(sensor)
        rows = self._scratch.rows(m)
        np.take(self.state[STATS], s, axis=0, out=rows, mode="clip")  # gather
        np.copyto(self._scratch.columns(m), rows.T)
        n, first = g["n"], t[0]
        n += 1.0
        np.divide(1.0, n, out=first)
        np.copyto(g["first_ms"], event_ms, where=np.equal(n, 1.0, out=b[0]))
        # learning: no report before ``warmup`` readings and ``warmup_s`` of event time
        learned = np.greater(n, self.warmup, out=b[2])
        learned &= np.greater_equal(np.subtract(event_ms, g["first_ms"], out=t[1]), self.warmup_ms, out=b[0])
        phase = day_phase(event_ms, self.context.utc_offset_s, self.phases)
        self._novelty(g, t, b, s, phase, value)
        raw = self._raw_score(g, t, b, value)
        self._explain_by_season(t, b, s, phase, value, raw, learned)
        level = self._calibrate(g, t, raw)
        level *= learned
        # new peaks only, and none within ``refractory`` readings of the last report unless it
        # at least doubles the peak: the refractory mutes a growing anomaly, not a far larger
        # one just after a weak report
        peak, quiet_until = g["peak"], g["quiet_until"]
        peak *= self.peak_decay
        new = np.greater(level, peak, out=b[0])
        free = np.greater(n, quiet_until, out=b[1])
        free |= np.greater(level, np.multiply(peak, REFRACTORY_BREAK, out=t[1]), out=b[2])
        new &= free
        new &= np.greater_equal(level, REPORT_FLOOR_NINES, out=b[1])
        np.maximum(level, peak, out=peak)
        np.copyto(quiet_until, np.add(n, self.refractory, out=t[1]), where=new)
        np.copyto(rows.T, self._scratch.columns(m))  # scatter
        self.state[STATS][s] = rows
        out: FloatArray = level / (level + TAIL_NINES)
        out *= new
        return out

    def scan(self, series: Series) -> FloatArray:
        """``step`` for a whole batch: only the recursions run round by round
        (``detectors.recursions``: the running [min, max], the EWMAs of the value, its steps
        and the novel-key rates, the time-of-day slots, the calibration and the peak); every
        quantity that only reads them is computed for all rows at once with the operations
        ``step`` performs, so scores and state are the same to the bit."""
        plan, g = series.plan(), series.segments
        sensor = series.head_sensor()[plan.perm].astype(np.int64)  # per place of a round
        stats = self.state[STATS]
        state = stats[sensor]  # (places, statistics)
        col = {name: state[:, i] for i, name in enumerate(STATE)}
        n_rows = series.value.shape[0]
        rank = plan.to_rounds(g.rank)  # everything below is round-major
        bounds = np.asarray(plan.bounds, np.int64)
        place = np.arange(n_rows, dtype=np.int64) - bounds[rank]
        x = np.ascontiguousarray(plan.to_rounds(series.value), np.float64)
        t = plan.to_rounds(series.event_ms)
        row_sensor = sensor[place]

        # counts and learning: small integers in floats, exact
        n0 = col["n"][place]
        n = n0 + (rank + 1)
        first = 1.0 / n
        first_ms = np.where(n0 == 0.0, t[place].astype(np.float64), col["first_ms"][place])
        learned = np.greater(n, self.warmup) & (np.subtract(t, first_ms) >= self.warmup_ms)
        phase = day_phase(t, self.context.utc_offset_s, self.phases)

        # novelty: bins of the running [min, max] (hi as the minimum of -x), keys, seen bits
        x2 = np.empty((n_rows, 2))
        x2[:, 0] = x
        np.negative(x, out=x2[:, 1])
        start = np.empty((sensor.shape[0], 2))
        start[:, 0] = col["lo"]
        np.negative(col["hi"], out=start[:, 1])
        bounds_after = fold_after(plan, np.minimum, x2, start)
        lo = np.ascontiguousarray(bounds_after[:, 0])
        hi = np.negative(bounds_after[:, 1])
        span = np.subtract(hi, lo)
        span += 1e-300
        quant = np.subtract(x, lo)
        quant /= span
        quant *= self.bins
        q = quant.astype(np.intp)
        np.minimum(q, self.bins - 1, out=q)
        key = self._keys(q, rank, place, bounds, col["key"].astype(np.intp))
        new = self._first_seen(self.state[SEEN], row_sensor, key)
        new &= np.greater_equal(n, self.pattern)
        day_key = phase_key(key, phase, self.bins, self.phase_pattern)
        day_new = self._first_seen(self.state[DAY_SEEN], row_sensor, day_key)
        day_new &= np.greater_equal(n, self.phase_pattern)

        # the EWMAs driven by the readings alone, six channels in one recursion: fast mean/var,
        # slow mean/var, and (means only) the short EWMA, the step variance, both novel rates
        prev_pos = previous_rows(plan, rank)
        prev = np.where(rank > 0, x[prev_pos], col["prev"][place])
        np.copyto(prev, x, where=np.equal(n, 1.0))  # the first step is 0
        d_step = np.subtract(x, prev)
        sq_step = np.multiply(d_step, d_step)
        a = np.maximum(first, self.alpha)
        w_slow = np.maximum(first, self.slow_alpha)
        w_short = np.maximum(first, self.short_alpha)
        chan_x = np.stack([x, x, x, sq_step, new.astype(np.float64), day_new.astype(np.float64)], axis=1)
        chan_w = np.stack([a, w_slow, w_short, a, np.full(n_rows, self.short_alpha), np.full(n_rows, self.short_alpha)],
                          axis=1)
        chan_omw = np.zeros((n_rows, 6))  # no variance kept for the means-only channels
        np.subtract(1.0, a, out=chan_omw[:, 0])
        np.subtract(1.0, w_slow, out=chan_omw[:, 1])
        mean0 = np.stack([col["fast_mean"], col["slow_mean"], col["short_mean"], col["step_var"], col["novel"],
                          col["day_novel"]], axis=1)
        var0 = np.zeros_like(mean0)
        var0[:, 0], var0[:, 1] = col["fast_var"], col["slow_var"]
        before, var_before = ewma_before(plan, chan_x, chan_w, mean0, var0, chan_omw, squared_first=True)
        assert var_before is not None
        fast_mean, slow_mean, short_mean, step_var = (np.ascontiguousarray(before[:, i]) for i in range(4))
        fast_var, slow_var = np.ascontiguousarray(var_before[:, 0]), np.ascontiguousarray(var_before[:, 1])
        short = short_mean + w_short * np.subtract(x, short_mean)
        novel = before[:, 4] + np.subtract(new, before[:, 4]) * self.short_alpha
        day_novel = before[:, 5] + np.subtract(day_new, before[:, 5]) * self.short_alpha

        # the raw score: log(1 + max |z|) of point, step and shift
        d_point = np.subtract(x, fast_mean)
        d_shift = np.subtract(short, slow_mean)
        floor = np.multiply(x, REL_FLOOR)
        floor *= floor
        floor += _FLOOR2
        z2 = np.divide(np.multiply(d_point, d_point), np.add(fast_var, floor))
        np.maximum(z2, np.divide(sq_step, np.add(step_var, floor)), out=z2)
        np.maximum(z2, np.divide(np.multiply(d_shift, d_shift), np.add(slow_var, floor)), out=z2)
        raw = np.log1p(np.sqrt(z2, out=z2), out=z2)
        raw *= np.greater(n, 2.0)

        # explained by the time of day: one recursion per (sensor, part of the day)
        self._season(plan, g, row_sensor, phase, x, raw, learned)

        # calibration: raw score and both novel rates against their long-horizon mean/variance
        w = np.maximum(first, self.likelihood_alpha)
        cal_x = np.stack([raw, novel, day_novel], axis=1)
        cal_w = np.repeat(w[:, None], 3, axis=1)
        cal_omw = np.subtract(1.0, cal_w)
        cal_mean0 = np.stack([col["raw_mean"], col["novel_mean"], col["day_mean"]], axis=1)
        cal_var0 = np.stack([col["raw_var"], col["novel_var"], col["day_var"]], axis=1)
        cal_mean, cal_var = ewma_before(plan, cal_x, cal_w, cal_mean0, cal_var0, cal_omw, squared_first=True)
        assert cal_var is not None
        scale = np.sqrt(cal_var)
        scale += ABS_FLOOR
        zs = np.divide(np.subtract(cal_x, cal_mean), scale)
        z = np.maximum(np.maximum(zs[:, 0], zs[:, 1]), zs[:, 2])
        level = gaussian_nines(z, scratch=np.empty(n_rows))
        level *= learned

        # new peaks: the decayed peak is a recursion; the refractory one over the candidates
        peak_after, decayed = self._peaks(plan, level, col["peak"])
        quiet = col["quiet_until"].copy()
        reported = self._reports(level, decayed, n, place, quiet)
        out: FloatArray = level / (level + TAIL_NINES)
        out *= reported

        # the state after each sensor's last row
        last = plan.last
        fast_slow = ewma_after(before[last], var_before[last], chan_x[last], chan_w[last], chan_omw[last],
                               squared_first=True)
        cal_after = ewma_after(cal_mean[last], cal_var[last], cal_x[last], cal_w[last], cal_omw[last],
                               squared_first=True)
        after = state.copy()
        updates = {
            "n": n[last], "first_ms": first_ms[last], "prev": x[last], "lo": lo[last], "hi": hi[last],
            "key": key[last].astype(np.float64), "fast_mean": fast_slow[0][:, 0], "slow_mean": fast_slow[0][:, 1],
            "short_mean": fast_slow[0][:, 2], "step_var": fast_slow[0][:, 3], "novel": fast_slow[0][:, 4],
            "day_novel": fast_slow[0][:, 5], "raw_mean": cal_after[0][:, 0], "novel_mean": cal_after[0][:, 1],
            "day_mean": cal_after[0][:, 2], "peak": peak_after[last], "quiet_until": quiet,
        }
        updates |= {"fast_var": fast_slow[1][:, 0], "slow_var": fast_slow[1][:, 1], "raw_var": cal_after[1][:, 0],
                    "novel_var": cal_after[1][:, 1], "day_var": cal_after[1][:, 2]}
        for name, values in updates.items():
            after[:, STATE.index(name)] = values
        stats[sensor] = after
        result: FloatArray = plan.to_grouped(out)
        return result

    def _keys(self, q: IntArray, rank: IntArray, place: IntArray, bounds: IntArray, key0: IntArray) -> IntArray:
        """``roll`` for every row at once: the last ``pattern`` bins of the sensor as a number
        (the bins of earlier batches from ``key0``, per place), exact integer arithmetic."""
        size = self.bins**self.pattern
        key = np.zeros(q.shape[0], np.intp)
        for lag in range(self.pattern):  # the bin ``lag`` readings back, in digit ``lag``
            has = rank >= lag
            back = bounds[np.maximum(rank - lag, 0)] + place
            key += np.where(has, q[back], 0) * self.bins**lag
        carried = key0[place] * self.bins ** np.minimum(rank + 1, self.pattern)  # earlier batches' digits
        key += carried % size
        key %= size
        out: IntArray = key
        return out

    @staticmethod
    def _first_seen(seen: npt.NDArray[np.uint64], sensor: IntArray, key: IntArray) -> BoolArray:
        """``mark_seen`` for every row at once: a row's key is new when its bit was clear
        before the batch and no earlier row of its sensor had it; sets the bits."""
        assert seen.flags.c_contiguous
        flat = seen.reshape(-1)
        words = seen.shape[1]
        where = sensor * words
        where += key >> 6
        mask = _BIT[key & (WORD_BITS - 1)]
        new: BoolArray = np.equal(np.bitwise_and(flat[where], mask), 0)
        pair = sensor * (words * WORD_BITS) + key
        first = np.zeros(pair.shape[0], np.bool_)
        first[np.unique(pair, return_index=True)[1]] = True  # rows are in each sensor's order
        new &= first
        np.bitwise_or.at(flat, where[new], mask[new])
        return new

    def _season(self, plan: RoundPlan, g: Segments, row_sensor: IntArray, phase: IntArray, x: FloatArray,
                raw: FloatArray, learned: BoolArray) -> None:
        """``_explain_by_season`` for every row (round-major, ``raw`` updated in place); the
        slots' recursion runs round by round per (sensor, part of the day)."""
        cell = row_sensor * self.phases + phase
        mean_all, var_all, n_all = (self.state[name].reshape(-1) for name in SEASON)
        rank = plan.to_rounds(g.rank)
        if bool(np.all(cell[previous_rows(plan, rank)] == cell)):  # one part of the day per sensor here
            idx, cplan, c_rank = None, plan, rank
        else:
            cells = group_by_sensor(plan.to_grouped(cell))
            cplan = RoundPlan.of(cells)
            idx = plan.position[cells.order[cplan.order]]  # cell-round-major -> round-major
            c_rank = cells.rank[cplan.order]
        c_place = np.arange(cell.shape[0], dtype=np.int64) - np.asarray(cplan.bounds, np.int64)[c_rank]
        xc = x if idx is None else x[idx]
        slot = (cell if idx is None else cell[idx])[: cplan.counts[0]]  # round 0: every cell, by place
        visits = n_all[slot][c_place] + c_rank
        w = np.divide(1.0, visits + 1.0)
        np.maximum(w, self.seasonal_alpha, out=w)
        omw = np.subtract(1.0, w)
        mean, var = ewma_before(cplan, xc, w, mean_all[slot], var_all[slot], omw, squared_first=True)
        assert var is not None
        last = cplan.last
        after_mean, after_var = ewma_after(mean[last], var[last], xc[last], w[last], omw[last], squared_first=True)
        mean_all[slot], var_all[slot], n_all[slot] = after_mean, after_var, visits[last] + 1.0
        if idx is not None:
            back = np.empty_like(idx)
            back[idx] = np.arange(idx.shape[0], dtype=np.int64)
            mean, var, visits = mean[back], var[back], visits[back]
        d = np.subtract(x, mean)
        floor = np.multiply(x, REL_FLOOR)
        floor *= floor
        floor += _FLOOR2
        floor += var
        z = np.divide(np.multiply(d, d), floor)
        seasonal = np.log1p(np.sqrt(z, out=z), out=z)
        np.minimum(raw, seasonal, out=seasonal)
        warm = np.greater_equal(visits, SEASON_MIN_VISITS)
        warm &= learned
        np.copyto(raw, seasonal, where=warm)

    def _peaks(self, plan: RoundPlan, level: FloatArray, peak0: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per row (round-major): the peak after it, max(level, decayed), and the decayed
        peak before it."""
        after, decayed = np.empty_like(level), np.empty_like(level)
        n_seg = peak0.shape[0]
        np.multiply(peak0, self.peak_decay, out=decayed[:n_seg])
        np.maximum(level[:n_seg], decayed[:n_seg], out=after[:n_seg])
        b, c = plan.bounds, plan.counts
        for r in range(len(c) - 1):
            lo, nlo, width = b[r], b[r + 1], c[r + 1]
            d = decayed[nlo : nlo + width]
            np.multiply(after[lo : lo + width], self.peak_decay, out=d)
            np.maximum(level[nlo : nlo + width], d, out=after[nlo : nlo + width])
        return after, decayed

    def _reports(self, level: FloatArray, decayed: FloatArray, n: FloatArray, place: IntArray,
                 quiet: FloatArray) -> BoolArray:
        """Whether each row's level is reported; ``quiet`` (per place) is updated. Only rows
        above their decayed peak and the floor can be; those go through the refractory
        recursion in each sensor's order."""
        reported = np.zeros(level.shape[0], np.bool_)
        candidate = np.flatnonzero(np.greater(level, decayed) & np.greater_equal(level, REPORT_FLOOR_NINES))
        if candidate.size == 0:
            return reported
        breaks = np.greater(level[candidate], np.multiply(decayed[candidate], REFRACTORY_BREAK))
        grouped = group_by_sensor(place[candidate])  # positions ascend with rank: each place's in order
        by_rank, bounds = rounds(grouped)
        picked = grouped.order[by_rank]
        for lo, hi in bounds:
            i = picked[lo:hi]
            rows, where = candidate[i], place[candidate[i]]
            until = quiet[where]
            free = np.greater(n[rows], until) | breaks[i]
            reported[rows] = free
            quiet[where] = np.where(free, np.add(n[rows], self.refractory), until)
        return reported

    def _raw_score(self, g: dict[str, FloatArray], t: list[FloatArray], b: list[BoolArray], x: FloatArray) -> FloatArray:
        """log(1 + max |z|) of point, step and shift, in t[7]; folds ``x`` into ``g``.

        Every operation writes into a preallocated buffer: with many short-lived
        batch-sized temporaries, the allocator's page faults cost more than the arithmetic.
        """
        n, first = g["n"], t[0]
        prev, fast_mean, fast_var, step_var = g["prev"], g["fast_mean"], g["fast_var"], g["step_var"]
        short, slow_mean, slow_var = g["short_mean"], g["slow_mean"], g["slow_var"]
        np.copyto(prev, x, where=np.equal(n, 1.0, out=b[0]))  # the first step is 0
        d_point, d_step = np.subtract(x, fast_mean, out=t[1]), np.subtract(x, prev, out=t[2])
        sq_point, sq_step = np.multiply(d_point, d_point, out=t[3]), np.multiply(d_step, d_step, out=t[4])
        w = np.maximum(first, self.short_alpha, out=t[5])
        short += w * np.subtract(x, short, out=t[6])  # the short EWMA, this reading included
        d_shift = np.subtract(short, slow_mean, out=t[5])
        floor = np.multiply(x, REL_FLOOR, out=t[6])  # scale floor relative to the level: finite z for a flat series
        floor *= floor
        floor += _FLOOR2
        z2, other = t[7], t[8]
        np.divide(sq_point, np.add(fast_var, floor, out=z2), out=z2)
        np.maximum(z2, np.divide(sq_step, np.add(step_var, floor, out=other), out=other), out=z2)
        np.add(slow_var, floor, out=other)
        np.maximum(z2, np.divide(np.multiply(d_shift, d_shift, out=t[6]), other, out=other), out=z2)
        raw = np.log1p(np.sqrt(z2, out=z2), out=z2)
        raw *= np.greater(n, 2.0, out=b[0])  # before that there is no variance to compare with
        a = np.maximum(first, self.alpha, out=t[5])
        _ewma_fold(fast_mean, fast_var, d_point, sq_point, a, t[6])
        step_var += np.multiply(a, np.subtract(sq_step, step_var, out=t[6]), out=t[6])
        d_slow = np.subtract(x, slow_mean, out=t[1])
        _ewma_fold(slow_mean, slow_var, d_slow, np.multiply(d_slow, d_slow, out=t[3]),
                   np.maximum(first, self.slow_alpha, out=t[2]), t[6])
        np.copyto(prev, x)
        return raw

    def _explain_by_season(self, t: list[FloatArray], b: list[BoolArray], s: IntArray, phase: IntArray,
                           x: FloatArray, raw: FloatArray, learned: BoolArray) -> None:
        """raw = min(raw, log(1 + |x - m| / sd)) where (m, sd) is the sensor's EWMA mean and
        deviation at this part of the day, once the sensor has ``learned``; folds ``x`` into that slot.

        A jump that happens every morning at nine is a large step, but not a surprise: the
        reading is as expected for the time of day, so only what neither the recent past nor the
        daily rhythm explains scores high (the rhythm breaking is the day-phase novelty's job).
        Uses t[1..6]; ``raw`` (t[7]) is updated in place.
        """
        where = s * self.phases
        where += phase
        mean_all, var_all, n_all = (self.state[name].reshape(-1) for name in SEASON)
        mean, var, visits = (np.take(a, where, out=t[k]) for a, k in ((mean_all, 1), (var_all, 2), (n_all, 3)))
        d = np.subtract(x, mean, out=t[4])
        floor = np.multiply(x, REL_FLOOR, out=t[5])
        floor *= floor
        floor += _FLOOR2
        floor += var
        z = np.divide(np.multiply(d, d, out=t[6]), floor, out=t[6])
        seasonal = np.log1p(np.sqrt(z, out=z), out=z)
        np.minimum(raw, seasonal, out=seasonal)
        warm = np.greater_equal(visits, SEASON_MIN_VISITS, out=b[0])
        warm &= learned
        np.copyto(raw, seasonal, where=warm)
        visits += 1.0
        w = np.divide(1.0, visits, out=t[5])
        np.maximum(w, self.seasonal_alpha, out=w)
        _ewma_fold(mean, var, d, np.multiply(d, d, out=t[6]), w, t[8])
        mean_all[where], var_all[where], n_all[where] = mean, var, visits

    def _novelty(self, g: dict[str, FloatArray], t: list[FloatArray], b: list[BoolArray], s: IntArray,
                 phase: IntArray, x: FloatArray) -> None:
        """Folds ``x`` into the bins, key, both bitsets and the novel-key rates ``g["novel"]``
        (pattern) and ``g["day_novel"]`` (day phase and pattern)."""
        q = quantize(x, g["lo"], g["hi"], self.bins, out=t[1], tmp=t[2])
        key = roll(g["key"], q, self.bins, self.pattern)
        self._fold_novel(g["novel"], mark_seen(self.state[SEEN], s, key, out=b[0]), g["n"], self.pattern, t, b)
        day_key = phase_key(key, phase, self.bins, self.phase_pattern)
        new = mark_seen(self.state[DAY_SEEN], s, day_key, out=b[0])
        self._fold_novel(g["day_novel"], new, g["n"], self.phase_pattern, t, b)

    def _fold_novel(self, rate: FloatArray, new: BoolArray, n: FloatArray, length: int, t: list[FloatArray],
                    b: list[BoolArray]) -> None:
        """rate += short_alpha (new - rate), ``new`` counted only once ``length`` readings make a key."""
        new &= np.greater_equal(n, length, out=b[1])
        rate += np.multiply(np.subtract(new, rate, out=t[1]), self.short_alpha, out=t[1])

    def _calibrate(self, g: dict[str, FloatArray], t: list[FloatArray], raw: FloatArray) -> FloatArray:
        """Nines of the largest z of the raw score and of the two novel-key rates, each against
        its long-horizon mean/variance, in t[2]; folds all three in."""
        w = np.maximum(t[0], self.likelihood_alpha, out=t[4])
        z = self._z_fold(raw, g["raw_mean"], g["raw_var"], w, t[2], t)
        np.maximum(z, self._z_fold(g["novel"], g["novel_mean"], g["novel_var"], w, t[6], t), out=z)
        np.maximum(z, self._z_fold(g["day_novel"], g["day_mean"], g["day_var"], w, t[8], t), out=z)
        return gaussian_nines(z, scratch=t[3])

    @staticmethod
    def _z_fold(x: FloatArray, mean: FloatArray, var: FloatArray, w: FloatArray, z: FloatArray,
                t: list[FloatArray]) -> FloatArray:
        """(x - mean) / sd into ``z``, then folds ``x`` in with weight ``w``; uses t[1], t[3], t[5]."""
        d = np.subtract(x, mean, out=t[1])
        np.sqrt(var, out=z)
        z += ABS_FLOOR
        np.divide(d, z, out=z)
        _ewma_fold(mean, var, d, np.multiply(d, d, out=t[3]), w, t[5])
        return z


def _ewma_fold(mean: FloatArray, var: FloatArray, d: FloatArray, d2: FloatArray, w: FloatArray, tmp: FloatArray) -> None:
    """In place: mean += w d, var = (1 - w)(var + w d^2), d = x - mean, d2 = d^2 (West 1979)."""
    mean += np.multiply(w, d, out=tmp)
    var += np.multiply(w, d2, out=tmp)
    var *= np.subtract(1.0, w, out=tmp)


class _Scratch:
    """Batch-sized work buffers, grown on demand and reused (not state: never snapshotted)."""

    def __init__(self) -> None:
        self._floats = np.empty((len(STATE) + N_TEMPS, 0))
        self._bools = np.empty((N_BOOLS, 0), np.bool_)
        self._index = np.empty(0, np.intp)
        self._rows = np.empty((0, len(STATE)))

    def rows(self, m: int) -> FloatArray:
        """(m, statistics): a gathered block of sensor rows."""
        if m > self._rows.shape[0]:
            self._rows = np.empty((m, len(STATE)))
        return self._rows[:m]

    def columns(self, m: int) -> FloatArray:
        """(statistics, m): the same values, one contiguous row per statistic (``views``' dict)."""
        return self._floats[: len(STATE), :m]

    def views(self, m: int) -> tuple[dict[str, FloatArray], list[FloatArray], list[BoolArray]]:
        if m > self._index.shape[0]:
            self._floats = np.empty((self._floats.shape[0], m))
            self._bools = np.empty((N_BOOLS, m), np.bool_)
            self._index = np.empty(m, np.intp)
        rows = [self._floats[i, :m] for i in range(self._floats.shape[0])]
        return dict(zip(STATE, rows)), rows[len(STATE):], [self._bools[i, :m] for i in range(N_BOOLS)]

    def index(self, sensor: Int32Array) -> IntArray:
        out = self._index[: sensor.shape[0]]
        np.copyto(out, sensor, casting="safe")
        return out
