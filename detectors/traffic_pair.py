"""``traffic_pair``: incident detection on adjacent station pairs (California-algorithm style).

For a station u and the next station d downstream on its road (detectors.roads),
an incident between them backs traffic up at u and empties the road at d:

* OCCDF  = occ_u - occ_d >= ``occdf_pct`` (percentage points), and
* OCCRDF = OCCDF / occ_u >= ``occrdf``, and
* the speed-drop rule: speed_u <= ``speed_ratio`` x speed_d (slow before the
  incident, free after it; a city-wide rush-hour slowdown moves both).

The test runs on every occupancy row of u (flag N), with u's newest speed and
d's newest occupancy and speed that *arrived before it* (u's speed of the same
reading comes first), each at most ``max_lag_s`` away in event time. Persistence: score = 1 + the event time
the test has held without a break at u, in the kind's expected periods
(0 when it does not hold), so a route at 3 asks for about three consecutive
intervals (the California persistence check). Routes decide; the
occupancy/speed tests are the detector's definition of "incident-like".

Arrival order decides which readings of d a reading of u sees, so scores do not
depend on where the stream is cut into batches. Persistence is one segmented
scan per batch (the start of a run of passed tests is an index maximum: exact). A value no newer than its
station's newest of that quantity is late: it scores 0 and is not used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from detectors.arrays import firsts, lasts, shifted
from detectors.base import FLAG_NORMAL, DetectorContext, FloatArray, Int32Array, IntArray, ReadingBatch, Scores
from detectors.params import check_at_least, check_fraction, check_positive, check_quantity, floats, ints
from detectors.roads import NONE, downstream_stations
from detectors.rounds import group_by_sensor
from detectors.state import NEVER_MS, Field, SensorState, StateBacked

MEASURE: Final = "incident_intervals"
BoolArray = npt.NDArray[np.bool_]


class TrafficPair(StateBacked):
    """Persistence of the occupancy-difference and speed-drop tests against the downstream station."""

    anomaly: ClassVar[str] = "none"

    def __init__(
        self,
        context: DetectorContext,
        *,
        occdf_pct: float = 10.0,
        occrdf: float = 0.5,
        speed_ratio: float = 0.8,
        max_lag_s: float | None = None,
        occupancy: str = "occupancy_pct",
        speed: str = "speed_kmh",
    ) -> None:
        check_positive("occdf_pct", occdf_pct)
        check_fraction("occrdf", occrdf)
        check_fraction("speed_ratio", speed_ratio)
        lag = 2.0 * context.expected_period_s if max_lag_s is None else max_lag_s
        check_at_least("max_lag_s", lag, 0.0)
        self._occ_q = check_quantity(occupancy, context.quantities)
        self._speed_q = check_quantity(speed, context.quantities)
        self.occdf_pct, self.occrdf, self.speed_ratio = float(occdf_pct), float(occrdf), float(speed_ratio)
        self.max_lag_ms = round(lag * 1000)
        self.period_ms = context.expected_period_s * 1000.0
        self.downstream = downstream_stations(context.site_ids, context.site_names)
        self.state = SensorState({
            "occ_ms": Field(np.int64, NEVER_MS), "occ": Field(np.float64, np.nan),
            "speed_ms": Field(np.int64, NEVER_MS), "speed": Field(np.float64, np.nan),
            "since_ms": Field(np.int64, NEVER_MS),
        })

    def score_and_update(self, batch: ReadingBatch) -> Scores:
        normal = (batch.flag == FLAG_NORMAL) & ((batch.quantity_idx == self._occ_q) | (batch.quantity_idx == self._speed_q))
        rows = np.flatnonzero(normal)
        if rows.size == 0:
            return Scores.none(MEASURE)
        # arrival order: by reading, rows of one reading in batch order (speed before occupancy)
        perm = np.argsort(batch.reading_idx[rows], kind="stable")  # rows ascend: ties keep batch order
        rows = rows[perm]
        sensor = batch.sensor_idx[rows]
        self.resize(max(int(sensor.max()) + 1, self.downstream.shape[0]))
        t, value = batch.event_time_ms[rows], batch.value[rows]
        is_occ = batch.quantity_idx[rows] == self._occ_q
        # a station's occupancy and speed streams, each with its own freshness
        stream = sensor.astype(np.int64) * 2 + is_occ
        fresh = _fresh(stream, t, self._last_ms(stream))
        test, upd = self._test(sensor, t, value, is_occ, stream, fresh, perm)
        scored = np.flatnonzero(is_occ)
        score = self._persist(sensor[scored], t[scored], test[scored], fresh[scored])
        self._remember(stream, t, value, upd)
        order = np.argsort(rows[scored])
        return Scores(rows=rows[scored][order].astype(np.int64), score=score[order], measure=MEASURE)

    def _last_ms(self, stream: IntArray) -> IntArray:
        out: IntArray = np.where(stream % 2 == 1, ints(self.state["occ_ms"])[stream // 2], ints(self.state["speed_ms"])[stream // 2])
        return out

    def _test(
        self, sensor: Int32Array, t: IntArray, value: FloatArray, is_occ: BoolArray, stream: IntArray, fresh: BoolArray,
        perm: IntArray,
    ) -> tuple[BoolArray, IntArray]:
        """On each fresh occupancy row: the occupancy and speed tests against the downstream
        station, with the newest values that arrived before it (this reading's speed included).
        Also the fresh rows by stream, then arrival. ``perm[i]``: the station-order position of
        arrival row i (rows in station order: each station's in arrival order)."""
        n = sensor.shape[0]
        down = np.full(n, NONE, np.int64)
        catalogued = sensor < self.downstream.shape[0]
        down[catalogued] = self.downstream[sensor[catalogued]]
        pos = np.arange(n, dtype=np.int64)
        own = sensor.astype(np.int64)
        safe_down = np.where(down == NONE, 0, down)
        upd = np.flatnonzero(fresh)
        upd = upd[np.argsort(stream[upd], kind="stable")]  # by stream, then arrival (= rising event time)
        keys = stream[upd] * (n + 1) + upd
        # searches for sorted queries are several times cheaper: the station's own speed
        # queries are sorted in station order, the downstream ones need a sort
        station_order = np.empty(n, np.int64)
        station_order[perm] = pos  # arrival positions in station order
        up_speed_t, up_speed = self._before(own * 2, pos, stream, t, value, upd, keys, station_order)
        down_order = np.argsort(safe_down * (2 * (n + 1)) + pos)  # sorts both downstream streams' queries
        d_occ_t, d_occ = self._before(safe_down * 2 + 1, pos, stream, t, value, upd, keys, down_order)
        d_speed_t, d_speed = self._before(safe_down * 2, pos, stream, t, value, upd, keys, down_order)
        lag = self.max_lag_ms
        with np.errstate(invalid="ignore"):
            occdf = value - d_occ
            ok = is_occ & fresh & (down != NONE)
            ok &= _near(up_speed_t, t, lag) & _near(d_occ_t, t, lag) & _near(d_speed_t, t, lag)
            ok &= (occdf >= self.occdf_pct) & (occdf >= self.occrdf * value) & (up_speed <= self.speed_ratio * d_speed)
        out: BoolArray = ok
        return out, upd

    def _before(
        self, want: IntArray, pos: IntArray, stream: IntArray, t: IntArray, value: FloatArray, upd: IntArray,
        keys: IntArray, order: IntArray | None,
    ) -> tuple[IntArray, FloatArray]:
        """Event time and value of the newest fresh row of stream ``want[i]`` arrived before row i
        (in this batch, else from the state; NEVER_MS/NaN if none). ``upd``: the fresh rows by
        stream, then arrival; ``keys``: stream * (n + 1) + row of each. ``order``: a permutation
        that sorts the queries (None: sort them here)."""
        n = pos.shape[0]
        query = want * (n + 1) + pos
        if order is None:
            order = np.argsort(query)
        at = np.empty(n, np.int64)
        at[order] = np.searchsorted(keys, query[order], side="left") - 1
        hit = at >= 0
        hit[hit] = stream[upd[at[hit]]] == want[hit]
        is_occ, station = want % 2 == 1, want // 2
        out_t = np.where(is_occ, ints(self.state["occ_ms"])[station], ints(self.state["speed_ms"])[station])
        out_v = np.where(is_occ, floats(self.state["occ"])[station], floats(self.state["speed"])[station])
        src = upd[at[hit]]
        out_t[hit], out_v[hit] = t[src], value[src]
        return out_t, out_v

    def _persist(self, sensor: Int32Array, t: IntArray, test: BoolArray, fresh: BoolArray) -> FloatArray:
        """score = 1 + (t - start of the unbroken run of passed tests) / period, per station in order.
        One segmented scan (exact: the run's start is an index maximum), no rounds."""
        out = np.zeros(sensor.shape[0])
        idx = np.flatnonzero(fresh)
        if idx.size == 0:
            return out
        since = ints(self.state["since_ms"])
        g = group_by_sensor(sensor[idx])
        i = idx[g.order]
        s, ti, ok = sensor[i], t[i], test[i]
        rows = np.arange(i.shape[0], dtype=np.int64)
        run_start = np.maximum(np.maximum.accumulate(np.where(ok, -1, rows)), g.head[g.seg] - 1) + 1
        station = s[g.head]
        seed = since[station][g.seg]
        carried = (run_start == g.head[g.seg]) & (seed != NEVER_MS)
        start = np.where(ok, np.where(carried, seed, ti[np.minimum(run_start, rows)]), NEVER_MS)
        out[i] = np.where(ok, 1.0 + (ti - np.where(ok, start, ti)) / self.period_ms, 0.0)
        since[station] = start[g.tail]
        return out

    def _remember(self, stream: IntArray, t: IntArray, value: FloatArray, upd: IntArray) -> None:
        """Each stream's newest fresh row becomes its state (``upd``: the fresh rows by stream,
        then arrival; a fresh row is newer than every earlier one of its stream)."""
        final = upd[lasts(stream[upd])]
        occ, station = stream[final] % 2 == 1, stream[final] // 2
        ints(self.state["occ_ms"])[station[occ]] = t[final[occ]]
        floats(self.state["occ"])[station[occ]] = value[final[occ]]
        ints(self.state["speed_ms"])[station[~occ]] = t[final[~occ]]
        floats(self.state["speed"])[station[~occ]] = value[final[~occ]]

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield from ()  # needs a real road network: tested through topology.yaml


def _near(other_ms: IntArray, t: IntArray, lag_ms: int) -> BoolArray:
    out: BoolArray = (other_ms != NEVER_MS) & (np.abs(t - np.where(other_ms == NEVER_MS, t, other_ms)) <= lag_ms)
    return out


def _fresh(stream: IntArray, t: IntArray, seed_ms: IntArray) -> BoolArray:
    """Rows newer than every earlier row (arrival order) of their stream and its state."""
    order = np.argsort(stream, kind="stable")
    s, ts, seed = stream[order], t[order], seed_ms[order]
    start = firsts(s)
    segment = np.cumsum(start) - 1
    t_min = int(ts.min())
    span = int(ts.max()) - t_min + 1
    running = np.maximum.accumulate(segment * span + (ts - t_min)) - segment * span + t_min
    newest_before = np.where(start, seed, shifted(np.maximum(running, seed), seed[0]))
    out = np.empty(stream.shape[0], np.bool_)
    out[order] = ts > newest_before
    return out
