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

Most batches change nothing on most routes: no score reaches the lowest set
point (less its deadband) and no sensor of the route is in alarm. Then no level
can change (clamp(0, 0, hi) = 0), and ``evaluate`` only moves what a batch always
moves: each sensor's newest event time, the late count, and the carries of the
route's conditions (a run of crossings is broken, n-of-m windows shift in misses).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.arrays import firsts, run_ends
from detectors.base import Int32Array, IntArray, ReadingBatch, Scores
from detectors.state import NEVER_MS, Field, SensorState
from detectors.views import RowGroups, views
from streams import rules
from streams.rules import NONE_MS
from streams.catalog import SensorInfo
from streams.topology_spec import RouteSpec, Severity

Int8Array = npt.NDArray[np.int8]


@dataclass(frozen=True, slots=True)
class Transitions:
    """Rows (into the batch) where a sensor's level changed, in batch order."""

    rows: IntArray  # -1 for entries about sensors that sent nothing (see Scores)
    sensor_idx: npt.NDArray[np.int32]
    event_time_ms: IntArray
    previous: Int8Array  # 0 = no alarm, k = the k-th level of the route
    current: Int8Array
    score: npt.NDArray[np.float64]
    threshold: npt.NDArray[np.float64]  # set point of the level reached (or left, when cleared)
    n_late: int = 0  # rows ignored because their event time was not newer than the sensor's last


