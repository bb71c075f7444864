"""Data-quality detectors: stuck, no_signal, out_of_range, counter_decrease.

Expectations come from the definitions in each module's docstring, worked out by
hand for these series.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.base import DetectorContext
from detectors.counter_decrease import CounterDecrease
from detectors.no_signal import NoSignal
from detectors.out_of_range import OutOfRange
from detectors.registry import build_detector
from detectors.stuck import StuckValue
from tests.unit.detector_streams import R, feed, scores_of, stream

ONE = DetectorContext(quantities=("value",), quantity_ranges=((-1e6, 1e6),), expected_period_s=60.0)
# a kind of two catalog sensors: the clock's rank is capped at 1 (the newer one), see no_signal
PAIR = DetectorContext(quantities=("value",), expected_period_s=60.0, sensor_ids=("a", "b"))
TWO = DetectorContext(quantities=("a", "b"), quantity_ranges=((0.0, 100.0), (0.0, 10.0)), expected_period_s=60.0)


def series(values: list[float], sensor: int = 0, period_s: float = 60.0, flag: str = "N") -> list[R]:
    return [R(sensor, i * period_s, {"value": v}, flag) for i, v in enumerate(values)]


# -- stuck ------------------------------------------------------------------------------
def test_stuck_scores_run_length_over_n_and_fires_on_the_nth_repeat() -> None:
    readings = series([3.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 8.0])
    fed = feed(StuckValue(ONE, quantity="value", run_length=5), stream(ONE, readings))
    # run lengths 1, 1, 2, 3, 4, 5, 6, 1 -> 0, 0, 2/5, 3/5, 4/5, 1, 6/5, 0
    assert scores_of(fed, readings, 0) == pytest.approx([0, 0, 0.4, 0.6, 0.8, 1.0, 1.2, 0])


def test_stuck_stays_quiet_on_a_live_signal() -> None:
    rng = np.random.default_rng(1)
    readings = series(list(np.round(50 + rng.normal(0, 2, 200), 1)))
    fed = feed(StuckValue(ONE, quantity="value", run_length=5), stream(ONE, readings))
    assert max(scores_of(fed, readings, 0)) < 1.0


@pytest.mark.parametrize("tolerance", [0.0, 0.01])
def test_stuck_is_quiet_at_the_floor_and_fires_above_it(tolerance: float) -> None:
    # a gas detector in clean air reads 0 %LEL for a long time, then freezes at 4.2
    readings = series([0.0] * 30 + [4.2] * 6)
    fed = feed(StuckValue(ONE, quantity="value", run_length=5, tolerance=tolerance, floor=0.0), stream(ONE, readings))
    got = scores_of(fed, readings, 0)
    assert max(got[:30]) == 0.0
    assert got[30:] == pytest.approx([0, 0.4, 0.6, 0.8, 1.0, 1.2])
    without = feed(StuckValue(ONE, quantity="value", run_length=5, tolerance=tolerance), stream(ONE, readings))
    assert max(scores_of(without, readings, 0)[:30]) == 6.0  # 30 readings at 0: run 30 / 5


def test_stuck_tolerance_catches_a_collapsed_variance() -> None:
    readings = series([10.0, 10.004, 9.998, 10.003, 10.0, 10.5])
    exact = feed(StuckValue(ONE, quantity="value", run_length=4), stream(ONE, readings))
    band = feed(StuckValue(ONE, quantity="value", run_length=4, tolerance=0.01), stream(ONE, readings))
    assert max(scores_of(exact, readings, 0)) == 0.0
    # band [9.998, 10.004] spans 0.006 <= 0.01 for five readings; 10.5 leaves it
    assert scores_of(band, readings, 0) == pytest.approx([0, 0.5, 0.75, 1.0, 1.25, 0])


def test_stuck_ignores_flagged_readings_and_keeps_sensors_apart() -> None:
    readings = [R(0, 0, {"value": 1.0}), R(1, 0, {"value": 1.0}), R(0, 60, {"value": 1.0}, "M"),
                R(1, 60, {"value": 1.0}), R(0, 120, {"value": 1.0})]
    fed = feed(StuckValue(ONE, quantity="value", run_length=2), stream(ONE, readings))
    assert math.isnan(scores_of(fed, readings, 0)[1])  # the M reading is not scored
    assert scores_of(fed, readings, 0)[2] == 1.0  # second N reading of sensor 0: run 2
    assert scores_of(fed, readings, 1) == [0.0, 1.0]


@pytest.mark.parametrize(("params", "name"), [({"run_length": 1}, "run_length"), ({"tolerance": -0.1}, "tolerance"),
                                              ({"run_length": 2.5}, "run_length")])
def test_stuck_rejects_bad_parameters(params: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        StuckValue(ONE, quantity="value", **params)  # type: ignore[arg-type]


# -- no_signal ------------------------------------------------------------------------------
def two_sensors(stop_s: float, end_s: float, resume_s: float | None = None) -> list[R]:
    """Sensor 0 every minute until end_s; sensor 1 every minute until stop_s (and again at resume_s)."""
    out = []
    for t in range(0, int(end_s) + 1, 60):
        out.append(R(0, t, {"value": 1.0}))
        if t <= stop_s or (resume_s is not None and t >= resume_s):
            out.append(R(1, t + 1, {"value": 1.0}))
    return out


def test_no_signal_reports_silence_in_periods_at_each_tick() -> None:
    readings = two_sensors(stop_s=120, end_s=600)
    fed = feed(NoSignal(PAIR, learn_staleness=False, warmup_readings=0), stream(PAIR, readings))
    # sensor 1 last spoke at 121 s; tick T is checked when sensor 0's reading at T arrives.
    # silence (T - 121) / 60 >= 2 from T = 300 on (240 gives 1.98)
    expected = [(1, t * 1000, (t - 121) / 60) for t in range(300, 601, 60)]
    assert [(s, t) for s, t, _ in fed.silent] == [(s, t) for s, t, _ in expected]
    assert [x for _, _, x in fed.silent] == pytest.approx([x for _, _, x in expected])
    assert set(fed.row_score.values()) == {0.0}  # every reading scores 0


def test_no_signal_clears_when_the_sensor_speaks_again() -> None:
    readings = two_sensors(stop_s=120, end_s=600, resume_s=480)
    det = NoSignal(PAIR, learn_staleness=False, warmup_readings=0)
    whole = stream(PAIR, readings)
    scores = det.score_and_update(whole.take(np.argsort(whole.sensor_idx, kind="stable")))
    sensor, times = scores.sensors_and_times(whole.take(np.argsort(whole.sensor_idx, kind="stable")))
    ones = [(int(t), float(s), int(r)) for t, s, r, x in zip(times, scores.score, scores.rows, sensor, strict=True) if x == 1]
    # per sensor in event-time order: silence entries 300..480, then its own readings (score 0)
    silent = [(t, s) for t, s, r in ones if r < 0]
    assert [t for t, _ in silent] == [300_000, 360_000, 420_000, 480_000]
    after = [s for t, s, r in ones if r >= 0 and t > 480_000]
    assert after and set(after) == {0.0}
    times_in_order = [t for t, _, _ in ones]
    assert times_in_order == sorted(times_in_order)


def test_no_signal_flags_a_catalog_sensor_that_never_reports() -> None:
    ctx = DetectorContext(quantities=("value",), expected_period_s=60.0, sensor_ids=("a", "b", "c"))
    readings = [R(s, t, {"value": 1.0}) for t in range(0, 301, 60) for s in (0, 1)]
    fed = feed(NoSignal(ctx, unheard_after_periods=2), stream(ctx, readings))
    # sensor 2 is silent since the start of observation (t = 0): 2 periods at T = 120
    assert [(s, t) for s, t, _ in fed.silent] == [(2, t * 1000) for t in (120, 180, 240, 300)]


def test_no_signal_learns_a_slower_period() -> None:
    readings = []
    for t in range(0, 721, 60):
        readings.append(R(0, t, {"value": 1.0}))
        if t % 180 == 0:
            readings.append(R(1, t + 1, {"value": 1.0}))
    fixed = feed(NoSignal(PAIR, learn_period=False, learn_staleness=False, warmup_readings=0), stream(PAIR, readings))
    learned = feed(NoSignal(PAIR, learn_staleness=False, warmup_readings=0), stream(PAIR, readings))
    # sensor 1 speaks at 1, 181, 361, 541, 721 s; at ticks 180, 360, 540, 720 it has been
    # silent 179 s = 2.98 expected periods (at 480: 119 s, 1.98 periods, not yet)
    assert [(s, t) for s, t, _ in fixed.silent] == [(1, t * 1000) for t in (180, 360, 540, 720)]
    # learned from three readings on (1, 181, 361): 180 s, so 179 s is no longer silence
    assert [(s, t) for s, t, _ in learned.silent] == [(1, 180_000), (1, 360_000)]


def test_no_signal_does_not_depend_on_batch_boundaries() -> None:
    rng = np.random.default_rng(4)
    readings = []
    for t in range(0, 3600, 60):
        for s in range(6):
            if not (s == 2 and 600 < t < 1500) and not (s == 4 and t > 2400):
                readings.append(R(s, t + int(rng.integers(0, 40)), {"value": 1.0}))
    whole = stream(ONE, readings)
    reference = feed(NoSignal(ONE), whole)
    assert {s for s, _, _ in reference.silent} == {2, 4}
    n = len(readings)
    for cuts in ([n // 2], sorted(rng.choice(n, 20, replace=False).tolist()), list(range(1, n))):
        got = feed(NoSignal(ONE), whole, cuts)
        assert got.silent == reference.silent
        assert got.row_score == reference.row_score


@pytest.mark.parametrize(("params", "name"), [({"report_after_periods": 0.5}, "report_after_periods"),
                                              ({"learn_period": "yes"}, "learn_period")])
def test_no_signal_rejects_bad_parameters(params: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_detector("no_signal", ONE, params)


# -- out_of_range -----------------------------------------------------------------------------
def test_out_of_range_scores_distance_outside_in_band_widths() -> None:
    readings = series([100.0, 160.0, -15.0, 150.0])
    fed = feed(OutOfRange(ONE, quantity="value", lower=0, upper=150), stream(ONE, readings))
    assert scores_of(fed, readings, 0) == pytest.approx([0.0, 1 + 10 / 150, 1 + 15 / 150, 0.0])


def test_out_of_range_uses_per_sensor_catalog_limits() -> None:
    ctx = DetectorContext(quantities=("value",), quantity_ranges=((0.0, 1000.0),),
                          limits=({"value.high": 50.0}, {}))
    readings = [R(0, 0, {"value": 60.0}), R(1, 0, {"value": 60.0}), R(2, 0, {"value": 60.0})]
    fed = feed(OutOfRange(ctx, quantity="value", upper_limit="value.high"), stream(ctx, readings))
    assert scores_of(fed, readings, 0) == pytest.approx([1 + 10 / 50])
    assert scores_of(fed, readings, 1) == [0.0]  # no limit: the physical range
    assert scores_of(fed, readings, 2) == [0.0]  # beyond the catalog: no limit


def test_out_of_range_takes_the_worst_quantity_of_a_reading_and_skips_flagged_ones() -> None:
    readings = [R(0, 0, {"a": 50.0, "b": 12.0}), R(0, 60, {"a": 120.0, "b": 5.0}), R(0, 120, {"a": 500.0}, "T")]
    fed = feed(OutOfRange(TWO), stream(TWO, readings))
    assert fed.row_score == pytest.approx({(0, 0): 1 + 2 / 10, (1, 0): 1 + 20 / 100})


@pytest.mark.parametrize(("params", "name"), [
    ({"quantity": "value", "lower": 5.0, "upper": 1.0}, "lower/upper"),
    ({"lower": 0.0}, "lower/upper"),
    ({"quantity": "value", "upper_limit": "other.high"}, "upper_limit"),
    ({"quantity": "nope"}, "quantity"),
])
def test_out_of_range_rejects_bad_parameters(params: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_detector("out_of_range", ONE, params)


# -- counter_decrease ---------------------------------------------------------------------------
def test_counter_decrease_scores_the_drop_once() -> None:
    readings = series([100.0, 100.0, 130.5, 40.5, 41.0, 41.0, 39.0])
    fed = feed(CounterDecrease(ONE, quantity="value"), stream(ONE, readings))
    assert scores_of(fed, readings, 0) == pytest.approx([0, 0, 0, 90.0, 0, 0, 2.0])


def test_counter_decrease_ignores_late_readings() -> None:
    readings = [R(0, 0, {"value": 10.0}), R(0, 120, {"value": 20.0}), R(0, 60, {"value": 15.0}), R(0, 180, {"value": 21.0})]
    fed = feed(CounterDecrease(ONE, quantity="value"), stream(ONE, readings))
    assert scores_of(fed, readings, 0) == [0.0, 0.0, 0.0, 0.0]  # the late 15.0 is not a drop


def test_counter_decrease_rejects_an_unknown_quantity() -> None:
    with pytest.raises(ValueError, match="quantity"):
        CounterDecrease(ONE, quantity="energy_kwh")
