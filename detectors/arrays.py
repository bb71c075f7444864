"""Small array helpers for the hot paths (``np.r_`` costs microseconds of Python per call,
which adds up over the dozens of calls of a batch)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.base import IntArray

BoolArray = npt.NDArray[np.bool_]


def firsts(keys: npt.NDArray[Any]) -> BoolArray:
    """True where a run of equal ``keys`` starts (the first element included)."""
    out = np.empty(keys.shape[0], np.bool_)
    if out.shape[0]:
        out[0] = True
        np.not_equal(keys[1:], keys[:-1], out=out[1:])
    return out


def lasts(keys: npt.NDArray[Any]) -> BoolArray:
    """True where a run of equal ``keys`` ends (the last element included)."""
    out = np.empty(keys.shape[0], np.bool_)
    if out.shape[0]:
        out[-1] = True
        np.not_equal(keys[1:], keys[:-1], out=out[:-1])
    return out


def run_starts(keys: npt.NDArray[Any]) -> IntArray:
    """Index of the first element of each run of equal ``keys``."""
    out: IntArray = np.flatnonzero(firsts(keys))
    return out


def run_ends(starts: IntArray, n: int) -> IntArray:
    """Index of the last element of each run, from the runs' starts and the length."""
    out = np.empty(starts.shape[0], np.int64)
    if out.shape[0]:
        np.subtract(starts[1:], 1, out=out[:-1])
        out[-1] = n - 1
    return out


def shifted(a: npt.NDArray[Any], first: Any) -> npt.NDArray[Any]:
    """``first``, then ``a`` without its last element (``np.r_[first, a[:-1]]``)."""
    out = np.empty_like(a)
    if out.shape[0]:
        out[0] = first
        out[1:] = a[:-1]
    return out