class RouteEvaluator:
    """One route's set points per sensor and its live level (and condition state) per sensor."""

    def __init__(self, spec: RouteSpec, kind: str, sensors: Sequence[SensorInfo | None]) -> None:
        self.spec = spec
        self.kind = kind
        self.severities: tuple[Severity, ...] = tuple(level.severity for level in spec.levels)
        self._sign = 1.0 if spec.direction == "above" else -1.0
        self._setpoints_store = np.zeros((len(spec.levels), 0))  # capacity for more sensors: see resize
        self._n_points = 0
        n_levels = (len(spec.levels),)
        self.state = SensorState({
            "level": Field(np.int8, 0),
            "last_event_ms": Field(np.int64, NEVER_MS),  # newest event time used, per sensor
            "run_start_ms": Field(np.int64, NONE_MS, n_levels),  # for_s: since when crossed
            "held_ms": Field(np.int64, NONE_MS, n_levels),  # hold_s: when last within the deadband
            "recent_bits": Field(np.uint64, 0, n_levels),  # n_of_m: the last m-1 results
        })
        self._conditional = spec.for_s > 0 or spec.n_of_m is not None or spec.hold_s > 0
        self._lowest = math.inf  # the lowest signed set point of any level and sensor
        self.resize(sensors)

    @property
    def level(self) -> Int8Array:
        return self.state["level"][: self.state.n_sensors]

    @property
    def last_event_ms(self) -> IntArray:
        return self.state["last_event_ms"][: self.state.n_sensors]

    def resize(self, sensors: Sequence[SensorInfo | None]) -> None:
        """Grow to cover newly seen sensors (unknown ones get the fixed set points only).
        Only catalog sensors have their set points looked up, and the columns grow
        geometrically: a backlog of a million sensors unknown to the catalog, first seen a
        batch at a time, cost ~2 µs per sensor per route and a copy of every column per batch."""
        n_old, n = self._n_points, len(sensors)
        if n <= n_old:
            return
        capacity = self._setpoints_store.shape[1]
        if n > capacity:
            grown = np.full((len(self.spec.levels), max(n, 2 * capacity, 16)), math.inf)
            grown[:, :n_old] = self._setpoints_store[:, :n_old]
            self._setpoints_store = grown
        block = self._setpoints_store[:, n_old:n]
        block[:] = np.array(self._setpoints_of(None))[:, None]
        for j, sensor in enumerate(sensors[n_old:]):
            if sensor is not None:
                block[:, j] = self._setpoints_of(sensor)
        self._n_points = n
        self.state.resize(n)
        if block.size:
            self._lowest = min(self._lowest, float(block.min()))

    @property
    def _setpoints(self) -> npt.NDArray[np.float64]:
        """Signed set points, (levels, sensors); +inf = level not configured."""
        return self._setpoints_store[:, : self._n_points]

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
        if rows.shape[0] == 0:
            return _NO_CHANGE
        signed = scores.score if self._sign > 0 else -scores.score
        if float(signed.max()) + max(self.spec.deadband, 0.0) < self._lowest and not self.level.any():
            # nothing crossed or held, nothing in alarm: the usual batch of most routes
            if scores.sensor_idx is None:
                groups = views(batch).row_groups(rows)
            else:
                groups = RowGroups.of(*scores.sensors_and_times(batch))
            return _no_change(self._advance(groups))
        sensor, event_ms = scores.sensors_and_times(batch)
        points = self._setpoints[:, sensor]  # (levels, rows)
        crossed = (signed >= points).sum(axis=0).astype(np.int8)
        held = (signed + self.spec.deadband >= points).sum(axis=0).astype(np.int8)  # >= crossed
        # sensors that may change: a row within a deadband, or in alarm; the others only advance
        level = self.state["level"]
        active = level != 0
        active[sensor[held > 0]] = True
        pick = active[sensor]
        n_late = 0
        sub: IntArray | None = None
        if not bool(pick.all()):
            rest = np.flatnonzero(~pick)
            n_late = self._advance(RowGroups.of(sensor[rest], event_ms[rest]))
            sub = np.flatnonzero(pick)
            if sub.shape[0] == 0:
                return _no_change(n_late)
            sensor, event_ms, crossed, held, points = sensor[sub], event_ms[sub], crossed[sub], held[sub], points[:, sub]
        conditions = self._apply_conditions if self._conditional else None
        previous, current, late = _scan_levels(self.state, sensor, event_ms, crossed, held, conditions)
        changed = np.flatnonzero(previous != current)
        reached = np.maximum(current[changed], previous[changed])  # the level entered, or the one left
        threshold = self._sign * points[reached - 1, changed] if changed.size else np.zeros(0)
        at = changed if sub is None else sub[changed]
        return Transitions(
            rows=rows[at],
            sensor_idx=sensor[changed],
            event_time_ms=event_ms[changed],
            previous=previous[changed],
            current=current[changed],
            score=scores.score[at],
            threshold=threshold,
            n_late=n_late + int(np.count_nonzero(late)),
        )

    def _advance(self, groups: RowGroups) -> int:
        """Rows of sensors none of which crosses or holds a level and none of which is in
        alarm: their levels stay 0. Moves the newest event times and the conditions' carries
        as the full scan would with all-zero crossings; returns how many rows were late."""
        last_ms = self.state["last_event_ms"]
        s, t, starts, ends = groups.sensor, groups.event_ms, groups.starts, groups.ends
        if s.shape[0] == 0:
            return 0
        if groups.ordered and starts is not None and ends is not None and bool(np.all(t[starts] > last_ms[s[starts]])):
            # the usual batch: every row fresh
            last_ms[s[ends]] = t[ends]
            if self._conditional:
                self._advance_conditions(s, starts, ends)
            return 0
        order = np.argsort(s, kind="stable")
        s, t = s[order], t[order]
        starts, segment, position = _segments(s)
        newest = _running_max(t, segment, last_ms[s[starts]])
        stale = _stale(t, starts, position, newest, last_ms[s[starts]])
        ends = run_ends(starts, s.shape[0])
        last_ms[s[ends]] = newest[ends]
        if self._conditional:
            fresh_s = s[~stale]
            if fresh_s.shape[0]:
                fresh_starts, fresh_ends = rules.segments(fresh_s)[:2]
                self._advance_conditions(fresh_s, fresh_starts, fresh_ends)
        return int(np.count_nonzero(stale))

    def _advance_conditions(self, s: Int32Array, starts: IntArray, ends: IntArray) -> None:
        """The conditions' carries after fresh rows that cross no level (sorted by sensor):
        no run in progress, ``length`` misses shifted into the n-of-m windows, hold times
        unchanged (nothing was within a deadband)."""
        spec, state = self.spec, self.state
        first = s[starts]
        if spec.for_s > 0:
            state["run_start_ms"][first] = rules.NONE_MS
        if spec.n_of_m is not None:
            m = spec.n_of_m[1]
            keep = np.uint64((1 << max(m - 1, 0)) - 1)
            length = (ends - starts + 1).astype(np.uint64)[:, None]
            carry = state["recent_bits"][first]
            shifted = np.where(length < 64, carry << np.minimum(length, np.uint64(63)), np.uint64(0))
            state["recent_bits"][first] = (shifted & keep).astype(np.uint64)

    def _apply_conditions(self, s: Int32Array, t: IntArray, crossed: Int8Array, held: Int8Array,
                          segments: Segmented | None = None) -> tuple[Int8Array, Int8Array]:
        """(lo, hi) of the clamp per row from for_s / n_of_m / hold_s (rows: fresh, by sensor;
        ``segments``: their ``rules.segments`` when the caller has them)."""
        spec, state = self.spec, self.state
        starts, ends, seg, position = rules.segments(s) if segments is None else segments
        first = s[starts]
        lo = np.zeros(s.shape[0], np.int8)
        hi = np.zeros(s.shape[0], np.int8)
        for k in range(len(spec.levels)):
            hit = crossed > k
            ok = hit
            if spec.n_of_m is not None:
                n, m = spec.n_of_m
                bits = state["recent_bits"][first, k]
                ok = rules.recent_count(hit, position, seg, starts, m, bits) >= n
                state["recent_bits"][first, k] = rules.next_carry_bits(hit, position, ends, seg, m, bits)
            if spec.for_s > 0:
                begun = rules.run_start(hit, t, starts, seg, state["run_start_ms"][first, k])
                ok = ok & hit & (t - begun >= round(spec.for_s * 1000))
                state["run_start_ms"][first, k] = begun[ends]
            kept = held > k
            if spec.hold_s > 0:
                last = rules.last_true_ms(kept, t, seg, state["held_ms"][first, k])
                kept = (last != rules.NONE_MS) & (t - last <= round(spec.hold_s * 1000))
                state["held_ms"][first, k] = last[ends]
            lo += ok
            hi += kept
        return lo, np.maximum(lo, hi)


