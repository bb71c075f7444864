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

Cost: ``scan`` runs only the recursions round by round (the EWMA, then both sums,
``detectors.recursions``); the standardization is computed for all rows at once from
the states before them, bit for bit what ``step`` computes one round at a time.

``min_sd`` floors the standard deviation in the quantity's own units: the
instrument's resolution. A gas detector sitting at its zero in clean air has a
variance near 0, and its last-digit wobble (autocorrelated, so it comes in runs)
would otherwise add up to tens of "standard deviations".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_at_least, check_below_one, check_choice, floats, ints
from detectors.ewma_z import EwmaRounds
from detectors.rounds import RoundPlan
from detectors.series import Series, SeriesDetector
from detectors.state import Field
from detectors.stats import ewma_fold, scale


SIDES = ("both", "up", "down")


class TwoSidedCusum(SeriesDetector):
    """max(S+, S-) of a two-sided CUSUM on z = (x - slow mean) / slow std, or one side of it."""

    measure: ClassVar[str] = "cusum"
    anomaly: ClassVar[str] = "spike"
    exact_scan: ClassVar[bool] = True
    scan_min_rounds: ClassVar[int] = 2

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

    def scan(self, series: Series) -> FloatArray:
        run = EwmaRounds.of(series, self.state, self.alpha)
        plan, sensor, x_r, mean_r, var_r = run.plan, run.sensor, run.x_r, run.mean_r, run.var_r
        ups, downs = floats(self.state["up"]), floats(self.state["down"])
        live_r = plan.to_rounds(run.n > self.warmup)
        z_r = np.where(live_r, (x_r - mean_r) / np.maximum(scale(var_r, mean_r), self.min_sd), 0.0)
        # both sums as two interleaved channels: S- - z is S- + (-z), exactly
        zz = np.empty((z_r.shape[0], 2))
        zz[:, 0] = z_r
        np.negative(z_r, out=zz[:, 1])
        sums0 = np.empty((sensor.shape[0], 2))
        sums0[:, 0], sums0[:, 1] = ups[sensor], downs[sensor]
        after = _cusum_after(plan, zz, sums0, self.k, None if bool(live_r.all()) else live_r)
        last = plan.last
        run.save()
        ups[sensor], downs[sensor] = after[last, 0], after[last, 1]
        up, down = plan.to_grouped(after[:, 0]), plan.to_grouped(after[:, 1])
        out: FloatArray = up if self.side == "up" else down if self.side == "down" else np.maximum(up, down)
        return out


def _cusum_after(plan: RoundPlan, z: FloatArray, start: FloatArray, k: float,
                 live: npt.NDArray[np.bool_] | None) -> FloatArray:
    """Per row (round-major) and channel: S = max(0, (S + z) - k), 0 where not ``live``."""
    out = np.empty_like(z)
    n_seg = start.shape[0]
    first = out[:n_seg]
    np.add(start, z[:n_seg], out=first)
    first -= k
    np.maximum(0.0, first, out=first)
    if live is not None:
        first[~live[:n_seg]] = 0.0
    b, c = plan.bounds, plan.counts
    flat, zf = out.reshape(-1), z.reshape(-1)
    for r in range(len(c) - 1):
        lo, nlo, width = b[r] * 2, b[r + 1] * 2, c[r + 1] * 2
        s = flat[nlo : nlo + width]
        np.add(flat[lo : lo + width], zf[nlo : nlo + width], out=s)
        s -= k
        np.maximum(0.0, s, out=s)
        if live is not None:
            dead = ~live[b[r + 1] : b[r + 1] + c[r + 1]]
            if dead.any():
                s.reshape(-1, 2)[dead] = 0.0
    return out
