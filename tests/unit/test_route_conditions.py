"""Route conditions (for_s, n_of_m, hold_s) against their one-reading-at-a-time
definition, under random batch cuts, and through topology validation."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from pydantic import ValidationError

from detectors.base import Scores
from detectors.columns import batch_from_columns
from streams.alarms import RouteEvaluator
from streams.topology_spec import RouteSpec

LEVELS = [{"at": 10.0, "severity": "minor"}, {"at": 20.0, "severity": "major"}]


def _route(**conditions: object) -> RouteSpec:
    return RouteSpec.model_validate({"rule": "r", "detector": "d", "deadband": 2.0, "levels": LEVELS, **conditions})


def _reference(spec: RouteSpec, sensor: list[int], t: list[int], score: list[float]) -> list[int]:
    """Level after each reading, by the definition, row by row in arrival order."""
    points = [lvl.at for lvl in spec.levels]
    assert all(p is not None for p in points)
    level: dict[int, int] = {}
    last: dict[int, int] = {}
    run_start: dict[tuple[int, int], int] = {}
    last_held: dict[tuple[int, int], int] = {}
    recent: dict[tuple[int, int], deque[bool]] = {}
    out = []
    for s, ti, x in zip(sensor, t, score, strict=True):
        if ti <= last.get(s, -math.inf):
            out.append(level.get(s, 0))
            continue
        last[s] = ti
        lo = hi = 0
        for k, p in enumerate(points):
            assert p is not None
            hit = x >= p
            ok = hit
            if spec.n_of_m:
                n, m = spec.n_of_m
                window = recent.setdefault((s, k), deque(maxlen=m))
                window.append(hit)
                ok = sum(window) >= n
            if spec.for_s:
                if not hit:
                    run_start.pop((s, k), None)
                else:
                    run_start.setdefault((s, k), ti)
                ok = ok and hit and ti - run_start[(s, k)] >= spec.for_s * 1000
            kept = x + spec.deadband >= p
            if spec.hold_s:
                if kept:
                    last_held[(s, k)] = ti
                kept = (s, k) in last_held and ti - last_held[(s, k)] <= spec.hold_s * 1000
            lo += ok
            hi += kept
        hi = max(hi, lo)
        level[s] = min(max(level.get(s, 0), lo), hi)
        out.append(level[s])
    return out


CONDITIONS = [
    {"for_s": 30.0},
    {"n_of_m": (3, 5)},
    {"hold_s": 45.0},
    {"for_s": 20.0, "hold_s": 30.0},
    {"n_of_m": (2, 4), "for_s": 10.0, "hold_s": 20.0},
    {"n_of_m": (1, 64)},
]


@pytest.mark.parametrize("conditions", CONDITIONS, ids=str)
@pytest.mark.parametrize("seed", range(6))
def test_conditions_match_the_definition_for_any_batch_cuts(conditions: dict[str, object], seed: int) -> None:
    spec = _route(**conditions)
    rng = np.random.default_rng(seed)
    n, n_sensors = 400, 4
    sensor = rng.integers(0, n_sensors, n).astype(np.int32)
    t = np.cumsum(rng.integers(1, 15_000, n)).astype(np.int64)
    t[rng.random(n) < 0.05] -= 40_000  # a few late readings
    score = rng.choice([0.0, 9.0, 12.0, 19.0, 25.0], n)  # around both set points and deadbands
    expected = _reference(spec, sensor.tolist(), t.tolist(), score.tolist())
    cuts = sorted(rng.choice(np.arange(1, n), size=int(rng.integers(0, 30)), replace=False).tolist())
    ev = RouteEvaluator(spec, "k", [None] * n_sensors)
    got = np.zeros(n, np.int64)
    for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
        batch = batch_from_columns(sensor[lo:hi], t[lo:hi], score[lo:hi])
        rows = np.arange(len(batch), dtype=np.int64)
        transitions = ev.evaluate(batch, Scores(rows, batch.value, "x"))
        # replay the level per row: start from the previous level, apply changes
        levels = np.full(hi - lo, -1)
        levels[batch.reading_idx[transitions.rows]] = transitions.current
        got[lo:hi] = levels
    # compare where the reference level changed
    ref_prev = _previous_per_sensor(sensor, np.array(expected))
    changed = np.flatnonzero(ref_prev != np.array(expected))
    assert np.flatnonzero(got >= 0).tolist() == changed.tolist()
    assert got[changed].tolist() == np.array(expected)[changed].tolist()


def _previous_per_sensor(sensor: np.ndarray, levels: np.ndarray) -> np.ndarray:
    prev = np.zeros_like(levels)
    seen: dict[int, int] = {}
    for i, s in enumerate(sensor.tolist()):
        prev[i] = seen.get(s, 0)
        seen[s] = int(levels[i])
    return prev


def test_for_s_delays_the_alarm_until_the_condition_has_held() -> None:
    ev = RouteEvaluator(_route(for_s=60.0), "k", [None])
    batch = batch_from_columns([0] * 5, [0, 30_000, 60_000, 70_000, 80_000], [15.0, 15.0, 15.0, 5.0, 15.0])
    tr = ev.evaluate(batch, Scores(np.arange(5, dtype=np.int64), batch.value, "x"))
    assert tr.rows.tolist() == [2, 3] and tr.current.tolist() == [1, 0]  # fires at 60 s, clears at 70 s


def test_hold_s_keeps_the_alarm_until_quiet_for_the_hold_time() -> None:
    ev = RouteEvaluator(_route(hold_s=30.0), "k", [None])
    batch = batch_from_columns([0] * 4, [0, 10_000, 25_000, 31_000], [15.0, 0.0, 0.0, 0.0])
    tr = ev.evaluate(batch, Scores(np.arange(4, dtype=np.int64), batch.value, "x"))
    assert tr.rows.tolist() == [0, 3] and tr.current.tolist() == [1, 0]  # 15 at 0 s; cleared once more than 30 s later


@pytest.mark.parametrize("bad", [{"n_of_m": (5, 3)}, {"n_of_m": (1, 65)}, {"for_s": -1}, {"hold_s": -0.5}])
def test_bad_conditions_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _route(**bad)
