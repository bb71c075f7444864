"""Small shared pieces of the statistical detectors: scale floors, EWMA updates
and the Gaussian tail calibration (parameter checks live in detectors/params.py).

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
#: a calibrated score of 0.5 is this many "nines" (tail probability 1e-12)
TAIL_NINES = 12.0
_LN10 = math.log(10.0)


def scale(var: FloatArray, level: FloatArray) -> FloatArray:
    """sqrt(var), floored relative to |level| so division never gives inf or NaN."""
    return np.sqrt(np.maximum(var, 0.0)) + REL_FLOOR * np.abs(level) + ABS_FLOOR


def ewma_fold(mean: FloatArray, var: FloatArray, x: FloatArray, alpha: float | FloatArray) -> tuple[FloatArray, FloatArray]:
    """Exponentially weighted mean and variance after folding in ``x`` (West 1979)."""
    d = x - mean
    new_mean = mean + alpha * d
    new_var = (1.0 - alpha) * (var + alpha * d * d)
    return new_mean, new_var


def tail_nines(z: FloatArray) -> FloatArray:
    """-log10 of the upper Gaussian tail probability Q(z): the "nines" of 1 - Q(z).

    Computed in log space (scipy.special.log_ndtr), so it keeps resolving far
    into the tail where 1 - Q(z) rounds to 1.0.
    """
    out: FloatArray = -log_ndtr(-z) / _LN10
    return out


_A, _B = 0.339, 5.510  # Borjesson & Sundberg (1979) tail approximation constants
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_nines(z: FloatArray, scratch: FloatArray | None = None) -> FloatArray:
    """-log10 Q(max(z, 0)) by the Borjesson-Sundberg approximation
    Q(z) ~ phi(z) / ((1 - a) z + a sqrt(z^2 + b)): within 0.3 % of tail_nines for
    z >= 0, monotone, and four times cheaper than log_ndtr (the ensemble's hot path).

    With ``scratch`` (an array shaped like ``z``), the result overwrites ``z`` and no
    temporary array is allocated; without, ``z`` is left alone.
    """
    if scratch is None:
        z, scratch = np.array(z, dtype=np.float64), np.empty(np.shape(z))
    np.maximum(z, 0.0, out=z)
    # log((1 - a) z + a sqrt(z^2 + b)) = log(1 - a) + log(z + a / (1 - a) sqrt(z^2 + b))
    den = np.sqrt(np.add(np.multiply(z, z, out=scratch), _B, out=scratch), out=scratch)
    den *= _A / (1.0 - _A)
    den += z
    np.log(den, out=den)
    z *= z
    z *= 0.5
    z += den
    z += _LOG_SQRT_2PI + math.log(1.0 - _A)
    z /= _LN10
    return z


def unit_interval(nines: FloatArray) -> FloatArray:
    """Map nines (0..inf) onto 0..1, order kept: nines / (nines + TAIL_NINES)."""
    out: FloatArray = nines / (nines + TAIL_NINES)
    return out
