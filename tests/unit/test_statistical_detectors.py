"""The statistical detectors do what their docstrings claim, on hand-made series."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.base import DetectorContext, FloatArray
from detectors.columns import batch_from_columns
from detectors.cusum import TwoSidedCusum
from detectors.ensemble import Ensemble
from detectors.ewma_z import EwmaZScore
from detectors.novelty import day_phase, mark_seen, n_words, phase_key, quantize, roll
from detectors.rate_of_change import RateOfChange
from detectors.registry import DETECTORS
from detectors.robust_z import RobustZScore
from detectors.seasonal import SeasonalBaseline, hour_of_week
from detectors.series import SeriesDetector
from detectors.stats import gaussian_nines, tail_nines

CTX = DetectorContext(quantities=("value",), utc_offset_s=0)
MINUTE_MS = 60_000
T0_MS = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC, a Tuesday


def run(detector: SeriesDetector, values: FloatArray, period_ms: int = MINUTE_MS, t0_ms: int = T0_MS) -> FloatArray:
    """Scores of one sensor's series, fed in one batch (rounds step it reading by reading)."""
    n = values.shape[0]
    scores = detector.score_and_update(batch_from_columns(np.zeros(n), t0_ms + period_ms * np.arange(n), values))
    out = np.zeros(n)
    out[scores.rows] = scores.score
    return out


def noise(n: int, seed: int = 0) -> FloatArray:
    return np.random.default_rng(seed).normal(0.0, 1.0, n)


def test_ewma_z_matches_its_definition_on_a_step() -> None:
    values = np.r_[np.full(50, 10.0) + 0.1 * noise(50), np.full(5, 12.0)]
    z = run(EwmaZScore(CTX, quantity="value", alpha=0.1, warmup=30), values)
    # reference recursion, one reading at a time
    mean, var = values[0], 0.0
    for i in range(1, 51):
        a = max(0.1, 1.0 / (i + 1)) if i < 50 else 0.1
        if i == 50:
            expected = abs(values[50] - mean) / np.sqrt(var)
        d = values[i] - mean
        mean, var = mean + a * d, (1 - a) * (var + a * d * d)
    assert z[:30].max() == 0.0  # warm-up
    assert z[50] == pytest.approx(expected, rel=1e-6)
    assert z[50] > 10 * z[30:50].max() / 3  # the step is far above the noise's z


def test_cusum_catches_a_small_sustained_shift_that_z_misses() -> None:
    values = np.r_[noise(400, 1), noise(100, 2) + 1.0]  # +1 sigma from reading 400
    cusum = run(TwoSidedCusum(CTX, quantity="value", alpha=0.01, k=0.5), values)
    z = run(EwmaZScore(CTX, quantity="value", alpha=0.01), values)
    # drift per reading is about shift - k = 0.5 sigma: after 100 readings ~50
    assert cusum[450:].max() > 3 * cusum[100:400].max()
    assert z[400:].max() < 1.5 * z[100:400].max()  # no single reading stands out


def test_cusum_is_two_sided() -> None:
    values = np.r_[noise(300, 3), noise(100, 4) - 1.0]
    cusum = run(TwoSidedCusum(CTX, quantity="value"), values)
    assert cusum[350:].max() > 3 * cusum[100:300].max()


def test_cusum_side_up_ignores_the_return_to_normal_after_a_rise() -> None:
    """After a leak of a few minutes (detectors in alarm report every second) the slow mean
    sits above clean air: the downward sum climbs while the readings are back at normal,
    which a rise-only route must not see."""
    clean = 1.0 + 0.3 * noise(300, 5)
    leak = np.r_[np.linspace(1.0, 12.0, 6), 12.0 + 0.5 * noise(200, 6), np.linspace(12.0, 1.0, 6)]
    values = np.r_[clean, leak, 1.0 + 0.3 * noise(300, 7)]
    after = slice(300 + leak.shape[0], None)
    up = run(TwoSidedCusum(CTX, quantity="value", min_sd=1.0, side="up"), values)
    down = run(TwoSidedCusum(CTX, quantity="value", min_sd=1.0, side="down"), values)
    both = run(TwoSidedCusum(CTX, quantity="value", min_sd=1.0), values)
    assert up[300:300 + leak.shape[0]].max() > 30  # the rise itself
    assert np.all(np.diff(up[after]) <= 0.0)  # clean air after it adds nothing: the sum only drains
    assert up[-60:].max() == 0.0
    assert down[after].max() > 30  # the downward sum is what a two-sided score reports
    np.testing.assert_array_equal(both, np.maximum(up, down))