Segmented = tuple[IntArray, IntArray, IntArray, IntArray]  # rules.segments: starts, ends, segment, position
Conditions = Callable[[Int32Array, IntArray, Int8Array, Int8Array, Segmented | None], tuple[Int8Array, Int8Array]]


def _scan_levels(
    state: SensorState,
    sensor: Int32Array,
    event_ms: IntArray,
    crossed: Int8Array,
    held: Int8Array,
    conditions: Conditions | None,
) -> tuple[Int8Array, Int8Array, npt.NDArray[np.bool_]]:
    """Apply L = clamp(L_prev, lo, hi) row by row per sensor, skipping rows not
    newer than the sensor's last event time; updates the state's level and
    last_event_ms. ``lo``/``hi`` are ``crossed``/``held``, or what ``conditions``
    makes of them.

    Each row is the map x -> clamp(x, lo, hi) (a stale row is the identity), and
    clamps compose into clamps, so a segmented doubling scan composes every
    sensor's prefix of maps in log2(longest run) vectorized steps; applying the
    prefix to the sensor's stored level gives each row's level. A row with lo == hi
    is a constant map (the score is outside every deadband), so a prefix need only
    start at the sensor's latest such row: the runs to compose are short.
    """
    n = sensor.shape[0]
    if n == 0:
        return np.zeros(0, np.int8), np.zeros(0, np.int8), np.zeros(0, np.bool_)
    level, last_ms = state["level"], state["last_event_ms"]
    order: IntArray | None = None
    if n > 1 and not bool(np.all(sensor[1:] >= sensor[:-1])):
        order = np.argsort(sensor, kind="stable")  # rows of a sensor together, in arrival order
        s, t, lo, hi = sensor[order], event_ms[order], crossed[order], held[order]
    else:
        s, t, lo, hi = sensor, event_ms, crossed.copy(), held.copy()
    starts, segment, position = _segments(s)
    seed = last_ms[s[starts]]
    newest = _running_max(t, segment, seed)  # newest event time up to each row
    stale = _stale(t, starts, position, newest, seed)
    ends = run_ends(starts, n)
    if not stale.any():
        if conditions is not None:
            lo, hi = conditions(s, t, lo, hi, (starts, ends, segment, position))
    else:
        if conditions is not None:
            fresh = np.flatnonzero(~stale)
            if fresh.size:
                lo[fresh], hi[fresh] = conditions(s[fresh], t[fresh], lo[fresh], hi[fresh], None)
        lo = np.where(stale, np.int8(0), lo).astype(np.int8)
        hi = np.where(stale, np.int8(np.iinfo(np.int8).max), hi).astype(np.int8)
    # a row with lo == hi sets the level whatever it was: compositions need only start there
    anchor = lo == hi
    anchor[starts] = True
    rows = np.arange(n, dtype=np.int64)
    _compose_prefix_clamps(lo, hi, rows - np.maximum.accumulate(np.where(anchor, rows, 0)))
    cur = np.minimum(np.maximum(level[s], lo), hi)  # clip, without np.clip's Python overhead
    prev = np.empty(n, np.int8)
    prev[1:] = cur[:-1]
    prev[starts] = level[s[starts]]
    level[s[ends]] = cur[ends]
    last_ms[s[ends]] = newest[ends]
    if order is None:
        return prev, cur, stale
    previous, current, late = np.empty(n, np.int8), np.empty(n, np.int8), np.empty(n, np.bool_)
    previous[order], current[order], late[order] = prev, cur, stale
    return previous, current, late


