"""``cusum``: two-sided CUSUM of standardized readings (Page 1954).

Each reading is standardized against a slow EWMA mean and variance of the
sensor (weight max(alpha, 1/n)), then accumulated with slack ``k`` (in standard
deviations):

    S+ = max(0, S+ + z - k)        S- = max(0, S- - z - k)

The score is max(S+, S-) (``side: both``), S+ alone (``side: up``) or S- alone
(``side: down``): it grows by about (shift - k) per reading while a small shift
persists, which a per-reading z-score never shows. A route that means one
direction needs its own side: after a leak, the slow mean still sits above the
clean-air readings, so S- climbs while the gas is gone (a "creeping up" alarm
on a two-sided score fired 25 s after every demo leak had cleared). There is no
reset at a threshold (thresholds belong to routes); the sums decay back to 0
once readings return to normal or the slow baseline absorbs the new level.
The first ``warmup`` readings score 0 and do not accumulate.

``min_sd`` floors the standard deviation in the quantity's own units: the
instrument's resolution. A gas detector sitting at its zero in clean air has a
variance near 0, and its last-digit wobble (autocorrelated, so it comes in runs)
would otherwise add up to tens of "standard deviations".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_at_least, check_below_one, check_choice, floats, ints
from detectors.series import SeriesDetector
from detectors.state import Field
from detectors.stats import ewma_fold, scale


SIDES = ("both", "up", "down")


class TwoSidedCusum(SeriesDetector):
    """max(S+, S-) of a two-sided CUSUM on z = (x - slow mean) / slow std, or one side of it."""

    measure: ClassVar[str] = "cusum"
    anomaly: ClassVar[str] = "spike"

    def __init__(
        self, context: DetectorContext, *, quantity: str, alpha: float = 0.01, k: float = 0.5, warmup: int = 30,
        min_sd: float = 0.0, side: str = "both",
    ) -> None:
        check_below_one("alpha", alpha)
        check_at_least("k", k, 0.0)
        check_at_least("warmup", warmup, 2)
        check_at_least("min_sd", min_sd, 0.0)
        check_choice("side", side, SIDES)
        self.alpha, self.k, self.warmup, self.min_sd = alpha, float(k), int(warmup), float(min_sd)
        self.side = side
        super().__init__(context, quantity=quantity)

    def state_fields(self) -> Mapping[str, Field]:
        return {
            "n": Field(np.int64, 0),
            "mean": Field(np.float64, 0.0),
            "var": Field(np.float64, 0.0),
            "up": Field(np.float64, 0.0),
            "down": Field(np.float64, 0.0),
        }

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value"}
        yield {"quantity": "value", "alpha": 0.1, "k": 0.0, "warmup": 3}
        yield {"quantity": "value", "min_sd": 1.0}
        yield {"quantity": "value", "side": "up"}  # (the contract injects upward spikes: no "down" here;
        # tests/unit/test_statistical_detectors.py covers it)

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        n = ints(self.state["n"])[sensor] + 1
        mean, var = floats(self.state["mean"])[sensor], floats(self.state["var"])[sensor]
        live = n > self.warmup
        z = np.where(live, (value - mean) / np.maximum(scale(var, mean), self.min_sd), 0.0)
        up = np.where(live, np.maximum(0.0, floats(self.state["up"])[sensor] + z - self.k), 0.0)
        down = np.where(live, np.maximum(0.0, floats(self.state["down"])[sensor] - z - self.k), 0.0)
        mean, var = ewma_fold(mean, var, value, np.maximum(self.alpha, 1.0 / n))
        floats(self.state["mean"])[sensor], floats(self.state["var"])[sensor] = mean, var
        floats(self.state["up"])[sensor], floats(self.state["down"])[sensor] = up, down
        ints(self.state["n"])[sensor] = n
        out: FloatArray = up if self.side == "up" else down if self.side == "down" else np.maximum(up, down)
        return out
