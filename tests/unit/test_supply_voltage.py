"""supply_voltage: the GB/T 12325-2008 tolerance of each meter's own nominal voltage."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.base import DetectorContext
from detectors.columns import batch_from_columns
from detectors.registry import build_detector
from detectors.supply_voltage import SupplyVoltage, tolerance_band

CTX = DetectorContext(quantities=("voltage_v",), sensor_ids=("single", "three", "hv", "unknown"),
                      limits=({"voltage_v.nominal": 220.0}, {"voltage_v.nominal": 380.0},
                              {"voltage_v.nominal": 10_000.0}, {}))


def scores(sensor: list[int], value: list[float]) -> np.ndarray:
    batch = batch_from_columns(sensor, np.arange(len(sensor)) * 1000, value)
    got = SupplyVoltage(CTX).score_and_update(batch)
    out = np.full(len(sensor), np.nan)
    out[batch.reading_idx[got.rows]] = got.score
    return out


def test_the_bands_of_the_standard() -> None:
    lo, hi = tolerance_band(np.array([220.0, 380.0, 10_000.0, 110_000.0]))
    np.testing.assert_allclose(lo, [198.0, 353.4, 9_300.0, 104_500.0])
    np.testing.assert_allclose(hi, [235.4, 406.6, 10_700.0, 115_500.0])


def test_each_meter_is_held_to_its_own_nominal() -> None:
    # healthy at 220 V, 380 V and 10 kV: nothing (a fixed 380 V band flagged the other two)
    assert scores([0, 1, 2], [221.0, 383.0, 10_150.0]).tolist() == [0.0, 0.0, 0.0]
    # 220 V single-phase: -10 % is allowed, +7 % is not exceeded at 235 V
    assert scores([0, 0, 0], [199.0, 235.0, 236.0]).tolist()[:2] == [0.0, 0.0]
    assert scores([0], [236.0])[0] == pytest.approx(1 + 0.6 / 37.4)
    # 10 kV: 10.8 kV is 100 V over the +7 % bound
    assert scores([2], [10_800.0])[0] == pytest.approx(1 + 100 / 1_400)
    # 380 V: a sag to 340 V is 13.4 V under
    assert scores([1], [340.0])[0] == pytest.approx(1 + 13.4 / 53.2)


def test_a_meter_without_nominal_is_read_against_the_nearest_standard_level() -> None:
    got = scores([3, 3, 3], [229.0, 390.0, 9_000.0])
    assert got[0] == 0.0 and got[1] == 0.0
    assert got[2] == pytest.approx(1 + 300 / 1_400)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="nominal_limit"):
        build_detector("supply_voltage", CTX, {"nominal_limit": "power_kw.nominal"})
    bad = DetectorContext(quantities=("voltage_v",), sensor_ids=("a",), limits=({"voltage_v.nominal": -1.0},))
    with pytest.raises(ValueError, match="sensor a"):
        SupplyVoltage(bad)


def test_a_default_nominal_replaces_the_guess() -> None:
    batch = batch_from_columns([3], [0], [250.0])
    got = SupplyVoltage(CTX, nominal_v=380.0).score_and_update(batch)
    assert got.score[0] == pytest.approx(1 + 103.4 / 53.2)  # far under 380 V, not "near 220 V"
    with pytest.raises(ValueError, match="nominal_v"):
        SupplyVoltage(CTX, nominal_v=0)
