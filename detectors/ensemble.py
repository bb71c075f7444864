"""``ensemble``: multi-scale statistics, each calibrated to a tail probability, 0..1.

Three raw scores per reading, each a |z| against the sensor's own recent past:

* ``point``: the value against a fast EWMA mean/variance (a spike or dip);
* ``diff``: the step from the previous reading against the EWMA variance of
  steps (an abrupt change, whatever the level);
* ``shift``: a short EWMA of the value against a slow EWMA mean/variance
  (a level shift or drift that no single reading shows).

Each raw score, log(1 + |z|), is calibrated much as Numenta's "anomaly
likelihood" is: it is compared with its own long-horizon EWMA mean and variance
(weight ``likelihood_alpha``; Numenta also averages a few raw scores first,
which scored worse here), and its Gaussian upper tail probability Q becomes
"nines", -log10 Q. The ensemble's level is the largest of the three, mapped to
0..1 as nines / (nines + 12) (so 0.5 means Q = 1e-12; order is kept, no ties).

The score reported is that level only where it is a *new peak*: above the
sensor's previous peak, which decays by ``peak_decay`` per reading; elsewhere
it is 0. An anomaly so scores once, as early as its evidence allows, and a
sensor that stays odd does not keep re-alarming at the same level.

Every EWMA starts as a plain running mean (weight max(alpha, 1/n)), so the
first readings are weighted as a sample average would weigh them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.state import Field
from detectors.stats import (
    ABS_FLOOR as FLOOR,
    REL_FLOOR,
    StatisticalDetector,
    check_at_least,
    check_fraction,
    ewma_fold,
    gaussian_nines,
    unit_interval,
)

N_COMPONENTS = 3
LEVELS = ("prev", "fast_mean", "fast_var", "step_var", "short_mean", "slow_mean", "slow_var")
# per component: long-horizon mean and variance of its raw score
CALIBRATION = tuple(f"{stat}{c}" for c in range(N_COMPONENTS) for stat in ("mean", "var"))
STATE = ("n", *LEVELS, *CALIBRATION, "peak")


class Ensemble(StatisticalDetector):
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
        likelihood_alpha: float = 0.0002,
        warmup: int = 100,
        peak_decay: float = 0.9998,
    ) -> None:
        for name, value in (("alpha", alpha), ("short_alpha", short_alpha), ("slow_alpha", slow_alpha),
                            ("likelihood_alpha", likelihood_alpha)):
            check_fraction(name, value)
        check_fraction("peak_decay", peak_decay, open_low=False)
        check_at_least("warmup", warmup, 1)
        self.alpha, self.short_alpha, self.slow_alpha = alpha, short_alpha, slow_alpha
        self.likelihood_alpha = likelihood_alpha
        self.warmup, self.peak_decay = int(warmup), peak_decay
        super().__init__(context, quantity=quantity)

    def state_fields(self) -> Mapping[str, Field]:
        # one 1-D array per statistic: gathers/scatters of 1-D arrays are the cheap ones
        return {name: Field(np.int64 if name == "n" else np.float64, 0) for name in STATE}

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value"}
        yield {"quantity": "value", "warmup": 20, "likelihood_alpha": 0.02, "peak_decay": 0.9}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        s = sensor.astype(np.intp)
        st: dict[str, Any] = {name: self.state[name][s] for name in STATE}
        n = st["n"] + 1
        first = 1.0 / n
        raw = self._raw_scores(st, value, n, first)
        z = self._calibrate(st, raw, np.maximum(self.likelihood_alpha, first))
        level = gaussian_nines(z) * (n > self.warmup)
        peak = st["peak"] * self.peak_decay
        new = level > peak
        st["peak"] = np.maximum(level, peak)
        st["n"] = n
        for name in STATE:
            self.state[name][s] = st[name]
        out: FloatArray = unit_interval(level) * new
        return out

    def _raw_scores(self, st: dict[str, Any], x: FloatArray, n: IntArray, first: FloatArray) -> list[FloatArray]:
        """log(1 + |z|) of point, step and shift; folds the reading into ``st``."""
        prev = np.where(n == 1, x, st["prev"])
        step = x - prev
        short = st["short_mean"] + np.maximum(self.short_alpha, first) * (x - st["short_mean"])
        live = n > 2  # before that there is no variance to compare with
        raw = [
            np.log1p(np.abs(x - st["fast_mean"]) / _scale(st["fast_var"], st["fast_mean"]) * live),
            np.log1p(np.abs(step) / _scale(st["step_var"], prev) * live),
            np.log1p(np.abs(short - st["slow_mean"]) / _scale(st["slow_var"], st["slow_mean"]) * live),
        ]
        st["fast_mean"], st["fast_var"] = ewma_fold(st["fast_mean"], st["fast_var"], x, np.maximum(self.alpha, first))
        step_weight = np.where(n > 1, np.maximum(self.alpha, 1.0 / np.maximum(n - 1, 1)), 0.0)
        st["step_var"] = st["step_var"] + step_weight * (step * step - st["step_var"])
        st["short_mean"], st["prev"] = short, x
        st["slow_mean"], st["slow_var"] = ewma_fold(st["slow_mean"], st["slow_var"], x, np.maximum(self.slow_alpha, first))
        return raw

    def _calibrate(self, st: dict[str, Any], raw: list[FloatArray], weight: FloatArray) -> FloatArray:
        """Largest z of the components' raw scores against their long-horizon mean/var."""
        z = np.zeros(weight.shape[0])
        for c, r in enumerate(raw):
            mean, var = st[f"mean{c}"], st[f"var{c}"]
            np.maximum(z, (r - mean) / (np.sqrt(var) + FLOOR), out=z)
            st[f"mean{c}"], st[f"var{c}"] = ewma_fold(mean, var, r, weight)
        return z


def _scale(var: FloatArray, level: FloatArray) -> FloatArray:
    """sqrt(var), floored relative to |level|: finite z for a flat series."""
    out: FloatArray = np.sqrt(var) + (REL_FLOOR * np.abs(level) + FLOOR)
    return out
