"""The shared machinery of stateful detectors: rounds, per-sensor state, SeriesDetector."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.columns import batch_from_columns
from detectors.rounds import occurrence_rounds
from detectors.series import SeriesDetector
from detectors.state import Field, SensorState

CTX = DetectorContext(quantities=("value",))


@pytest.mark.parametrize("sensor", [[], [3], [0, 1, 2], [2, 0, 2, 1, 2, 0], [5, 5, 5, 5], [0, 0, 1, 1, 1, 4]])
def test_rounds_hold_distinct_sensors_in_each_sensors_order(sensor: list[int]) -> None:
    s = np.array(sensor, np.int32)
    rounds = occurrence_rounds(s)
    seen = np.concatenate(rounds) if rounds else np.zeros(0, np.int64)
    assert sorted(seen.tolist()) == list(range(len(sensor)))  # every row exactly once
    for r in rounds:
        assert len(set(s[r].tolist())) == r.size  # distinct sensors in a round
    # the k-th occurrence of a sensor is in round k
    for k, r in enumerate(rounds):
        for pos in r.tolist():
            assert sensor[:pos].count(sensor[pos]) == k


class RunningSum(SeriesDetector):
    """Score = the sum of the sensor's earlier values (a recursion that notices order)."""

    measure = "running_sum"

    def state_fields(self) -> Mapping[str, Field]:
        return {"total": Field(np.float64, 0.0), "n": Field(np.int64, 0)}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        before = self.state["total"][sensor].astype(np.float64)
        self.state["total"][sensor] = before * 0.5 + value
        self.state["n"][sensor] += 1
        return before


def test_series_detector_equals_its_one_reading_at_a_time_definition() -> None:
    rng = np.random.default_rng(1)
    sensor = rng.integers(0, 5, 300).astype(np.int32)
    t = np.arange(300, dtype=np.int64) * 1000
    value = rng.normal(size=300)
    whole = RunningSum(CTX, quantity="value").score_and_update(batch_from_columns(sensor, t, value))
    got = np.empty(300)
    got[whole.rows] = whole.score
    expected = np.empty(300)
    total = np.zeros(5)
    for i in range(300):  # the definition, row by row in arrival order
        expected[i] = total[sensor[i]]
        total[sensor[i]] = total[sensor[i]] * 0.5 + value[i]
    # rows are in the batch's (sensor, arrival) order; map back to arrival order
    batch = batch_from_columns(sensor, t, value)
    back = np.empty(300)
    back[batch.reading_idx[whole.rows]] = whole.score
    np.testing.assert_array_equal(back, expected)


def test_late_and_duplicate_readings_score_zero_and_are_not_learned() -> None:
    det = RunningSum(CTX, quantity="value")
    det.score_and_update(batch_from_columns([0, 0], [1000, 2000], [1.0, 2.0]))
    late = det.score_and_update(batch_from_columns([0, 0, 0], [2000, 1500, 3000], [100.0, 100.0, 3.0]))
    assert late.score.tolist() == [0.0, 0.0, 2.5]  # 2000 is a duplicate, 1500 out of order
    assert det.n_late == 2 and int(det.state["n"][0]) == 3


def test_non_normal_flags_and_other_quantities_are_not_scored() -> None:
    ctx = DetectorContext(quantities=("a", "b"))
    det = RunningSum(ctx, quantity="b")
    batch = batch_from_columns([0, 0, 0], [1, 2, 3], [1.0, 2.0, 3.0], quantity_idx=[1, 0, 1], flag=[0, 0, 4])
    assert det.score_and_update(batch).rows.tolist() == [0]


def test_unknown_quantity_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"quantity: 'x'.*valid: \['value'\]"):
        RunningSum(CTX, quantity="x")


def test_state_grows_with_fill_and_keeps_rows() -> None:
    state = SensorState({"m": Field(np.float64, 7.0, (2,)), "k": Field(np.int64, -1)}, 3)
    state["m"][1] = [1.0, 2.0]
    state.resize(100)
    assert state.n_sensors == 100
    np.testing.assert_array_equal(state["m"][1], [1.0, 2.0])
    np.testing.assert_array_equal(state["m"][99], [7.0, 7.0])
    assert state.snapshot()["k"].shape == (100,)