def test_robust_z_ignores_a_single_outlier_in_its_baseline() -> None:
    base = 10.0 + 0.1 * noise(40, 5)
    values = np.r_[base[:20], 1e6, base[20:], 10.5]  # outlier inside the window, then a 5-sigma-ish reading
    z = run(RobustZScore(CTX, quantity="value", window=30), values)
    window = values[-31:-1]
    median = np.median(window)
    mad = 1.4826 * np.median(np.abs(window - median))
    assert z[-1] == pytest.approx(abs(10.5 - median) / mad, rel=1e-6)
    # a mean/std baseline would be ruined by the 1e6 reading
    assert z[-1] > 3.0


def test_robust_z_scores_zero_until_the_window_is_full() -> None:
    z = run(RobustZScore(CTX, quantity="value", window=10), np.r_[np.ones(10), 100.0])
    assert z[:10].max() == 0.0 and z[10] > 1e6  # flat window: MAD 0, huge finite score
    assert np.isfinite(z).all()


def test_rate_of_change_uses_elapsed_time() -> None:
    # the same 10-unit step after 10x the usual gap is a 10x smaller rate
    n = 60
    t = T0_MS + MINUTE_MS * np.arange(n + 2)
    t[-1] = t[-2] + 10 * MINUTE_MS
    values = np.r_[np.arange(n, dtype=float) * 0.1 + 0.01 * noise(n, 6), 100.0, 110.0]
    det = RateOfChange(CTX, quantity="value")
    scores = det.score_and_update(batch_from_columns(np.zeros(n + 2), t, values)).score
    fast = scores[-2]  # jump of ~94 in one minute
    slow = scores[-1]  # 10 more over ten minutes: rate 1/min, ~10x the usual 0.1/min
    assert fast > 50 * slow > 0


def test_seasonal_learns_a_daily_pattern_and_flags_an_off_hours_spike() -> None:
    hours = np.arange(24 * 7 * 4)  # four weeks, hourly
    rush = np.where((hours % 24 >= 7) & (hours % 24 <= 9), 100.0, 10.0)
    values = rush + noise(hours.size, 7)
    spike_at = hours.size - 24 + 3  # 03:00 on the last day
    values[spike_at] = 100.0  # a rush-hour level at night
    det = SeasonalBaseline(CTX, quantity="value", weekly=False, warmup=5)
    z = run(det, values, period_ms=3_600_000, t0_ms=0)  # t0 = 1970-01-01 00:00 UTC
    last_week = slice(hours.size - 168, hours.size)
    rush_hours = (hours % 24 >= 7) & (hours % 24 <= 9)
    assert z[spike_at] > 20
    assert z[last_week][rush_hours[last_week]].max() < 6  # the rush itself is normal


def test_hour_of_week_slots() -> None:
    monday_0800_utc = np.array([4 * 86_400_000 + 8 * 3_600_000])  # 1970-01-05 was a Monday
    assert hour_of_week(monday_0800_utc, 0)[0] == 8
    assert hour_of_week(monday_0800_utc, 8 * 3600)[0] == 16  # the city's clock
    assert hour_of_week(monday_0800_utc - 86_400_000, 0)[0] == 6 * 24 + 8  # Sunday
    assert hour_of_week(monday_0800_utc, 0, weekly=False)[0] == 8


def test_ensemble_scores_a_spike_once_in_0_to_1() -> None:
    values = np.r_[10 + noise(600, 8), 40.0, 10 + noise(300, 9)]
    s = run(Ensemble(CTX, quantity="value", warmup_s=0), values)
    assert ((s >= 0) & (s <= 1)).all() and np.isfinite(s).all()
    assert s[600] == s.max() > 0.5  # a 30-sigma spike: tail probability far below 1e-12
    assert s[601:].max() < s[600]  # later readings do not re-alarm at that level


