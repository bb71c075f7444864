"""Domain detectors: rise_rate (hazmat pre-alarm), idle_in_hours (energy), traffic_pair
(California-style incident detection) and the road order it relies on.

Expectations come from the definitions in each module's docstring, worked out by
hand for these series.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from detectors.base import DetectorContext
from detectors.idle_hours import WorkingHoursIdle
from detectors.registry import build_detector
from detectors.rise_rate import RiseRate
from detectors.roads import NONE, downstream_stations, km_post
from detectors.traffic_pair import TrafficPair
from tests.unit.detector_streams import R, feed, scores_of, stream

GAS = DetectorContext(quantities=("gas_lel",), quantity_ranges=((0.0, 100.0),), expected_period_s=10.0,
                      limits=({"gas_lel.high": 25.0}, {}))
CST = timezone(timedelta(hours=8))


def lel(values: list[float], period_s: float = 10.0, sensor: int = 0) -> list[R]:
    return [R(sensor, i * period_s, {"gas_lel": v}) for i, v in enumerate(values)]


# -- rise_rate -----------------------------------------------------------------------------
def test_rise_rate_scores_the_slope_in_percent_of_the_set_point_per_minute() -> None:
    readings = lel([1.0 + 2.0 * i / 6 for i in range(12)])  # +2 %LEL per minute, every 10 s
    fed = feed(RiseRate(GAS, quantity="gas_lel", setpoint=25, window_s=120), stream(GAS, readings))
    got = scores_of(fed, readings, 0)
    # the window spans at least 60 s from the 7th reading (t = 60 s): 2 / 25 * 100 = 8 % per minute
    assert got[:6] == [0.0] * 6
    assert got[6:] == pytest.approx([8.0] * 6)


def test_rise_rate_equals_a_least_squares_fit_over_each_readings_window() -> None:
    """Whole-batch windows (ring + batch, binary-searched) against a plain per-reading fit,
    with irregular spacing, a ring that wraps (max_points), late readings and batch cuts."""
    rng = np.random.default_rng(2)
    readings, t = [], [0.0, 0.0, 0.0]
    for _ in range(900):
        s = int(rng.integers(0, 3))
        t[s] += float(rng.choice([2.0, 5.0, 10.0, 45.0, 400.0], p=[0.3, 0.3, 0.3, 0.07, 0.03]))
        late = rng.random() < 0.03
        readings.append(R(s, t[s] - 30.0 if late else t[s], {"gas_lel": float(rng.normal(10 + t[s] / 600, 0.5))}))
    det_args = {"quantity": "gas_lel", "setpoint": 25.0, "window_s": 120.0, "min_points": 4, "max_points": 16}
    fed = feed(RiseRate(GAS, **det_args), stream(GAS, readings), sorted(rng.choice(900, 40, replace=False).tolist()))
    history: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 2: []}
    for i, r in enumerate(readings):
        got = fed.row_score[(i, 0)]
        own = history[r.sensor]
        if own and r.t_s <= own[-1][0]:  # late: not learned, scores 0
            assert got == 0.0
            continue
        own.append((r.t_s, r.values["gas_lel"]))
        window = [(ts, v) for ts, v in own[-16:] if ts > r.t_s - 120.0]
        x = np.array([(ts - r.t_s) / 60 for ts, _ in window])
        v = np.array([v for _, v in window])
        expected = 0.0
        if len(window) >= 4 and -x.min() * 60 >= 60 and v[-1] < 25.0:
            slope = float(((x - x.mean()) * (v - v.mean())).sum() / ((x - x.mean()) ** 2).sum())
            expected = max(slope, 0.0) / 25.0 * 100.0
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_rise_rate_is_quiet_when_flat_falling_or_above_the_set_point() -> None:
    det = RiseRate(GAS, quantity="gas_lel", setpoint=25, window_s=120)
    flat = lel([1.2] * 12)
    falling = lel([20.0 - i for i in range(12)], sensor=0)
    for readings in (flat, falling):
        fed = feed(RiseRate(GAS, quantity="gas_lel", setpoint=25, window_s=120), stream(GAS, readings))
        assert max(scores_of(fed, readings, 0)) == pytest.approx(0.0, abs=1e-12)
    above = lel([26.0 + i for i in range(12)])
    assert max(scores_of(feed(det, stream(GAS, above)), above, 0)) == 0.0


def test_rise_rate_uses_the_catalog_set_point_per_sensor() -> None:
    readings = [r for i in range(12) for r in (R(0, i * 10, {"gas_lel": 1.0 + i}), R(1, i * 10, {"gas_lel": 1.0 + i}))]
    fed = feed(RiseRate(GAS, quantity="gas_lel", setpoint_limit="gas_lel.high"), stream(GAS, readings))
    assert max(scores_of(fed, readings, 0)) == pytest.approx(6.0 / 25 * 100)  # +6 %LEL/min against 25
    assert max(scores_of(fed, readings, 1)) == 0.0  # sensor 1 has no set point


@pytest.mark.parametrize(("params", "name"), [
    ({"setpoint": 25, "setpoint_limit": "gas_lel.high"}, "setpoint"),
    ({}, "setpoint"),
    ({"setpoint": 25, "window_s": 0}, "window_s"),
    ({"setpoint": 25, "min_points": 2}, "min_points"),
    ({"setpoint_limit": "pressure_kpa.high"}, "setpoint_limit"),
])
def test_rise_rate_rejects_bad_parameters(params: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_detector("rise_rate", GAS, {"quantity": "gas_lel", **params})


# -- idle_in_hours --------------------------------------------------------------------------------
POWER = DetectorContext(quantities=("power_kw",), expected_period_s=60.0, utc_offset_s=8 * 3600)


def minutes_from(local: datetime, values: list[float]) -> list[R]:
    t0 = local.timestamp()
    return [R(0, t0 + 60 * i, {"power_kw": v}) for i, v in enumerate(values)]


def test_idle_fires_when_consumption_collapses_in_working_hours() -> None:
    readings = minutes_from(datetime(2026, 12, 1, 9, 0, tzinfo=CST), [100.0] * 10 + [0.0, 0.0, 5.0, 100.0])  # Tuesday
    fed = feed(WorkingHoursIdle(POWER, quantity="power_kw", warmup=10), stream(POWER, readings))
    # level 100 after ten readings; then 1 - 0/100, 1 - 0/100 (not learned: protected), 1 - 5/100, 0
    assert scores_of(fed, readings, 0) == pytest.approx([0.0] * 10 + [1.0, 1.0, 0.95, 0.0])


def test_idle_is_quiet_outside_working_hours_and_on_sundays() -> None:
    evening = minutes_from(datetime(2026, 12, 1, 16, 50, tzinfo=CST), [100.0] * 10 + [0.0] * 5)  # 17:00 on
    sunday = minutes_from(datetime(2026, 12, 6, 10, 0, tzinfo=CST), [100.0] * 10 + [0.0] * 5)
    for readings in (evening, sunday):
        fed = feed(WorkingHoursIdle(POWER, quantity="power_kw", warmup=10), stream(POWER, readings))
        assert max(scores_of(fed, readings, 0)) == 0.0


def test_idle_without_protection_learns_the_collapse() -> None:
    readings = minutes_from(datetime(2026, 12, 1, 9, 0, tzinfo=CST), [100.0] * 10 + [0.0] * 3)
    fed = feed(WorkingHoursIdle(POWER, quantity="power_kw", warmup=10, alpha=0.5, protect=False), stream(POWER, readings))
    # level 100 -> 50 -> 25: the third zero still scores 1 (0 / anything), but the level moved
    assert scores_of(fed, readings, 0)[10:] == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.parametrize(("params", "name"), [({"start_hour": 9, "end_hour": 9}, "end_hour"),
                                              ({"end_hour": 25}, "end_hour"), ({"weekdays": [7]}, "weekdays"),
                                              ({"alpha": 0}, "alpha"), ({"warmup": 0}, "warmup")])
def test_idle_rejects_bad_parameters(params: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_detector("idle_in_hours", POWER, {"quantity": "power_kw", **params})


# -- roads ---------------------------------------------------------------------------------------
def test_downstream_stations_follow_km_posts_within_a_road() -> None:
    sites = ("GSEXP-S02", "GSEXP-S01", "GSEXP-S01", "DGAVE-S01", "GSEXP-S02", "X")
    names = ("广深高速 第2段 K6.4 (km 6.4)", "K1.6", "K3.2", "东莞大道 K0.8", "K8.0", "no km post")
    assert downstream_stations(sites, names).tolist() == [4, 2, 0, NONE, NONE, NONE]
    assert km_post("广深高速 第1段 K12.8 (Guangshen Expwy section 1, km 12.8)") == 12.8


# -- traffic_pair ---------------------------------------------------------------------------------
ROAD = DetectorContext(
    quantities=("speed_kmh", "flow_vph", "occupancy_pct"), expected_period_s=30.0,
    site_ids=("R-S01", "R-S01", "R-S02"), site_names=("K1.0", "K2.0", "K3.0"),
)
NORMAL = {"speed_kmh": 80.0, "flow_vph": 3000.0, "occupancy_pct": 10.0}


def road(incident: dict[int, dict[str, float]], start_s: float = 300, end_s: float = 600, silent: int | None = None) -> list[R]:
    """Stations 0, 1, 2 every 30 s in that arrival order; from start_s, `incident` overrides values."""
    out = []
    for t in range(0, int(end_s), 30):
        for s in range(3):
            if silent == s and t >= start_s:
                continue
            values = {**NORMAL, **(incident.get(s, {}) if t >= start_s else {})}
            out.append(R(s, t, values))
    return out


OCC = 2  # quantity index of occupancy: the scored rows


def test_traffic_pair_fires_between_a_queued_station_and_an_empty_one_and_persists() -> None:
    readings = road({1: {"occupancy_pct": 40.0, "speed_kmh": 30.0}, 2: {"occupancy_pct": 4.0, "speed_kmh": 90.0}})
    fed = feed(TrafficPair(ROAD), stream(ROAD, readings))
    # station 1 at t >= 300 s: OCCDF against station 2's previous reading (10 %, 80 km/h at 270 s) is 30 >= 10,
    # OCCRDF 0.75 >= 0.5, 30 <= 0.8 x 80; later against 4 %, 90 km/h: still true. Score 1 + (t - 300) / 30.
    assert scores_of(fed, readings, 1, OCC) == pytest.approx([0.0] * 10 + [1.0 + k for k in range(10)])
    # station 0 is upstream of the queue (OCCDF 10 - 40 < 0); station 2 is the road's last station
    assert max(scores_of(fed, readings, 0, OCC)) == 0.0
    assert max(scores_of(fed, readings, 2, OCC)) == 0.0


def test_traffic_pair_speed_rule_rejects_occupancy_without_a_slowdown() -> None:
    readings = road({1: {"occupancy_pct": 40.0}, 2: {"occupancy_pct": 4.0}})  # speeds stay 80
    fed = feed(TrafficPair(ROAD), stream(ROAD, readings))
    assert max(scores_of(fed, readings, 1, OCC)) == 0.0


def test_traffic_pair_is_quiet_on_a_road_wide_slowdown() -> None:
    jam = {"occupancy_pct": 40.0, "speed_kmh": 30.0}
    readings = road({0: jam, 1: jam, 2: jam})
    fed = feed(TrafficPair(ROAD), stream(ROAD, readings))
    # the jam's front passes the test for one interval (each station against its neighbour's
    # previous, still free-flowing reading), then never again: no persistence
    for station in (0, 1):
        got = scores_of(fed, readings, station, OCC)
        assert got[10] == 1.0 and max(got[:10] + got[11:]) == 0.0
    assert max(scores_of(fed, readings, 2, OCC)) == 0.0


def test_traffic_pair_needs_a_fresh_downstream_reading() -> None:
    readings = road({1: {"occupancy_pct": 40.0, "speed_kmh": 30.0}}, silent=2)  # station 2 stops at 300 s
    fed = feed(TrafficPair(ROAD), stream(ROAD, readings))
    # station 2's last reading (270 s) is within max_lag_s (2 x 30 s) of 300 and 330 only
    assert scores_of(fed, readings, 1, OCC)[10:] == pytest.approx([1.0, 2.0] + [0.0] * 8)


def test_traffic_pair_does_not_depend_on_batch_boundaries() -> None:
    rng = np.random.default_rng(2)
    readings = road({1: {"occupancy_pct": 40.0, "speed_kmh": 30.0}, 2: {"occupancy_pct": 4.0, "speed_kmh": 90.0}},
                    end_s=1200)
    readings = [R(r.sensor, r.t_s + float(rng.integers(0, 20)), dict(r.values)) for r in readings]  # jittered times
    whole = stream(ROAD, readings)
    reference = feed(TrafficPair(ROAD), whole)
    assert max(reference.row_score.values()) >= 3.0
    n = len(readings)
    for cuts in ([n // 3], sorted(rng.choice(n, 25, replace=False).tolist()), list(range(1, n))):
        assert feed(TrafficPair(ROAD), whole, cuts).row_score == reference.row_score


@pytest.mark.parametrize(("params", "name"), [({"occrdf": 1.5}, "occrdf"), ({"occdf_pct": -1}, "occdf_pct"),
                                              ({"speed_ratio": 0}, "speed_ratio"), ({"occupancy": "occ"}, "quantity"),
                                              ({"max_lag_s": -5}, "max_lag_s")])
def test_traffic_pair_rejects_bad_parameters(params: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_detector("traffic_pair", ROAD, params)
