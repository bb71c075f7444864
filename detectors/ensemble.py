"""``ensemble``: multi-scale statistics, each calibrated to a tail probability, 0..1.

Three raw scores per reading, each a |z| against the sensor's own recent past:

* ``point``: the value against a fast EWMA mean/variance (a spike or dip);
* ``diff``: the step from the previous reading against the EWMA variance of
  steps (an abrupt change, whatever the level);
* ``shift``: a short EWMA of the value against a slow EWMA mean/variance
  (a level shift or drift that no single reading shows).

Each raw score is calibrated the way Numenta's "anomaly likelihood" is: a
short average of the raw score is compared with the raw score's long-horizon
EWMA mean and variance, and its Gaussian upper tail probability Q is turned
into "nines" (-log10 Q) / 12, clipped to 0..1. The ensemble's calibrated level
is the largest of the three.

The score reported is that level only where it is a *new peak*: above the
sensor's previous peak, which decays by ``peak_decay`` per reading; elsewhere
it is 0. An anomaly so scores once, as early as its evidence allows, and a
sensor that stays odd does not keep re-alarming at the same level.
Any route threshold on it is a tail probability: 0.5 means Q < 1e-6.

Every EWMA starts as a plain running mean (weight max(alpha, 1/n)), so the
first readings are weighted as a sample average would weigh them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.series import SeriesDetector
from detectors.state import Field
from detectors.stats import check_at_least, check_fraction, check_weight, ewma_fold, floats, ints, scale, tail_score

N_COMPONENTS = 3
# columns of the "level" state: fast mean/var of values, var of steps, short mean, slow mean/var
FAST_MEAN, FAST_VAR, STEP_VAR, SHORT_MEAN, SLOW_MEAN, SLOW_VAR = range(6)


class Ensemble(SeriesDetector):
    """Tail-calibrated point / step / level-shift scores of one quantity, new peaks only."""

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
        average_alpha: float = 0.1,
        likelihood_alpha: float = 0.001,
        warmup: int = 300,
        peak_decay: float = 0.999,
    ) -> None:
        for name, value in (("alpha", alpha), ("short_alpha", short_alpha), ("slow_alpha", slow_alpha),
                            ("likelihood_alpha", likelihood_alpha)):
            check_fraction(name, value)
        check_weight("average_alpha", average_alpha)
        check_fraction("peak_decay", peak_decay, open_low=False)
        check_at_least("warmup", warmup, 1)
        self.alpha, self.short_alpha, self.slow_alpha = alpha, short_alpha, slow_alpha
        self.average_alpha, self.likelihood_alpha = average_alpha, likelihood_alpha
        self.warmup, self.peak_decay = int(warmup), peak_decay
        super().__init__(context, quantity=quantity)

    def state_fields(self) -> Mapping[str, Field]:
        return {
            "n": Field(np.int64, 0),
            "prev": Field(np.float64, 0.0),
            "level": Field(np.float64, 0.0, (6,)),
            "raw": Field(np.float64, 0.0, (3, N_COMPONENTS)),  # rows: mean, var, short average
            "peak": Field(np.float64, 0.0),
        }

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value"}
        yield {"quantity": "value", "warmup": 20, "likelihood_alpha": 0.02, "peak_decay": 0.9}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        n = ints(self.state["n"])[sensor] + 1
        raw = self._raw_scores(sensor, value, n)
        level = self._calibrate(sensor, raw, n)
        ints(self.state["n"])[sensor] = n
        return self._new_peaks(sensor, level)

    def _raw_scores(self, sensor: Int32Array, x: FloatArray, n: IntArray) -> FloatArray:
        """(k, 3) |z| of point, step and shift; folds the reading into the level state."""
        lv = floats(self.state["level"])[sensor]
        prev = np.where(n == 1, x, floats(self.state["prev"])[sensor])
        first = 1.0 / n
        a, a_short, a_slow = np.maximum(self.alpha, first), np.maximum(self.short_alpha, first), np.maximum(self.slow_alpha, first)
        step = x - prev
        short = lv[:, SHORT_MEAN] + a_short * (x - lv[:, SHORT_MEAN])
        raw = np.empty((x.shape[0], N_COMPONENTS))
        raw[:, 0] = np.abs(x - lv[:, FAST_MEAN]) / scale(lv[:, FAST_VAR], lv[:, FAST_MEAN])
        raw[:, 1] = np.abs(step) / scale(lv[:, STEP_VAR], prev)
        raw[:, 2] = np.abs(short - lv[:, SLOW_MEAN]) / scale(lv[:, SLOW_VAR], lv[:, SLOW_MEAN])
        lv[:, FAST_MEAN], lv[:, FAST_VAR] = ewma_fold(lv[:, FAST_MEAN], lv[:, FAST_VAR], x, a)
        lv[:, STEP_VAR] += np.maximum(a, 1.0 / np.maximum(n - 1, 1)) * (step * step - lv[:, STEP_VAR]) * (n > 1)
        lv[:, SHORT_MEAN] = short
        lv[:, SLOW_MEAN], lv[:, SLOW_VAR] = ewma_fold(lv[:, SLOW_MEAN], lv[:, SLOW_VAR], x, a_slow)
        floats(self.state["level"])[sensor] = lv
        floats(self.state["prev"])[sensor] = x
        raw[n < 3] = 0.0  # no variance yet: nothing to compare with
        return np.log1p(raw)

    def _calibrate(self, sensor: Int32Array, raw: FloatArray, n: IntArray) -> FloatArray:
        """Largest tail score of the components' short averages vs their long-horizon stats."""
        st = floats(self.state["raw"])[sensor]
        first = (1.0 / n)[:, None]
        average = st[:, 2] + np.maximum(self.average_alpha, first) * (raw - st[:, 2])
        z = (average - st[:, 0]) / scale(st[:, 1], st[:, 0])
        st[:, 0], st[:, 1] = ewma_fold(st[:, 0], st[:, 1], raw, np.maximum(self.likelihood_alpha, first))
        st[:, 2] = average
        floats(self.state["raw"])[sensor] = st
        level: FloatArray = tail_score(z).max(axis=1)
        level[n <= self.warmup] = 0.0
        return level

    def _new_peaks(self, sensor: Int32Array, level: FloatArray) -> FloatArray:
        peak = floats(self.state["peak"])[sensor] * self.peak_decay
        new = level > peak
        floats(self.state["peak"])[sensor] = np.where(new, level, peak)
        out: FloatArray = np.where(new, level, 0.0)
        return out