def test_ensemble_reports_new_peaks_only() -> None:
    values = 10 + noise(2000, 10)
    s = run(Ensemble(CTX, quantity="value", warmup_s=0), values)
    # on plain noise, new peaks are rare: records of a roughly stationary score
    assert np.count_nonzero(s) < 0.05 * values.size


def test_ensemble_stays_quiet_for_refractory_readings_after_a_report() -> None:
    # a growing anomaly: spikes of rising height, 3 readings apart
    values = np.r_[10 + noise(600, 11), 25.0, 10.0, 10.0, 60.0, 10.0, 10.0, 400.0, 10 + noise(300, 12)]
    eager = run(Ensemble(CTX, quantity="value", refractory=0, warmup_s=0), values)
    quiet = run(Ensemble(CTX, quantity="value", warmup_s=0), values)  # refractory = 1 / alpha = 20 readings
    assert eager[600] > 0 and eager[603] > eager[600] and eager[606] > eager[603]  # each a new peak
    # the refractory rule only removes reports: levels and peaks do not depend on it
    reported = np.flatnonzero(quiet)
    np.testing.assert_array_equal(quiet[reported], eager[reported])
    assert 600 in reported
    assert np.count_nonzero(quiet[601:621]) == 0  # 603 and 606 fall within 20 readings of 600
    gaps = np.diff(reported)
    assert (gaps > 20).all()


def test_ensemble_reports_a_far_larger_anomaly_within_the_refractory_of_a_weak_one() -> None:
    # a 10-sigma reading, then 5 readings later a 390-sigma one: the second is a new event
    values = np.r_[10 + noise(600, 11), 20.0, 10.0, 10.0, 10.0, 10.0, 400.0, 10 + noise(300, 12)]
    eager = run(Ensemble(CTX, quantity="value", refractory=0, warmup_s=0), values)
    quiet = run(Ensemble(CTX, quantity="value", warmup_s=0), values)
    nines = 12 * eager / (1 - eager)  # score = nines / (nines + 12)
    assert nines[605] > 2 * nines[600] > 0  # the premise: more than twice the weak report's nines
    assert quiet[600] > 0 and quiet[605] == eager[605]
    assert np.count_nonzero(quiet[606:626]) == 0  # and the refractory restarts from the large one


def test_ensemble_learns_for_warmup_s_of_event_time_before_it_reports() -> None:
    values = np.r_[10 + noise(600, 8), 40.0, 10 + noise(300, 9)]  # a reading a minute: the spike at 10 h
    assert run(Ensemble(CTX, quantity="value"), values).max() == 0.0  # default: two days of learning
    assert run(Ensemble(CTX, quantity="value", warmup_s=9 * 3600), values)[600] > 0.5
    assert run(Ensemble(CTX, quantity="value", warmup_s=11 * 3600), values)[:11 * 60].max() == 0.0


def test_ensemble_expects_a_jump_that_happens_every_day_at_that_time() -> None:
    # every day 20 -> 75 at 09:00 and back at 17:00, a reading every 5 minutes, for 10 days;
    # on day 8 the same jump at 03:00, for an hour
    per_day, hour = 288, 12
    day = np.r_[np.full(9 * hour, 20.0), np.full(8 * hour, 75.0), np.full(7 * hour, 20.0)]
    values = np.tile(day, 10) + noise(10 * per_day, 3)
    odd = 8 * per_day + 3 * hour
    values[odd:odd + hour] += 55.0
    s = run(Ensemble(CTX, quantity="value"), values, 300_000, 1_699_920_000_000)  # from midnight UTC
    usual = [d * per_day + 9 * hour + k for d in range(2, 10) for k in range(3)]  # after the learning days
    assert s[odd:odd + 3].max() > 0.5  # the jump at an hour it never happens: far in the tail
    assert s[usual].max() < 0.5 * s[odd:odd + 3].max()  # the nine o'clock jump is what the day expects


