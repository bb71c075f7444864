"""load_profile: power against the meter's own hour-of-week / hour-of-day / overall baseline."""

from __future__ import annotations

import numpy as np

from detectors.base import DetectorContext
from detectors.columns import batch_from_columns
from detectors.load_profile import LoadProfile

CTX = DetectorContext(quantities=("power_kw",), expected_period_s=60.0, utc_offset_s=8 * 3600)
START_MS = 1_796_400_000_000 - (1_796_400_000_000 + 8 * 3_600_000) % 86_400_000  # a local midnight
MINUTE_MS = 60_000


def run(power: np.ndarray, batch_minutes: int = 30) -> np.ndarray:
    """One meter reporting each minute from local midnight; scores in reading order."""
    det, out = LoadProfile(CTX, quantity="power_kw"), []
    for lo in range(0, power.shape[0], batch_minutes):
        hi = min(power.shape[0], lo + batch_minutes)
        t = START_MS + np.arange(lo, hi) * MINUTE_MS
        got = det.score_and_update(batch_from_columns(np.zeros(hi - lo, np.int32), t, power[lo:hi]))
        scores = np.zeros(hi - lo)
        scores[got.rows] = got.score
        out.append(scores)
    return np.concatenate(out)


def noisy(level: np.ndarray, seed: int) -> np.ndarray:
    return level * (1 + np.random.default_rng(seed).normal(0, 0.02, level.shape[0]))


def test_a_sixfold_surge_on_a_steady_meter_is_found_on_its_first_day() -> None:
    level = np.full(8 * 60, 200.0)
    level[5 * 60:6 * 60] = 1200.0  # an hour at 6x, well inside a 2,000 kW contract
    score = run(noisy(level, 1))
    assert score[:5 * 60].max() < 6
    assert (score[5 * 60:6 * 60] >= 6).mean() > 0.8  # the surge is not learned as normal within the hour
    assert score[6 * 60 + 5:].max() < 6


def working_hours(days: int) -> np.ndarray:
    hour = (np.arange(days * 24 * 60) // 60) % 24
    return np.where((hour >= 8) & (hour < 18), 700.0, 250.0)


def test_shift_starts_are_normal_and_a_surge_at_night_is_not() -> None:
    level = working_hours(4)
    night = 3 * 24 * 60 + 2 * 60  # day 4, 02:00-03:00: the day shift's load at night
    level[night:night + 60] = 1200.0
    score = run(noisy(level, 2))
    # the 2.8x shift start on day 1 is under the overall baseline's 4x bar; later days know 8:00
    assert score[:night].max() < 6
    assert (score[night:night + 60] >= 6).mean() > 0.8


def test_batch_boundaries_do_not_matter() -> None:
    level = working_hours(2)
    level[30 * 60:31 * 60] = 1500.0
    power = noisy(level, 3)
    np.testing.assert_array_equal(run(power, 1), run(power, 97))


def test_a_shift_starting_in_the_middle_of_an_hour_first_seen_today_is_normal() -> None:
    """The 7:00 slot has seen 30 quiet minutes today when the shift starts at 7:30: one
    day's half hour is not the profile of that hour (a slot needs two days)."""
    minutes = np.arange(12 * 60)
    level = np.where(minutes >= 7 * 60 + 30, 700.0, 250.0)
    assert run(noisy(level, 4)).max() < 6
