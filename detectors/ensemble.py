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
from detectors.novelty import MAX_KEYS, day_phase, mark_seen, n_words, phase_key, quantize, roll
from detectors.params import check_at_least, check_below_one
from detectors.series import SeriesDetector
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
