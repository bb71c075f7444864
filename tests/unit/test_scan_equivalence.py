"""Detectors whose recursion runs through ``detectors.recursions`` (only the state update
round by round, everything else for the whole batch at once) against their own
one-round-at-a-time ``step``, bit for bit, on streams with several readings per sensor
and batch, late readings, repeats and sensors that come and go."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from detectors.base import DetectorContext
from detectors.columns import batch_from_columns
from detectors.registry import DETECTORS
from detectors.rounds import RoundPlan, group_by_sensor
from detectors.series import SeriesDetector

CTX = DetectorContext(quantities=("value",), expected_period_s=60.0)
T0 = 1_795_700_000_000

CASES: list[tuple[str, dict[str, Any]]] = [
    ("ewma_z", {}),
    ("ewma_z", {"alpha": 0.3, "warmup": 2}),
    ("cusum", {}),
    ("cusum", {"alpha": 0.1, "k": 0.0, "warmup": 3}),
    ("cusum", {"min_sd": 1.0, "side": "up"}),
    ("cusum", {"side": "down", "warmup": 2}),
    ("rate_of_change", {}),
    ("rate_of_change", {"alpha": 0.5, "warmup": 1}),
    ("seasonal", {}),
    ("seasonal", {"alpha": 0.5, "warmup": 2, "weekly": False}),
    ("ensemble", {"warmup_s": 0}),
    ("ensemble", {"warmup": 20, "likelihood_alpha": 0.02, "peak_decay": 0.9, "refractory": 0, "bins": 4,
                  "pattern": 2, "phases": 3, "phase_pattern": 1, "seasonal_alpha": 0.2, "warmup_s": 600}),
    ("ensemble", {"warmup": 5, "warmup_s": 0, "refractory": 3, "peak_decay": 0.5}),
    ("load_profile", {}),
    ("load_profile", {"warmup": 5, "rel_floor": 0.0, "protect_z": 3.0}),
    ("idle_in_hours", {"warmup": 3, "start_hour": 0, "end_hour": 24, "weekdays": [0, 1, 2, 3, 4, 5, 6]}),
    ("stuck", {"run_length": 4, "tolerance": 0.5}),
]


def _stream(seed: int, n: int = 4000, n_sensors: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sensor = rng.integers(0, n_sensors, n).astype(np.int32)
    sensor[: n // 10] = 0  # one sensor with a long run: many rounds
    rng.shuffle(sensor)
    t = T0 + np.sort(rng.integers(0, 6 * 86_400_000, n))  # days: hours and phases change within batches
    t[rng.random(n) < 0.04] -= 900_000  # late readings
    dup = np.flatnonzero(rng.random(n) < 0.02)
    t[dup[dup > 0]] = t[dup[dup > 0] - 1]  # duplicates of the previous row's time
    value = 50 + 10 * np.sin(t / 3.6e6) + rng.normal(0, 3, n)
    value[rng.random(n) < 0.01] += 80  # spikes
    value = np.round(value, 1)
    value[rng.random(n) < 0.1] = 0.0  # repeats at a floor
    return sensor, t, value


@pytest.mark.parametrize(("kind", "params"), CASES, ids=[f"{k}{p}" for k, p in CASES])
def test_scan_equals_stepping_round_by_round(kind: str, params: dict[str, Any]) -> None:
    cls = DETECTORS[kind]
    assert issubclass(cls, SeriesDetector) and cls.exact_scan
    by_rounds = type("ByRounds", (cls,), {"exact_scan": False})
    always = type("Scans", (cls,), {"scan_min_rounds": 1})  # scan even a batch of one round
    sensor, t, value = _stream(4)
    scans, steps = always(CTX, quantity="value", **params), by_rounds(CTX, quantity="value", **params)
    cuts = [0, 1, 3, 700, 701, 1500, 1510, 3999, 4000]
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        batch = batch_from_columns(sensor[lo:hi], t[lo:hi], value[lo:hi])
        a, b = scans.score_and_update(batch), steps.score_and_update(batch)
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.score, b.score, err_msg=f"rows {lo}..{hi}")
    for name, array in steps.snapshot().items():
        np.testing.assert_array_equal(scans.snapshot()[name], array, err_msg=name)
    assert scans.n_late == steps.n_late > 0


@pytest.mark.parametrize("sizes", [[1], [3, 1, 2], [5, 5], [1, 7, 2, 7, 3], [4] * 6 + [1] * 3])
def test_round_plan_puts_every_row_once_in_its_round(sizes: list[int]) -> None:
    sensor = np.repeat(np.arange(len(sizes)), sizes).astype(np.int32)
    g = group_by_sensor(sensor)
    plan = RoundPlan.of(g)
    assert sorted(plan.order.tolist()) == list(range(len(sensor)))
    np.testing.assert_array_equal(plan.order[plan.position], np.arange(len(sensor)))
    for k in range(plan.n_rounds):
        rows = plan.order[plan.bounds[k] : plan.bounds[k + 1]]
        assert (g.rank[rows] == k).all()
        # places are fixed: the segments still active are the round's first rows, in place order
        np.testing.assert_array_equal(g.seg[rows], plan.perm[: plan.counts[k]])
    np.testing.assert_array_equal(plan.order[plan.last], g.tail[plan.perm])


@pytest.mark.parametrize("rows", [1, 2, 3, 9, 100])
@pytest.mark.parametrize("width", [2, 9, 17, 180])
def test_rise_rate_column_sums_add_one_point_after_another(rows: int, width: int) -> None:
    """rise_rate's sums must be sequential (a pairwise sum would depend on the padding, so
    on the batch): numpy reduces a one-column array pairwise, so that case accumulates."""
    from detectors.rise_rate import _column_sums

    rng = np.random.default_rng(rows * 1000 + width)
    a = rng.standard_normal((width, rows)) * 10.0 ** rng.integers(-8, 16, (width, rows))
    expected = a[0].copy()
    for j in range(1, width):
        expected = expected + a[j]
    np.testing.assert_array_equal(_column_sums(a, np.empty_like(a)), expected)
