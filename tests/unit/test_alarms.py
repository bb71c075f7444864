"""Route levels, hysteresis and batch-boundary invariance."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.base import ReadingBatch, Scores
from streams.alarms import RouteEvaluator
from streams.catalog import SensorInfo
from streams.topology_spec import LevelSpec, RouteSpec, Severity

GAS = RouteSpec(
    rule="gas",
    detector="gas_lel",
    direction="above",
    deadband=2.0,
    levels=[LevelSpec(at=25, severity=Severity.MAJOR), LevelSpec(at=50, severity=Severity.CRITICAL)],
)


def _sensor(i: int, **limits: float) -> SensorInfo:
    return SensorInfo(f"S{i}", "hazmat", f"site{i}", "", "Humen", 22.8, 113.6, limits=limits)


def _batch(sensor: list[int], value: list[float], first_row: int = 0) -> tuple[ReadingBatch, Scores]:
    """Rows `first_row`.. of a stream whose row i has event time i seconds."""
    n = len(value)
    batch = ReadingBatch(
        sensor_idx=np.array(sensor, np.int32),
        reading_idx=np.arange(n, dtype=np.int32),
        event_time_ms=(np.arange(n, dtype=np.int64) + first_row) * 1000,
        quantity_idx=np.zeros(n, np.int16),
        value=np.array(value, np.float64),
        flag=np.zeros(n, np.uint8),
    )
    return batch, Scores(rows=np.arange(n, dtype=np.int64), score=batch.value.copy(), measure="gas_lel")


def test_fires_escalates_and_clears_with_deadband() -> None:
    ev = RouteEvaluator(GAS, "hazmat", [_sensor(0)])
    values = [10, 26, 24, 22.9, 51, 49, 47.9, 30, 20]
    t = ev.evaluate(*_batch([0] * len(values), values))
    # 26 fires level 1; 24 is within the 2-point deadband (held); 22.9 clears;
    # 51 goes straight to level 2; 49 held; 47.9 drops to level 1; 20 clears.
    assert t.rows.tolist() == [1, 3, 4, 6, 8]
    assert list(zip(t.previous.tolist(), t.current.tolist())) == [(0, 1), (1, 0), (0, 2), (2, 1), (1, 0)]
    assert t.threshold.tolist() == [25, 25, 50, 50, 25]


def test_below_direction_and_per_sensor_limits() -> None:
    route = RouteSpec(
        rule="speed",
        detector="road_speed",
        direction="below",
        deadband=5,
        levels=[LevelSpec(limit="speed_kmh.low", severity=Severity.WARNING), LevelSpec(limit="speed_kmh.lowlow", severity=Severity.MINOR)],
    )
    sensors = [_sensor(0, **{"speed_kmh.low": 40, "speed_kmh.lowlow": 20}), _sensor(1)]
    ev = RouteEvaluator(route, "traffic", sensors)
    t = ev.evaluate(*_batch([0, 1, 0, 0, 0], [60, 3, 15, 24, 46]))
    # sensor 1 has no limits: never alarms. Sensor 0: 15 -> level 2; 24 held (< 20+5); 46 clears (> 40+5)
    assert t.rows.tolist() == [2, 4]
    assert t.current.tolist() == [2, 0]
    assert ev.setpoint(0, 2) == 20 and ev.setpoint(1, 1) is None


@pytest.mark.parametrize("seed", range(5))
def test_same_stream_any_batch_split_gives_same_transitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_sensors = 400, 7
    sensor = rng.integers(0, n_sensors, n).tolist()
    value = (rng.random(n) * 70).round(1).tolist()
    sensors = [_sensor(i) for i in range(n_sensors)]

    def run(cuts: list[int]) -> list[tuple[int, int, int]]:
        ev = RouteEvaluator(GAS, "hazmat", sensors)
        out = []
        for lo, hi in zip([0, *cuts], [*cuts, n]):
            t = ev.evaluate(*_batch(sensor[lo:hi], value[lo:hi], first_row=lo))
            out += [(lo + r, p, c) for r, p, c in zip(t.rows.tolist(), t.previous.tolist(), t.current.tolist())]
        return sorted(out)

    one_at_a_time = run(list(range(1, n)))
    assert one_at_a_time  # the random stream does cross the set points
    assert run([]) == one_at_a_time
    assert run(sorted(rng.choice(np.arange(1, n), 9, replace=False).tolist())) == one_at_a_time


def test_resize_adds_sensors_without_touching_state() -> None:
    ev = RouteEvaluator(GAS, "hazmat", [_sensor(0)])
    ev.evaluate(*_batch([0], [30]))
    ev.resize([_sensor(0), None])
    assert ev.level.tolist() == [1, 0]
    t = ev.evaluate(*_batch([1], [60], first_row=1))  # unknown sensor: fixed set points still apply
    assert t.current.tolist() == [2]


def test_late_and_duplicate_readings_do_not_move_the_alarm() -> None:
    ev = RouteEvaluator(GAS, "hazmat", [_sensor(0)])
    batch, scores = _batch([0, 0, 0, 0], [30, 60, 5, 5])
    times = np.array([10_000, 20_000, 15_000, 20_000])  # a backlog reading (15 s) and a duplicate (20 s)
    batch = ReadingBatch(batch.sensor_idx, batch.reading_idx, times, batch.quantity_idx, batch.value, batch.flag)
    t = ev.evaluate(batch, scores)
    assert list(zip(t.previous.tolist(), t.current.tolist())) == [(0, 1), (1, 2)]
    assert t.n_late == 2
    assert ev.level.tolist() == [2] and ev.last_event_ms.tolist() == [20_000]


def _reference_scan(
    state: list[int], last: list[int], sensor: list[int], t: list[int], crossed: list[int], held: list[int]
) -> list[tuple[int, int, bool]]:
    """The definition, one row at a time in arrival order."""
    out = []
    for s, ti, c, h in zip(sensor, t, crossed, held):
        prev = state[s]
        stale = ti <= last[s]
        new = prev if stale else min(max(prev, c), h)
        state[s], last[s] = new, last[s] if stale else ti
        out.append((prev, new, stale))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_vectorized_scan_matches_the_row_by_row_definition(seed: int) -> None:
    from detectors.state import NEVER_MS, Field, SensorState
    from streams.alarms import _scan_levels

    rng = np.random.default_rng(seed)
    n_sensors, n, levels = int(rng.integers(1, 30)), int(rng.integers(0, 300)), int(rng.integers(1, 4))
    state = rng.integers(0, levels + 1, n_sensors).astype(np.int8)
    last = np.where(rng.random(n_sensors) < 0.5, NEVER_MS, rng.integers(0, 500, n_sensors)).astype(np.int64)
    sensor = rng.integers(0, n_sensors, n).astype(np.int32)
    t = rng.integers(0, 1000, n).astype(np.int64)  # out of order and duplicates on purpose
    crossed = rng.integers(0, levels + 1, n).astype(np.int8)
    held = np.minimum(crossed + rng.integers(0, 2, n), levels).astype(np.int8)
    expected_state, expected_last = state.tolist(), last.tolist()
    expected = _reference_scan(expected_state, expected_last, sensor.tolist(), t.tolist(), crossed.tolist(), held.tolist())
    arrays = SensorState({"level": Field(np.int8, 0), "last_event_ms": Field(np.int64, NEVER_MS)}, n_sensors)
    arrays.restore({"level": state, "last_event_ms": last})
    previous, current, late = _scan_levels(arrays, sensor, t, crossed, held, None)
    assert list(zip(previous.tolist(), current.tolist(), late.tolist())) == expected
    snap = arrays.snapshot()
    assert snap["level"].tolist() == expected_state and snap["last_event_ms"].tolist() == expected_last
