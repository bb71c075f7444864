"""HJ 633-2012 AQI: the breakpoint table, interpolation, levels and the detector.

Expected values come from the standard's Table 1 (re-typed below, independently
of detectors/aqi.py) and hand arithmetic with
IAQI = (IAQI_hi - IAQI_lo) / (BP_hi - BP_lo) * (C - BP_lo) + IAQI_lo, rounded up.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from detectors.aqi import (
    AQI_LEVELS,
    BREAKPOINTS,
    MEASURE,
    AqiHj633,
    aqi_level,
    iaqi,
)
from detectors.base import DetectorContext, ReadingBatch
from detectors.registry import build_detector
from tests.unit.batches import make_batch

AIR = DetectorContext(quantities=("pm25", "pm10", "no2", "so2", "o3", "co"))

# HJ 633-2012 Table 1: IAQI -> concentration limit (µg/m³; CO mg/m³).
STANDARD_IAQI = (0, 50, 100, 150, 200, 300, 400, 500)
STANDARD_TABLE = {
    ("so2", "24h"): (0, 50, 150, 475, 800, 1600, 2100, 2620),
    ("so2", "1h"): (0, 150, 500, 650, 800),
    ("no2", "24h"): (0, 40, 80, 180, 280, 565, 750, 940),
    ("no2", "1h"): (0, 100, 200, 700, 1200, 2340, 3090, 3840),
    ("pm10", "24h"): (0, 50, 150, 250, 350, 420, 500, 600),
    ("co", "24h"): (0, 2, 4, 14, 24, 36, 48, 60),
    ("co", "1h"): (0, 5, 10, 35, 60, 90, 120, 150),
    ("o3", "1h"): (0, 160, 200, 300, 400, 800, 1000, 1200),
    ("o3", "8h"): (0, 100, 160, 215, 265, 800),
    ("pm25", "24h"): (0, 35, 75, 115, 150, 250, 350, 500),
}


def batch(reading_idx: list[int], quantity: list[str], value: list[float], flag: list[str]) -> ReadingBatch:
    return make_batch(AIR, reading_idx, quantity, value, flag)


def one(pollutant: str, c: float, averaging: str) -> float:
    return float(iaqi(pollutant, np.array([c]), averaging)[0])


# --- the table ---------------------------------------------------------------


def test_module_tables_match_the_standard() -> None:
    ours = {(p, avg): bp for avg, table in BREAKPOINTS.items() for p, bp in table.items()}
    assert ours == STANDARD_TABLE


@pytest.mark.parametrize(("pollutant", "averaging"), sorted(STANDARD_TABLE))
def test_every_breakpoint_gives_exactly_its_iaqi(pollutant: str, averaging: str) -> None:
    bp = STANDARD_TABLE[pollutant, averaging]
    got = iaqi(pollutant, np.array(bp, np.float64), averaging)
    np.testing.assert_array_equal(got, STANDARD_IAQI[: len(bp)])


# --- interpolation (hand arithmetic) -----------------------------------------


@pytest.mark.parametrize(
    ("pollutant", "c", "averaging", "expected"),
    [
        # (100-50)/(75-35)*(40-35)+50 = 56.25 -> 57
        ("pm25", 40, "24h", 57),
        # (100-50)/(500-150)*(200-150)+50 = 57.14... -> 58
        ("so2", 200, "1h", 58),
        # (150-100)/(700-200)*(250-200)+100 = 105 exactly -> 105
        ("no2", 250, "1h", 105),
        # (200-150)/(280-180)*(250-180)+150 = 185
        ("no2", 250, "24h", 185),
        # (300-200)/(420-350)*(380-350)+200 = 242.857... -> 243
        ("pm10", 380, "24h", 243),
        # (150-100)/(215-160)*(180-160)+100 = 118.18... -> 119
        ("o3", 180, "8h", 119),
        # (100-50)/(200-160)*(180-160)+50 = 75
        ("o3", 180, "1h", 75),
        # (100-50)/(10-5)*(7.3-5)+50 = 73 exactly
        ("co", 7.3, "1h", 73),
        # (300-200)/(90-60)*(65.4-60)+200 = 218 exactly; slope-first float math
        # gives 218.00000000000003, which a bare ceil would turn into 219
        ("co", 65.4, "1h", 218),
        # (50-0)/(35-0)*(0.1-0)+0 = 0.14... -> 1: any pollution rounds up
        ("pm25", 0.1, "24h", 1),
    ],
)
def test_interpolation(pollutant: str, c: float, averaging: str, expected: int) -> None:
    assert one(pollutant, c, averaging) == expected


def test_above_top_breakpoint_is_500() -> None:
    assert one("pm25", 501, "24h") == 500
    assert one("pm25", 5000, "24h") == 500
    assert one("no2", 3841, "1h") == 500
    assert one("co", 61, "24h") == 500


def test_so2_1h_above_800_uses_the_24h_table() -> None:
    assert one("so2", 800, "1h") == 200  # still the 1h table
    # 24h table: (300-200)/(1600-800)*(801-800)+200 = 200.125 -> 201
    assert one("so2", 801, "1h") == 201
    assert one("so2", 1600, "1h") == 300
    assert one("so2", 3000, "1h") == 500


def test_o3_8h_above_800_uses_the_1h_table() -> None:
    assert one("o3", 800, "8h") == 300
    # 1h table: (400-300)/(1000-800)*(801-800)+300 = 300.5 -> 301
    assert one("o3", 801, "8h") == 301
    assert one("o3", 1300, "8h") == 500


def test_negative_concentration_is_zero() -> None:
    assert one("pm25", -3, "24h") == 0


def test_iaqi_rejects_missing_tables_and_nan() -> None:
    with pytest.raises(ValueError, match="pm25.*1h"):
        iaqi("pm25", np.array([10.0]), "1h")
    with pytest.raises(ValueError, match="averaging"):
        iaqi("pm25", np.array([10.0]), "1d")
    with pytest.raises(ValueError, match="finite"):
        iaqi("pm25", np.array([np.nan]), "24h")


def test_iaqi_does_not_mutate_its_input() -> None:
    c = np.array([-5.0, 40.0, 900.0])
    iaqi("so2", c, "1h")
    np.testing.assert_array_equal(c, [-5.0, 40.0, 900.0])


# --- levels ------------------------------------------------------------------


def test_level_boundaries() -> None:
    aqi = np.array([0, 50, 51, 100, 101, 150, 151, 200, 201, 300, 301, 500], np.float64)
    np.testing.assert_array_equal(aqi_level(aqi), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6])


def test_level_names_and_colours() -> None:
    zh = ["优", "良", "轻度污染", "中度污染", "重度污染", "严重污染"]
    en = ["excellent", "good", "light", "moderate", "heavy", "severe"]
    colours = ["green", "yellow", "orange", "red", "purple", "maroon"]
    assert [lv.name_zh for lv in AQI_LEVELS] == zh
    assert [lv.name_en for lv in AQI_LEVELS] == en
    assert [lv.colour_en for lv in AQI_LEVELS] == colours
    assert [(lv.aqi_min, lv.aqi_max) for lv in AQI_LEVELS] == [
        (0, 50), (51, 100), (101, 150), (151, 200), (201, 300), (301, None)
    ]
    assert [lv.level for lv in AQI_LEVELS] == [1, 2, 3, 4, 5, 6]


# --- the detector ------------------------------------------------------------


def test_reading_aqi_is_the_max_and_its_row_the_primary_pollutant() -> None:
    b = batch(
        [0, 0, 0, 1, 1],
        ["pm25", "pm10", "no2", "pm25", "o3"],
        [40, 380, 250, 40, 180],  # IAQI 57, 243, 105 | 57, 75 (hourly mode)
        ["N"] * 5,
    )
    s = AqiHj633(AIR).score_and_update(b)
    assert s.measure == MEASURE
    np.testing.assert_array_equal(s.rows, [1, 4])
    np.testing.assert_array_equal(s.score, [243, 75])


def test_daily_mode_uses_24h_and_o3_8h_tables() -> None:
    b = batch([0, 0], ["no2", "o3"], [250, 180], ["N", "N"])  # IAQI 185, 119
    s = AqiHj633(AIR, averaging="24h").score_and_update(b)
    np.testing.assert_array_equal(s.rows, [0])
    np.testing.assert_array_equal(s.score, [185])


def test_tie_picks_the_first_row() -> None:
    # pm25 75 -> 100 and no2 (1h) 200 -> 100: the same IAQI
    b = batch([0, 0, 0], ["co", "no2", "pm25"], [1, 200, 75], ["N"] * 3)
    s = AqiHj633(AIR).score_and_update(b)
    np.testing.assert_array_equal(s.rows, [1])
    np.testing.assert_array_equal(s.score, [100])


def test_non_normal_flags_never_raise_pollution() -> None:
    b = batch(
        [0, 0, 1, 2, 3],
        ["pm25", "pm10", "pm25", "pm25", "pm25"],
        [40, 50, 500, 500, 500],
        ["N", "N", "M", "D", "C"],
    )
    s = AqiHj633(AIR).score_and_update(b)
    np.testing.assert_array_equal(s.rows, [0])
    np.testing.assert_array_equal(s.score, [57])


def test_readings_interleaved_across_sensors() -> None:
    # rows sorted by sensor, so reading_idx need not rise with the row index
    b = batch([1, 1, 0, 0], ["pm25", "so2", "pm25", "so2"], [40, 801, 0, 0], ["N"] * 4)
    s = AqiHj633(AIR).score_and_update(b)
    np.testing.assert_array_equal(s.rows, [1, 2])
    np.testing.assert_array_equal(s.score, [201, 0])


def test_no_air_rows_gives_empty_scores() -> None:
    ctx = DetectorContext(quantities=("pm25", "temperature_c"))
    b = ReadingBatch(
        sensor_idx=np.zeros(2, np.int32),
        reading_idx=np.array([0, 1], np.int32),
        event_time_ms=np.zeros(2, np.int64),
        quantity_idx=np.array([1, 1], np.int16),
        value=np.array([20.0, 21.0]),
        flag=np.zeros(2, np.uint8),
    )
    for s in (AqiHj633(ctx).score_and_update(b), AqiHj633(AIR).score_and_update(ReadingBatch.empty())):
        assert s.rows.shape == (0,) and s.score.shape == (0,)
        assert s.rows.dtype == np.int64 and s.score.dtype == np.float64
        assert s.measure == MEASURE


def test_random_batch_no_nan_bounded_and_input_untouched() -> None:
    rng = np.random.default_rng(633)
    n = 600
    b = ReadingBatch(
        sensor_idx=np.zeros(n, np.int32),
        reading_idx=np.repeat(np.arange(n // 6, dtype=np.int32), 6),
        event_time_ms=np.zeros(n, np.int64),
        quantity_idx=np.tile(np.arange(6, dtype=np.int16), n // 6),
        value=rng.uniform(0, 5000, n),
        flag=rng.choice(np.array([0, 0, 0, 2, 4], np.uint8), n),
    )
    before = {f.name: copy.deepcopy(getattr(b, f.name)) for f in dataclasses.fields(b)}
    s = AqiHj633(AIR).score_and_update(b)
    for f, arr in before.items():
        np.testing.assert_array_equal(getattr(b, f), arr)
    assert not np.isnan(s.score).any()
    assert ((s.score >= 0) & (s.score <= 500)).all()
    assert np.array_equal(s.score, np.round(s.score))
    assert (b.flag[s.rows] == 0).all()
    assert np.unique(b.reading_idx[s.rows]).size == s.rows.size  # one row per reading


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match=r"averaging: '8h'.*valid: \['1h', '24h'\]"):
        AqiHj633(AIR, averaging="8h")
    with pytest.raises(ValueError, match="none of"):
        AqiHj633(DetectorContext(quantities=("gas_lel",)))


def test_registry_builds_and_rejects_unknown_params() -> None:
    det = build_detector("aqi_hj633", AIR, {"averaging": "24h"})
    assert isinstance(det, AqiHj633)
    with pytest.raises(ValueError, match=r"aqi_hj633.*\['averagng'\].*valid: \['averaging'\]"):
        build_detector("aqi_hj633", AIR, {"averagng": "1h"})
    with pytest.raises(ValueError, match=r"kind: unknown 'aqi'.*aqi_hj633"):
        build_detector("aqi", AIR, {})
