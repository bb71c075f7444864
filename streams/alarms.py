"""Routes turn detector scores into alarm levels and level changes.

Level per reading: how many of the route's set points the score has crossed.
Hysteresis: an alarm leaves a level only once the score is `deadband` back
across that level's set point, so the new level is
``clamp(previous, crossed(score), crossed(score + deadband))`` (for `above`).
That recursion runs per sensor in arrival order; it is vectorized across
sensors by stepping through the k-th reading of every sensor at once, so the
result is identical however the stream is cut into batches.

Event time: a reading no newer than the last one a route used for that sensor
(late or duplicate) does not move the alarm; it is counted instead. A gateway
that uploads a backlog must not clear an alarm raised by fresher readings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.base import IntArray, ReadingBatch, Scores
from streams.catalog import SensorInfo
from streams.topology_spec import RouteSpec, Severity

Int8Array = npt.NDArray[np.int8]
NEVER_MS = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class Transitions:
    """Rows (into the batch) where a sensor's level changed, in batch order."""

    rows: IntArray
    previous: Int8Array  # 0 = no alarm, k = the k-th level of the route
    current: Int8Array
    score: npt.NDArray[np.float64]
    threshold: npt.NDArray[np.float64]  # set point of the level reached (or left, when cleared)
    n_late: int = 0  # rows ignored because their event time was not newer than the sensor's last


class RouteEvaluator:
    """One route's set points per sensor and its live level per sensor."""

    def __init__(self, spec: RouteSpec, kind: str, sensors: Sequence[SensorInfo | None]) -> None:
        self.spec = spec
        self.kind = kind
        self.severities: tuple[Severity, ...] = tuple(level.severity for level in spec.levels)
        self._sign = 1.0 if spec.direction == "above" else -1.0
        self._setpoints = np.zeros((len(spec.levels), 0))  # signed, +inf = level not configured
        self.level = np.zeros(0, np.int8)
        self.last_event_ms = np.zeros(0, np.int64)  # per sensor, newest event time used
        self.resize(sensors)

    def resize(self, sensors: Sequence[SensorInfo | None]) -> None:
        """Grow to cover newly seen sensors (unknown ones get the fixed set points only)."""
        n_old = self.level.shape[0]
        new = [self._setpoints_of(s) for s in sensors[n_old:]]
        if new:
            self._setpoints = np.concatenate([self._setpoints, np.array(new).T], axis=1)
            self.level = np.concatenate([self.level, np.zeros(len(new), np.int8)])
            self.last_event_ms = np.concatenate([self.last_event_ms, np.full(len(new), NEVER_MS, np.int64)])

    def _setpoints_of(self, sensor: SensorInfo | None) -> list[float]:
        points = []
        for level in self.spec.levels:
            value = level.at if level.at is not None else (sensor.limits.get(level.limit or "") if sensor else None)
            points.append(math.inf if value is None else self._sign * value)
        return points

    def setpoint(self, sensor_idx: int, level: int) -> float | None:
        value = float(self._setpoints[level - 1, sensor_idx])
        return None if math.isinf(value) else self._sign * value

    def evaluate(self, batch: ReadingBatch, scores: Scores) -> Transitions:
        rows = scores.rows
        sensor = batch.sensor_idx[rows]
        signed = self._sign * scores.score
        points = self._setpoints[:, sensor]  # (levels, rows)
        crossed = (signed >= points).sum(axis=0).astype(np.int8)
        held = (signed + self.spec.deadband >= points).sum(axis=0).astype(np.int8)
        event_ms = batch.event_time_ms[rows]
        previous, current, late = _scan_levels(self.level, self.last_event_ms, sensor, event_ms, crossed, held)
        changed = np.flatnonzero(previous != current)
        reached = np.maximum(current[changed], previous[changed])  # the level entered, or the one left
        threshold = self._sign * points[reached - 1, changed] if changed.size else np.zeros(0)
        return Transitions(
            rows=rows[changed],
            previous=previous[changed],
            current=current[changed],
            score=scores.score[changed],
            threshold=threshold,
            n_late=int(np.count_nonzero(late)),
        )


def _scan_levels(
    state: Int8Array,
    last_ms: IntArray,
    sensor: npt.NDArray[np.int32],
    event_ms: IntArray,
    crossed: Int8Array,
    held: Int8Array,
) -> tuple[Int8Array, Int8Array, npt.NDArray[np.bool_]]:
    """Apply L = clamp(L_prev, crossed, held) row by row per sensor, skipping rows
    not newer than the sensor's last event time; updates `state` and `last_ms`.

    Rows need not be grouped by sensor: the k-th row of every sensor is found
    with stable sorts, then all sensors take step k together.
    """
    n = sensor.shape[0]
    previous = np.zeros(n, np.int8)
    current = np.zeros(n, np.int8)
    late = np.zeros(n, np.bool_)
    if n == 0:
        return previous, current, late
    order = np.argsort(sensor, kind="stable")
    sorted_sensor = sensor[order]
    starts = np.flatnonzero(np.r_[True, sorted_sensor[1:] != sorted_sensor[:-1]])
    position = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    by_position = order[np.argsort(position, kind="stable")]
    bounds = np.r_[0, np.cumsum(np.bincount(position))]
    for k in range(bounds.shape[0] - 1):
        rows = by_position[bounds[k] : bounds[k + 1]]  # the k-th row of each sensor
        s = sensor[rows]
        prev, t = state[s], event_ms[rows]
        stale = t <= last_ms[s]
        new = np.where(stale, prev, np.minimum(np.maximum(prev, crossed[rows]), held[rows]))
        previous[rows], current[rows], late[rows] = prev, new, stale
        state[s] = new
        last_ms[s] = np.where(stale, last_ms[s], t)
    return previous, current, late
