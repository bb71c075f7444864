"""RouteEvaluator's shortcuts (a batch that cannot move any level only advances the state;
sensors that cannot change skip the level scan) against the full scan of every row, on
random streams with late rows, duplicates, every kind of condition and any batch cut."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.base import ReadingBatch, Scores
from streams import alarms
from streams.alarms import RouteEvaluator, Transitions
from streams.catalog import SensorInfo
from streams.topology_spec import LevelSpec, RouteSpec, Severity


class FullScan(RouteEvaluator):
    """Every row through the level scan (no shortcut)."""

    def evaluate(self, batch: ReadingBatch, scores: Scores) -> Transitions:
        rows = scores.rows
        sensor, event_ms = scores.sensors_and_times(batch)
        signed = self._sign * scores.score
        points = self._setpoints[:, sensor]
        crossed = (signed >= points).sum(axis=0).astype(np.int8)
        held = (signed + self.spec.deadband >= points).sum(axis=0).astype(np.int8)
        conditions = self._apply_conditions if self._conditional else None
        previous, current, late = alarms._scan_levels(self.state, sensor, event_ms, crossed, held, conditions)
        changed = np.flatnonzero(previous != current)
        reached = np.maximum(current[changed], previous[changed])
        threshold = self._sign * points[reached - 1, changed] if changed.size else np.zeros(0)
        return Transitions(rows[changed], sensor[changed], event_ms[changed], previous[changed], current[changed],
                           scores.score[changed], threshold, int(np.count_nonzero(late)))


def _route(**conditions: object) -> RouteSpec:
    return RouteSpec(rule="r", detector="d", direction="above", deadband=2.0,
                     levels=[LevelSpec(at=25, severity=Severity.MAJOR), LevelSpec(limit="x.high", severity=Severity.CRITICAL)],
                     **conditions)  # type: ignore[arg-type]


ROUTES = [_route(), _route(for_s=30), _route(n_of_m=(2, 3)), _route(hold_s=20), _route(for_s=10, n_of_m=(3, 4), hold_s=40)]


@pytest.mark.parametrize("route", ROUTES, ids=["plain", "for_s", "n_of_m", "hold_s", "all"])
@pytest.mark.parametrize("seed", range(4))
def test_shortcuts_give_the_full_scans_transitions_and_state(route: RouteSpec, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_sensors = 3000, 12
    sensors: list[SensorInfo | None] = [
        SensorInfo(f"S{i}", "hazmat", f"site{i}", "", "Humen", 22.8, 113.6, limits={"x.high": 40.0 + i}) if i % 4 else None
        for i in range(n_sensors)
    ]
    sensor = rng.integers(0, n_sensors, n).astype(np.int32)
    t = np.sort(rng.integers(0, 3_000_000, n)).astype(np.int64)
    t[rng.random(n) < 0.05] -= 20_000  # late
    value = rng.random(n) * 20
    burst = (t // 100_000) % 7 == 3  # quiet stretches (the shortcut) and alarm stretches
    value[burst] = rng.random(int(burst.sum())) * 70
    fast, full = RouteEvaluator(route, "hazmat", sensors), FullScan(route, "hazmat", sensors)
    cuts = sorted({0, n, *rng.integers(0, n, 25).tolist()})
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        order = np.argsort(sensor[lo:hi], kind="stable")  # the decoder's row order
        m = hi - lo
        batch = ReadingBatch(sensor[lo:hi][order], order.astype(np.int32), t[lo:hi][order], np.zeros(m, np.int16),
                             value[lo:hi][order], np.zeros(m, np.uint8))
        scores = Scores(np.arange(m, dtype=np.int64), batch.value, "x")
        a, b = fast.evaluate(batch, scores), full.evaluate(batch, scores)
        for name in ("rows", "sensor_idx", "event_time_ms", "previous", "current", "score", "threshold"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{name} in rows {lo}..{hi}")
        assert a.n_late == b.n_late
    for name, array in full.state.snapshot().items():
        np.testing.assert_array_equal(fast.state.snapshot()[name], array, err_msg=name)
