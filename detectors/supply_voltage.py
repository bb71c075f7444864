"""``supply_voltage``: supply voltage outside the GB/T 12325-2008 tolerance of the meter's
nominal voltage.

GB/T 12325 (Power quality - Deviation of supply voltage) allows:

* 20 kV and below, three-phase (380 V, 10 kV): +-7 % of nominal;
* 220 V single-phase: +7 % / -10 %;
* 35 kV and above: the absolute positive and negative deviations sum to at most 10 %
  (the utility picks the split; the symmetric +-5 % is used here).

The nominal voltage is the catalog limit ``voltage_v.nominal`` of each meter (220, 380,
10000...). A meter without one is measured against ``nominal_v`` when it is set, else
against the standard nominal nearest to
each reading on a log scale (the standard levels are a factor >= 1.7 apart, so a
reading within the tolerance is never mistaken for another level); give the nominal
in the catalog, since a very deep sag would be read against a lower level.

Score as ``out_of_range``: 0 inside the band, else ``1 + distance outside / band width``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Final

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array
from detectors.out_of_range import OutOfRange, _at

STANDARD_NOMINAL_V: Final = (220.0, 380.0, 10_000.0, 20_000.0, 35_000.0, 66_000.0, 110_000.0)
SINGLE_PHASE_V: Final = 220.0
HIGH_VOLTAGE_V: Final = 35_000.0  # this and above: the 10 % sum rule


def tolerance_band(nominal_v: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(lowest, highest) allowed supply voltage for each nominal voltage (GB/T 12325-2008)."""
    below = np.where(nominal_v <= SINGLE_PHASE_V, 0.10, np.where(nominal_v >= HIGH_VOLTAGE_V, 0.05, 0.07))
    above = np.where(nominal_v >= HIGH_VOLTAGE_V, 0.05, 0.07)
    return nominal_v * (1 - below), nominal_v * (1 + above)


def nearest_standard(value_v: FloatArray) -> FloatArray:
    levels = np.log(np.asarray(STANDARD_NOMINAL_V))
    near = np.abs(np.log(np.maximum(value_v, 1e-9))[:, None] - levels[None, :]).argmin(axis=1)
    out: FloatArray = np.asarray(STANDARD_NOMINAL_V)[near]
    return out


class SupplyVoltage(OutOfRange):
    """Distance outside the GB/T 12325 band of the meter's nominal voltage, plus one."""

    def __init__(self, context: DetectorContext, *, quantity: str = "voltage_v",
                 nominal_limit: str = "voltage_v.nominal", nominal_v: float | None = None) -> None:
        super().__init__(context, quantity=quantity)
        if nominal_v is not None and (isinstance(nominal_v, bool) or not isinstance(nominal_v, (int, float))
                                      or not nominal_v > 0):
            msg = f"nominal_v: must be a voltage > 0, got {nominal_v!r}"
            raise ValueError(msg)
        self._default_v = None if nominal_v is None else float(nominal_v)
        if nominal_limit.partition(".")[0] != quantity:
            msg = f"nominal_limit: {nominal_limit!r} must be `{quantity}.<name>`"
            raise ValueError(msg)
        self._nominal = np.array([limits.get(nominal_limit, math.nan) for limits in context.limits], np.float64)
        bad = np.flatnonzero(np.isfinite(self._nominal) & (self._nominal <= 0))
        if bad.size:
            msg = f"catalog: {nominal_limit} of sensor {context.sensor_ids[int(bad[0])]} must be > 0"
            raise ValueError(msg)

    def _row_scores(self, sensor: Int32Array, q: np.ndarray, value: FloatArray) -> FloatArray:
        nominal = _at(self._nominal, sensor) if self._nominal.size else np.full(value.shape[0], math.nan)
        unknown = np.isnan(nominal)
        if unknown.any():
            nominal[unknown] = self._default_v if self._default_v is not None else nearest_standard(value[unknown])
        lo, hi = tolerance_band(nominal)
        excess = np.maximum(lo - value, value - hi)
        out: FloatArray = np.where(excess > 0, 1.0 + excess / (hi - lo), 0.0)
        return out

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value", "nominal_limit": "value.nominal", "nominal_v": 100.0}