def test_quantize_bins_by_the_running_min_max() -> None:
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    out, tmp = np.empty(3), np.empty(3)
    assert quantize(np.array([5.0, 0.0, 7.0]), lo, hi, 4, out, tmp).tolist() == [0, 0, 0]  # one reading: no span
    quantize(np.array([15.0, 0.0, 7.0]), lo, hi, 4, out, tmp)  # spans [5, 15], [0, 0], [7, 7]
    q = quantize(np.array([7.4, 0.0, 6.0]), lo, hi, 4, out, tmp)
    # 4 bins of [5, 15] are 2.5 wide: 7.4 is in bin 0; the flat sensor stays in 0; [6, 7]: 6 is its min
    assert q.tolist() == [0, 0, 0]
    q = quantize(np.array([12.5, 0.0, 7.0]), lo, hi, 4, out, tmp)
    assert q.tolist() == [3, 0, 3]  # 12.5 starts bin 3; the max is in the last bin, not in bin 4
    assert lo.tolist() == [5.0, 0.0, 6.0] and hi.tolist() == [15.0, 0.0, 7.0]


def test_roll_keeps_the_last_pattern_bins_as_a_number() -> None:
    key = np.zeros(1)
    for q in (1, 2, 3):
        k = roll(key, np.array([q]), 4, 2)
    assert k[0] == key[0] == 2 * 4 + 3  # digits (2, 3) in base 4: the 1 has dropped out


def test_test_and_set_reports_each_key_new_once_per_sensor() -> None:
    seen = np.zeros((3, n_words(16, 3)), np.uint64)  # 4096 keys: 64 words
    out = np.empty(2, np.bool_)
    sensors = np.array([0, 2])
    assert mark_seen(seen, sensors, np.array([5, 4095]), out).tolist() == [True, True]
    assert mark_seen(seen, sensors, np.array([5, 64 * 7 + 5]), out).tolist() == [False, True]
    assert mark_seen(seen, sensors, np.array([4095, 5]), out).tolist() == [True, True]  # per sensor
    assert seen[1].sum() == 0  # untouched
    assert int(seen[0, 0]) == 1 << 5 and int(seen[2, 7]) == 1 << 5 and int(seen[2, 63]) == 1 << 63


def test_ensemble_scores_a_new_pattern_of_familiar_levels() -> None:
    # a rising saw 0,1,2,3 repeated, then the same levels falling: the values, the step sizes
    # and the level are all familiar, only the order (the pattern of 3 readings) is new
    rise = np.tile([0.0, 1.0, 2.0, 3.0], 200)
    fall = np.tile([3.0, 2.0, 1.0, 0.0], 50)
    # refractory 0: the noise-free saw sets small new peaks now and then, which would mute reading 800;
    # phases 1: at a reading a minute each new hour would be new to the day-phase memory
    s = run(Ensemble(CTX, quantity="value", refractory=0, phases=1, warmup_s=0), np.r_[rise, fall])
    # 6 new patterns in a row: (2,3,3) (3,3,2) (3,2,1) (2,1,0) (1,0,3) (0,3,2), then only (3,2,1) ... again
    assert 801 <= int(np.argmax(s)) < 806 and s.max() > 0.5  # reported at once, far in the tail...
    assert s.max() > 5 * s[200:800].max()  # ...far above anything the familiar saw reported
    assert s[810:].max() == 0.0  # the falling saw is familiar now


def test_day_phase_is_the_part_of_the_local_day() -> None:
    day_ms = 86_400_000
    t = np.array([0, 3_599_999, 3_600_000, 23 * 3_600_000 + 1, day_ms + 7_200_000, -1])
    assert day_phase(t, 0, 24).tolist() == [0, 0, 1, 23, 2, 23]  # the UTC hour, before 1970 too
    assert day_phase(t, 3600, 24).tolist() == [1, 1, 2, 0, 3, 0]  # UTC+1
    assert day_phase(t, 0, 8).tolist() == [0, 0, 0, 7, 0, 7]  # 3-hour blocks
    assert day_phase(t, 0, 1).tolist() == [0] * 6


