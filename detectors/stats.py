"""Small shared pieces of the statistical detectors: typed state access,
parameter checks, EWMA updates and the Gaussian tail calibration.

Everything here is elementwise numpy on arrays of distinct sensors' readings;
no function loops over rows.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.special import log_ndtr

from detectors.base import FloatArray

#: scale floor relative to the level, so a flat series gives finite scores
REL_FLOOR = 1e-9
ABS_FLOOR = 1e-12
#: calibrated scores saturate at this tail probability (1e-12, twelve "nines")
TAIL_NINES = 12.0
_LN10 = math.log(10.0)


def floats(array: npt.NDArray[np.generic]) -> FloatArray:
    """A state array as the float64 array it is (SensorState is untyped)."""
    assert array.dtype == np.float64
    return array  # type: ignore[return-value]


def ints(array: npt.NDArray[np.generic]) -> npt.NDArray[np.int64]:
    assert array.dtype == np.int64
    return array  # type: ignore[return-value]


def check_fraction(name: str, value: float, *, open_low: bool = True) -> None:
    """ValueError naming ``name`` unless 0 < value < 1 (or 0 <= value < 1)."""
    ok = (0.0 < value < 1.0) if open_low else (0.0 <= value < 1.0)
    if not ok:
        low = "0 <" if open_low else "0 <="
        msg = f"{name}: {value!r} is out of range; valid: {low} {name} < 1"
        raise ValueError(msg)


def check_weight(name: str, value: float) -> None:
    """ValueError naming ``name`` unless 0 < value <= 1 (1: no smoothing)."""
    if not 0.0 < value <= 1.0:
        msg = f"{name}: {value!r} is out of range; valid: 0 < {name} <= 1"
        raise ValueError(msg)


def check_at_least(name: str, value: float, low: float) -> None:
    if not value >= low:
        msg = f"{name}: {value!r} is out of range; valid: {name} >= {low}"
        raise ValueError(msg)


def scale(var: FloatArray, level: FloatArray) -> FloatArray:
    """sqrt(var), floored relative to |level| so division never gives inf or NaN."""
    return np.sqrt(np.maximum(var, 0.0)) + REL_FLOOR * np.abs(level) + ABS_FLOOR


def ewma_fold(mean: FloatArray, var: FloatArray, x: FloatArray, alpha: float | FloatArray) -> tuple[FloatArray, FloatArray]:
    """Exponentially weighted mean and variance after folding in ``x`` (West 1979)."""
    d = x - mean
    new_mean = mean + alpha * d
    new_var = (1.0 - alpha) * (var + alpha * d * d)
    return new_mean, new_var


def tail_score(z: FloatArray) -> FloatArray:
    """Upper Gaussian tail of ``z`` as "nines" / TAIL_NINES in 0..1 (1 - Q(z) -> 1).

    -log10 Q(z) counts the nines of the likelihood 1 - Q(z); it is computed in
    log space (scipy.special.log_ndtr), so it keeps resolving far into the tail.
    """
    nines = -log_ndtr(-z) / _LN10
    out: FloatArray = np.clip(nines / TAIL_NINES, 0.0, 1.0)
    return out
