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