def _stale(t: IntArray, starts: IntArray, position: IntArray, newest: IntArray, seed: IntArray) -> npt.NDArray[np.bool_]:
    """Rows (sorted by sensor, each sensor's in arrival order) no newer than their sensor's
    newest event time before them (``seed``: per sensor, before the batch)."""
    stale = np.empty(t.shape[0], np.bool_)
    stale[starts] = t[starts] <= seed
    later = position[1:] > 0
    stale[1:][later] = (t[1:] <= newest[:-1])[later]
    return stale


def _no_change(n_late: int) -> Transitions:
    return _NO_CHANGE if n_late == 0 else dataclasses.replace(_NO_CHANGE, n_late=n_late)


_EMPTY_INT = np.zeros(0, np.int64)
_NO_CHANGE = Transitions(
    rows=_EMPTY_INT, sensor_idx=np.zeros(0, np.int32), event_time_ms=_EMPTY_INT, previous=np.zeros(0, np.int8),
    current=np.zeros(0, np.int8), score=np.zeros(0, np.float64), threshold=np.zeros(0, np.float64))
for _a in (_NO_CHANGE.rows, _NO_CHANGE.sensor_idx, _NO_CHANGE.previous, _NO_CHANGE.current, _NO_CHANGE.score,
           _NO_CHANGE.threshold):
    _a.flags.writeable = False


def _segments(sorted_keys: npt.NDArray[np.int32]) -> tuple[IntArray, IntArray, IntArray]:
    """Start row, segment number and position within the segment of each row."""
    first = firsts(sorted_keys)
    starts = np.flatnonzero(first)
    segment = np.cumsum(first) - 1
    return starts, segment, np.arange(sorted_keys.shape[0]) - starts[segment]


def _running_max(t: IntArray, segment: IntArray, seed: IntArray) -> IntArray:
    """max(seed of the segment, t of this and earlier rows of the segment), per row.

    Offsetting each segment above the previous one lets one np.maximum.accumulate
    run over all segments; the decoder bounds event times to a ~30-day window,
    so the offsets stay far inside int64."""
    t_min = int(t.min())
    span = int(t.max()) - t_min + 1
    key = segment * span + (t - t_min)
    running = np.maximum.accumulate(key) - segment * span + t_min
    return np.maximum(running, seed[segment])


def _compose_prefix_clamps(lo: Int8Array, hi: Int8Array, position: IntArray) -> None:
    """In place: (lo, hi)[i] becomes the composition of the clamps of rows
    i-position[i] .. i (Hillis-Steele scan; clamp(clamp(x, a), b) = clamp(x, clip(a, b)))."""
    step, longest = 1, int(position.max())
    while step <= longest:
        i = np.flatnonzero(position >= step)
        j = i - step
        lo_i, hi_i = lo[i], hi[i]
        lo[i] = np.minimum(np.maximum(lo[j], lo_i), hi_i)  # clip(lo[j], lo_i, hi_i)
        hi[i] = np.minimum(np.maximum(hi[j], lo_i), hi_i)
        step *= 2