def test_phase_key_puts_the_phase_in_front_of_the_last_bins() -> None:
    key = np.array([2 * 16 * 16 + 5 * 16 + 7, 15])  # bins (2, 5, 7) and (0, 0, 15) in base 16
    assert phase_key(key, np.array([3, 0]), 16, 2).tolist() == [3 * 256 + 5 * 16 + 7, 15]
    assert phase_key(key, np.array([23, 1]), 16, 1).tolist() == [23 * 16 + 7, 16 + 15]


def test_ensemble_scores_a_familiar_pattern_at_an_unfamiliar_time_of_day() -> None:
    # hourly readings: 0 until noon, 10 after, for 30 days; then a day with no jump
    hour_ms, midnight_ms = 3_600_000, 1_699_920_000_000  # 2023-11-14 00:00 UTC
    day = np.r_[np.zeros(12), np.full(12, 10.0)]
    values = np.r_[np.tile(day, 30), np.zeros(24), np.tile(day, 5)]
    phased = run(Ensemble(CTX, quantity="value"), values, hour_ms, midnight_ms)
    flat = run(Ensemble(CTX, quantity="value", phases=1), values, hour_ms, midnight_ms)
    # (0, 0) at 12:00 and later was only ever seen before noon: new to the hour-of-day memory only
    noon = 30 * 24 + 12
    assert flat[noon - 12:noon + 12].max() == 0.0  # every pattern of values is familiar
    assert phased[noon - 12:noon].max() == 0.0  # the morning is as usual
    assert noon <= int(np.argmax(phased[noon - 12:])) + noon - 12 < noon + 12
    assert phased[noon:noon + 12].max() > phased[24:noon - 12].max()  # a new peak, above earlier reports


def test_gaussian_nines_in_place_matches_the_allocating_form() -> None:
    z = np.linspace(-2, 30, 97)
    expected = gaussian_nines(z)
    assert z[0] == -2.0  # without scratch the input is left alone
    work = z.copy()
    out = gaussian_nines(work, scratch=np.empty_like(work))
    assert out is work
    np.testing.assert_array_equal(out, expected)


def test_gaussian_nines_approximates_the_exact_tail() -> None:
    z = np.linspace(0, 30, 301)
    np.testing.assert_allclose(gaussian_nines(z), tail_nines(z), rtol=5e-3)
    assert tail_nines(np.array([1.2815515655446004]))[0] == pytest.approx(1.0)  # Q = 0.1


@pytest.mark.parametrize(
    ("cls", "params", "name"),
    [
        (EwmaZScore, {"alpha": 0.0}, "alpha"),
        (EwmaZScore, {"warmup": 1}, "warmup"),
        (TwoSidedCusum, {"k": -1.0}, "k"),
        (TwoSidedCusum, {"alpha": 1.5}, "alpha"),
        (TwoSidedCusum, {"side": "above"}, "side"),
        (RateOfChange, {"alpha": 1.0}, "alpha"),
        (RobustZScore, {"window": 2}, "window"),
        (SeasonalBaseline, {"weekly": "yes"}, "weekly"),
        (Ensemble, {"peak_decay": 1.0}, "peak_decay"),
        (Ensemble, {"likelihood_alpha": 0.0}, "likelihood_alpha"),
        (Ensemble, {"warmup": 0}, "warmup"),
        (Ensemble, {"refractory": -1}, "refractory"),
        (Ensemble, {"bins": 1}, "bins"),
        (Ensemble, {"pattern": 0}, "pattern"),
        (Ensemble, {"bins": 256, "pattern": 3}, "bins, pattern"),
        (Ensemble, {"phases": 0}, "phases"),
        (Ensemble, {"phase_pattern": 4}, "phase_pattern"),
        (Ensemble, {"bins": 64, "pattern": 2, "phase_pattern": 2, "phases": 24}, "phases, phase_pattern"),
    ],
)
def test_parameter_errors_name_the_parameter(cls: type, params: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}: .* valid: "):
        cls(CTX, quantity="value", **params)


def test_registered_names() -> None:
    expected = {"robust_z": RobustZScore, "ewma_z": EwmaZScore, "cusum": TwoSidedCusum,
                "rate_of_change": RateOfChange, "seasonal": SeasonalBaseline, "ensemble": Ensemble}
    for name, cls in expected.items():
        assert DETECTORS[name] is cls