def test_restore_checks_names_dtypes_shapes_and_counts() -> None:
    state = SensorState({"m": Field(np.float64, 0.0, (2,))}, 2)
    with pytest.raises(ValueError, match="missing \\['m'\\]"):
        state.restore({})
    with pytest.raises(ValueError, match="'m'.*expected float64\\[2\\]"):
        state.restore({"m": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="2 sensor rows but 1"):
        state.restore({"m": np.zeros((2, 2))}, np.array([0]))
    state.restore({"m": np.ones((1, 2))}, np.array([40]))
    assert state.n_sensors == 41 and state["m"][40].tolist() == [1.0, 1.0]


# -- segments, scans and the exact_scan fast path -------------------------------------------
def test_segment_helpers_match_their_definitions_also_with_huge_time_spreads() -> None:
    from detectors.rounds import group_by_sensor, newest_before, segment_cummax, segment_searchsorted

    rng = np.random.default_rng(3)
    for spread in (1_000, 2**61):  # the second takes the overflow-safe paths
        sensor = rng.integers(0, 6, 200).astype(np.int32)
        t = rng.integers(0, spread, 200, dtype=np.int64)
        g = group_by_sensor(sensor)
        assert np.array_equal(g.order, np.argsort(sensor, kind="stable"))
        tg = t[g.order]
        seed = rng.integers(0, spread, g.head.shape[0], dtype=np.int64)
        running = segment_cummax(tg, g)
        before = newest_before(tg, g, seed)
        for k, (h, n) in enumerate(zip(g.head.tolist(), g.size.tolist(), strict=True)):
            seg = tg[h : h + n]
            assert running[h : h + n].tolist() == np.maximum.accumulate(seg).tolist()
            assert before[h : h + n].tolist() == np.maximum.accumulate(np.r_[seed[k], seg])[:-1].tolist()
        ascending = np.concatenate([np.sort(tg[h : h + n]) for h, n in zip(g.head, g.size, strict=True)])
        q_seg = rng.integers(0, g.head.shape[0], 50)
        query = rng.integers(0, spread, 50, dtype=np.int64)
        got = segment_searchsorted(ascending, g.seg, query, q_seg)
        for i in range(50):
            h, n = int(g.head[q_seg[i]]), int(g.size[q_seg[i]])
            assert got[i] == h + int(np.searchsorted(ascending[h : h + n], query[i], side="right"))


def _scan_cases() -> list[tuple[str, dict[str, object]]]:
    return [("stuck", {"run_length": 3}), ("counter_decrease", {}), ("robust_z", {"window": 5}),
            ("robust_z", {"window": 6}), ("idle_in_hours", {"warmup": 3, "start_hour": 8, "end_hour": 20})]


@pytest.mark.parametrize(("kind", "params"), _scan_cases())
def test_a_scan_equals_stepping_round_by_round_bit_for_bit(kind: str, params: dict[str, object]) -> None:
    """``scan`` is only a faster route to what ``step`` computes one round at a time."""
    from detectors.registry import DETECTORS

    cls = DETECTORS[kind]
    assert issubclass(cls, SeriesDetector) and cls.exact_scan
    by_rounds = type("ByRounds", (cls,), {"exact_scan": False})
    rng = np.random.default_rng(8)
    n = 3000
    sensor = rng.integers(0, 7, n).astype(np.int32)  # several readings per sensor and batch
    t = 1_795_700_000_000 + np.sort(rng.integers(0, 86_400_000, n))
    t[rng.random(n) < 0.05] -= 600_000  # some late readings
    value = np.round(rng.normal(50, 5, n), 0)  # coarse: repeats and drops happen
    value[rng.random(n) < 0.2] = 0.0
    scans, steps = cls(CTX, quantity="value", **params), by_rounds(CTX, quantity="value", **params)
    for lo, hi in ((0, 5), (5, 1000), (1000, 1001), (1001, n)):
        batch = batch_from_columns(sensor[lo:hi], t[lo:hi], value[lo:hi])
        a, b = scans.score_and_update(batch), steps.score_and_update(batch)
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.score, b.score)
    for name, array in steps.snapshot().items():
        np.testing.assert_array_equal(scans.snapshot()[name], array, err_msg=name)
    assert scans.n_late == steps.n_late > 0
