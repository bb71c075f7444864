"""Constructor parameter checks and typed views of state arrays, for every detector.

A check raises ValueError naming the parameter and its valid range, e.g.
``alpha: 0.0 is out of range; valid: 0 < alpha < 1``; topology.yaml loading
turns it into ``detectors[3].params: ...``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from detectors.base import FloatArray, IntArray


def floats(array: npt.NDArray[np.generic]) -> FloatArray:
    """A state array as the float64 array it is (SensorState arrays are untyped)."""
    assert array.dtype == np.float64
    return array  # type: ignore[return-value]


def ints(array: npt.NDArray[np.generic]) -> IntArray:
    """A state array as the int64 array it is."""
    assert array.dtype == np.int64
    return array  # type: ignore[return-value]


def _number(name: str, value: object, valid: str) -> float:
    """``value`` as a finite float, or ValueError (bools are config mistakes, not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"{name}: {value!r} is not a finite number; valid: {valid}"
        raise ValueError(msg)
    return float(value)


def _out_of_range(name: str, value: object, valid: str) -> ValueError:
    return ValueError(f"{name}: {value!r} is out of range; valid: {valid}")


def check_positive(name: str, value: float) -> None:
    valid = f"{name} > 0"
    if _number(name, value, valid) <= 0:
        raise _out_of_range(name, value, valid)


def check_at_least(name: str, value: float, low: float) -> None:
    valid = f"{name} >= {low:g}"
    if _number(name, value, valid) < low:
        raise _out_of_range(name, value, valid)


def check_int_at_least(name: str, value: int, low: int) -> None:
    valid = f"an integer {name} >= {low}"
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _out_of_range(name, value, valid)


def check_fraction(name: str, value: float) -> None:
    """0 < value <= 1 (a weight where 1 means no smoothing)."""
    valid = f"0 < {name} <= 1"
    if not 0 < _number(name, value, valid) <= 1:
        raise _out_of_range(name, value, valid)


def check_below_one(name: str, value: float, *, allow_zero: bool = False) -> None:
    """0 < value < 1 (an EWMA weight), or 0 <= value < 1 with ``allow_zero`` (a decay)."""
    valid = f"{'0 <=' if allow_zero else '0 <'} {name} < 1"
    number = _number(name, value, valid)
    if not (0.0 <= number < 1.0 if allow_zero else 0.0 < number < 1.0):
        raise _out_of_range(name, value, valid)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """``value`` is one of ``choices`` (a mode named in topology.yaml)."""
    if value not in choices:
        raise _out_of_range(name, value, f"one of {list(choices)}")


def check_quantity(quantity: str, quantities: tuple[str, ...]) -> int:
    """The quantity's index in the kind's catalog."""
    if quantity not in quantities:
        msg = f"quantity: {quantity!r} is not in this kind's catalog; valid: {list(quantities)}"
        raise ValueError(msg)
    return quantities.index(quantity)
