"""``no_signal``: sensors that have sent nothing for too long, judged in event time.

A silent sensor sends no reading to score, so this detector speaks about sensors
that are *not* in the batch (Scores entries with row -1, see detectors.base).

When is "now"? Never the wall clock: the detector's clock is event time, the
``clock_rank``-th newest (default 3rd) of the sensors' newest event times, so
fewer than ``clock_rank`` sensors with fast clocks cannot move it (the decoder
admits readings up to ``input.max_future_skew_s`` ahead of arrival: with the
newest event time of the kind as clock, one sensor 60 s fast would make every
other hazmat sensor look 6 periods silent). Silence is judged only at *ticks*,
the multiples of the kind's ``expected_period_s`` (context): when a reading moves
the clock past one or more ticks, the detector checks every tracked sensor at
the newest tick T it passed, using the readings that *arrived before* that
reading (that reading's own sensor is speaking, so it is not checked). A sensor
whose newest event time is ``last`` has then been silent for
``(T - last) / period`` periods; entries are emitted for sensors silent for at
least ``report_after_periods`` (event time T, score = periods of silence).
Every reading of a sensor scores 0, so its alarm clears when it speaks again.

The rank: ``clock_rank``, capped at n - 1 (at least 1) for a catalog of n
sensors (context.sensor_ids), so one silent sensor cannot stop the clock of a
small kind (two sensors: the newer one's clock, as no majority can tell which
is wrong). The price: the clock runs only while at least that many sensors
report (a kind without a catalog and fewer sensors heard reports nothing), it
trails the newest event time by the spread of the newest few sensors (well
under a period in live traffic), and a fast sensor that falls silent is
reported late by its lead. ``clock_rank: 1`` is the newest event time.

State: nothing but the per-sensor arrays; the clock is re-derived from the
sensors' newest event times, so it never runs backwards. ``restore`` of a
subset of sensors gives the clock of that subset (never later than the full
one: ticks it has passed may be judged again, with those sensors' state);
the others count as never heard until restored or heard.

Why this is independent of batch boundaries: the ticks crossed, the reading
that crosses each, and what arrived before it are properties of the arrival
sequence alone; the batch is processed as that sequence (readings in
``reading_idx`` order), so one batch, many batches or one reading at a time give
the same entries (the clock after each reading is a function of the sensors'
newest event times, which are). When the clock jumps over several ticks at once
(a backlog) only the newest is checked: it holds the longest silences.

Tracked sensors: every sensor that has reported, plus the catalog's sensors
(context.sensor_ids) from the start of observation (the earliest event time
seen), so a catalog sensor that never reports is flagged too.

Period: the kind's ``expected_period_s``; with ``learn_period`` a sensor whose
own average spacing of readings ((last - first) / (n - 1), over its fresh
readings) is longer uses that instead (a slow sensor is not "silent"). It is
only ever lengthened, so an incident that makes sensors report faster does not
make their normal spacing look like silence.

A sensor whose clock runs *behind* still looks silent, by its lag.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from detectors.arrays import lasts, shifted
from detectors.base import DetectorContext, FloatArray, IntArray, ReadingBatch, Scores
from detectors.params import check_at_least, check_int_at_least, floats, ints
from detectors.readings import Readings
from detectors.rounds import RoundPlan, Segments, group_by_sensor, newest_before, segment_searchsorted, segments_of
from detectors.state import NEVER_MS, Field, SensorState, StateBacked
from detectors.views import views

MEASURE: Final = "silent_periods"
UNSET_MS: Final = np.iinfo(np.int64).max  # first_ms of a sensor never heard
BoolArray = npt.NDArray[np.bool_]
_PAIRS_PER_CHUNK: Final = 1 << 18  # (sensor, level) searches per chunk in NoSignal._crossings
STALE_QUANTILE: Final = 0.98  # the usual staleness is this quantile of a sensor's staleness at arrival
STALE_STEP_PERIODS: Final = 0.5  # quantile tracking step, in periods


@dataclass(frozen=True, slots=True)
class Silence:
    """Silences found at tick crossings: arrival position of the crossing reading, sensor,
    tick, periods of silence; ordered by (arrival position, sensor)."""

    at: IntArray
    who: IntArray
    tick: IntArray
    periods: FloatArray

    def mapped(self, members: IntArray, positions: IntArray | None) -> Silence:
        """From a partition's local sensor indices and arrival positions to the batch's."""
        at = self.at if positions is None else positions[self.at]
        return Silence(at, members[self.who], self.tick, self.periods)

    @staticmethod
    def join(found: list[Silence]) -> Silence | None:
        """Several partitions' silences as one, ordered by (arrival position, sensor)."""
        if not found:
            return None
        if len(found) == 1:
            return found[0]
        at, who, tick, periods = (np.concatenate([getattr(f, k) for f in found]) for k in ("at", "who", "tick", "periods"))
        order = np.lexsort((who, at))
        return Silence(at[order], who[order], tick[order], periods[order])


@dataclass(frozen=True, slots=True)
class _Pieces:
    """A sensor with its state constant over the crossings c_lo <= c < c_hi, not speaking."""

    sensor: IntArray
    c_lo: IntArray
    c_hi: IntArray
    last: IntArray
    first: IntArray
    count: IntArray
    heard: BoolArray
    stale: FloatArray  # the sensor's usual staleness (ms) at the time


@dataclass(slots=True)
class _View:
    """The sensors one input partition carries, in a local index space: copies of their
    state (written back by ``NoSignal._store``), and what their clock needs."""

    partition: int
    members: IntArray  # local index -> sensor_idx
    last: IntArray
    first: IntArray
    count: IntArray
    stale: FloatArray
    catalog: BoolArray  # tracked from the start of observation, heard or not
    rank: int
    floor_ms: int  # the clock is never below this (an idle partition follows the others)
    start_ms: int  # the kind's start of observation (for a partition never heard)

    @property
    def n(self) -> int:
        return int(self.members.shape[0])

    def clock(self) -> int:
        """The partition's watermark: the ``rank``-th newest of its sensors' newest event times."""
        return max(_newest(self.last, self.rank), self.floor_ms)


@dataclass(frozen=True, slots=True)
class _Track:
    """The batch's readings grouped by sensor, with each sensor's state after each of them
    (exact: integer running maxima and counts)."""

    n: int
    position: IntArray  # arrival position of each grouped row
    segments: Segments
    sensor: IntArray  # per segment
    last: IntArray  # per grouped row: state after it
    first: IntArray
    count: IntArray
    running_first: IntArray  # arrival order: earliest fresh event time so far
    start_seed: int
    prev: IntArray  # per grouped row: the sensor's newest event time before it
    stale: FloatArray  # per grouped row: the usual staleness after it (NoSignal._staleness)

    @classmethod
    def of(cls, view: _View, sensor: IntArray, t: IntArray, grouped: Segments | None) -> _Track:
        n = view.n
        last_s, first_s, count_s = view.last, view.first, view.count
        g = group_by_sensor(sensor) if grouped is None else grouped
        gs, gt = sensor[g.order].astype(np.int64), t[g.order]
        seg_sensor = gs[g.head]
        newest = newest_before(gt, g, last_s[seg_sensor])
        fresh = gt > newest
        n_fresh = np.cumsum(fresh, dtype=np.int64)
        n_fresh -= (n_fresh[g.head] - fresh[g.head])[g.seg]  # fresh rows so far, per segment
        rows = np.arange(gt.shape[0], dtype=np.int64)
        first_fresh = np.minimum.reduceat(np.where(fresh, rows, gt.shape[0]), g.head)
        first_t = np.where(first_fresh < gt.shape[0], gt[np.minimum(first_fresh, gt.shape[0] - 1)], UNSET_MS)
        seed_first = first_s[seg_sensor][g.seg]
        first = np.where(n_fresh > 0, np.minimum(seed_first, first_t[g.seg]), seed_first)
        fresh_arrival = np.empty_like(fresh)
        fresh_arrival[g.order] = fresh
        running_first = np.minimum.accumulate(np.where(fresh_arrival, t, UNSET_MS))
        return cls(n, g.order, g, seg_sensor, np.maximum(newest, gt), first, count_s[seg_sensor][g.seg] + n_fresh,
                   running_first, min(view.start_ms, int(first_s.min(initial=UNSET_MS))), newest,
                   view.stale[seg_sensor][g.seg])

    def pieces(self, view: _View, crossing: IntArray) -> _Pieces:
        """Per sensor of the state: the crossings before its first reading of the batch (all,
        if it sends none); per reading: those between it and the sensor's next one."""
        last_s, first_s, count_s = view.last, view.first, view.count
        g, n_rows = self.segments, self.position.shape[0]
        upto = np.full(self.n, n_rows, np.int64)  # the first reading's arrival position
        upto[self.sensor] = self.position[g.head]
        nxt = np.full(n_rows, n_rows, np.int64)
        nxt[:-1] = self.position[1:]
        nxt[g.tail] = n_rows
        everyone = np.arange(self.n, dtype=np.int64)
        seed_heard = last_s != NEVER_MS
        tracked = seed_heard | view.catalog
        cat = np.concatenate
        sensor = cat((everyone[tracked], self.sensor[g.seg]))
        c_lo = cat((np.zeros(int(tracked.sum()), np.int64), np.searchsorted(crossing, self.position, side="right")))
        c_hi = np.searchsorted(crossing, cat((upto[tracked], nxt)), side="left")
        keep = np.flatnonzero(c_lo < c_hi)
        heard = cat((seed_heard[tracked], np.ones(n_rows, np.bool_)))
        last = cat((last_s[tracked], self.last))
        first = cat((first_s[tracked], self.first))
        count = cat((count_s[tracked], self.count))
        stale = cat((view.stale[tracked], self.stale))
        return _Pieces(sensor[keep], c_lo[keep], c_hi[keep], last[keep], first[keep], count[keep], heard[keep],
                       stale[keep])

    def fold(self, view: _View) -> None:
        tail = self.segments.tail
        view.last[self.sensor] = self.last[tail]
        view.first[self.sensor] = self.first[tail]
        view.count[self.sensor] = self.count[tail]
        view.stale[self.sensor] = self.stale[tail]


class NoSignal(StateBacked):
    """Periods of silence per sensor at event-time ticks; 0 on every reading."""

    anomaly: ClassVar[str] = "gap"

    def __init__(self, context: DetectorContext, *, report_after_periods: float = 2.0, learn_period: bool = True,
                 clock_rank: int = 3, unheard_after_periods: float = 10.0, learn_staleness: bool = True,
                 warmup_readings: int = 10) -> None:
        check_at_least("report_after_periods", report_after_periods, 1.0)
        check_at_least("unheard_after_periods", unheard_after_periods, 1.0)
        check_int_at_least("warmup_readings", warmup_readings, 0)
        self.warmup_readings = warmup_readings
        if not isinstance(learn_staleness, bool):
            msg = f"learn_staleness: must be true or false, got {learn_staleness!r}"
            raise ValueError(msg)
        self.unheard_after_periods = float(unheard_after_periods)
        self.learn_staleness = learn_staleness
        check_int_at_least("clock_rank", clock_rank, 1)
        if not isinstance(learn_period, bool):
            msg = f"learn_period: must be true or false, got {learn_period!r}"
            raise ValueError(msg)
        self.report_after_periods = float(report_after_periods)
        self.learn_period = learn_period
        self.tick_ms = max(1, round(context.expected_period_s * 1000))
        self.n_catalog = len(context.sensor_ids)
        self.clock_rank = clock_rank
        # where each catalog sensor's key lands (all on 0 when the context does not say)
        self.catalog_partition = np.zeros(self.n_catalog, np.int64)
        if len(context.sensor_partitions) == self.n_catalog:
            self.catalog_partition = np.asarray(context.sensor_partitions, np.int64)
        # the rank used on a partition: n catalog sensors there cap it at n - 1 (>= 1), so
        # one silent sensor of a small partition cannot hold its clock back
        self.rank = self._rank(self.n_catalog)
        # the clock floor of partitions that were idle (not checkpointed: after a restart a
        # tick may be judged again, and the route's restored level absorbs the repeat)
        self.floor_ms: dict[int, int] = {}
        self.state = SensorState(
            {"last_ms": Field(np.int64, NEVER_MS), "first_ms": Field(np.int64, UNSET_MS), "n_fresh": Field(np.int64, 0),
             "partition": Field(np.int64, -1), "stale_ms": Field(np.float64, math.nan)}
        )

    def _rank(self, n_catalog: int) -> int:
        return min(self.clock_rank, max(1, n_catalog - 1)) if self.n_catalog else self.clock_rank

    # -- the Detector protocol ---------------------------------------------------------
    def score_and_update(self, batch: ReadingBatch) -> Scores:
        readings = views(batch).readings()
        if len(readings) == 0:
            return Scores.none(MEASURE)
        self.resize(max(self.n_catalog, int(batch.sensor_idx.max()) + 1))
        sensor = batch.sensor_idx[readings.row].astype(np.int64)
        t = batch.event_time_ms[readings.row]
        part = batch.partitions()[readings.row].astype(np.int64)
        heard = np.unique(part)
        if heard.shape[0] == 1 and not batch.idle_partitions:  # the common case: no split needed
            view = self._view(int(heard[0]))
            local = self._local(view, sensor)
            silence = self._scan(view, local, t, _grouped(batch, readings))
            return self._scores(batch, readings, None if silence is None else silence.mapped(view.members, None))
        found, clocks = self._scan_partitions(sensor, t, part, heard)
        found += self._idle(set(batch.idle_partitions) - set(heard.tolist()), min(clocks), len(readings))
        return self._scores(batch, readings, Silence.join(found))

    def _scan_partitions(self, sensor: IntArray, t: IntArray, part: IntArray,
                         heard: IntArray) -> tuple[list[Silence], list[int]]:
        """Each partition's readings against that partition's own clock: how fast another
        partition is consumed cannot make this one's sensors look silent. Also each
        partition's clock after the batch."""
        # a sensor first heard in this batch is on the partition it is heard on from the batch's
        # start: scanned one partition after another, it would otherwise be judged, until its
        # first reading, on the partition its key hashes to with murmur2, which is not where a
        # producer with another partitioner (librdkafka's CRC32) puts it
        recorded = ints(self.state["partition"])
        new = recorded[sensor] < 0
        if new.any():
            first_heard, at = np.unique(sensor[new], return_index=True)
            recorded[first_heard] = part[new][at]
        found, clocks = [], []
        for q in heard.tolist():
            sel = np.flatnonzero(part == q)
            view = self._view(q)
            silence = self._scan(view, self._local(view, sensor[sel]), t[sel], None)
            clocks.append(view.clock())
            if silence is not None:
                found.append(silence.mapped(view.members, sel))
        return found, clocks

    def _view(self, partition: int) -> _View:
        """The sensors ``partition`` carries: heard there last, or (never heard) hashed there."""
        n = self.state.n_sensors
        recorded = ints(self.state["partition"])[:n]
        where = recorded.copy()
        unheard = where[: self.n_catalog] < 0
        where[: self.n_catalog][unheard] = self.catalog_partition[unheard]
        members = np.flatnonzero(where == partition)
        first = ints(self.state["first_ms"])[members]
        stale = floats(self.state["stale_ms"])[members]
        rank = self._rank(int(np.count_nonzero(self._hashed(partition))))
        return _View(partition, members, ints(self.state["last_ms"])[members], first,
                     ints(self.state["n_fresh"])[members], np.where(np.isnan(stale), float(self.tick_ms), stale),
                     self._hashed_here(members, partition), rank, self.floor_ms.get(partition, NEVER_MS),
                     int(first.min(initial=UNSET_MS)))

    def _hashed(self, partition: int) -> BoolArray:
        """Catalog sensors whose key the default partitioner puts on ``partition``."""
        out: BoolArray = self.catalog_partition == partition
        return out

    def _hashed_here(self, members: IntArray, partition: int) -> BoolArray:
        """Which ``members`` are tracked before they are heard: the catalog's sensors hashed to
        this partition (one heard first elsewhere is not missed here before it arrives)."""
        out: BoolArray = members < self.n_catalog
        out[out] = self.catalog_partition[members[out]] == partition
        return out

    def _local(self, view: _View, sensor: IntArray) -> IntArray:
        """Local indices of ``sensor`` in ``view``; sensors new to the partition join it."""
        recorded = ints(self.state["partition"])
        recorded[sensor] = view.partition  # a reading says where its sensor is now
        pos = np.searchsorted(view.members, sensor)
        n = view.members.shape[0]
        known = pos < n
        known[known] = view.members[pos[known]] == sensor[known]
        if bool(known.all()):
            return pos
        self._extend(view, np.unique(sensor[~known]))  # (members ascend: the sensors not among them)
        return np.searchsorted(view.members, sensor)

    def _extend(self, view: _View, joined: IntArray) -> None:
        members = np.union1d(view.members, joined)
        pos = np.searchsorted(members, view.members)
        for name, key in (("last", "last_ms"), ("first", "first_ms"), ("count", "n_fresh"), ("stale", "stale_ms")):
            old = getattr(view, name)
            grown = np.zeros(members.shape[0], old.dtype)
            grown[pos] = old
            came = self.state[key][joined]
            grown[np.searchsorted(members, joined)] = np.where(np.isnan(came), float(self.tick_ms), came) \
                if name == "stale" else came
            setattr(view, name, grown)
        view.members = members
        view.catalog = self._hashed_here(members, view.partition)

    def _store(self, view: _View) -> None:
        ints(self.state["last_ms"])[view.members] = view.last
        ints(self.state["first_ms"])[view.members] = view.first
        ints(self.state["n_fresh"])[view.members] = view.count
        floats(self.state["stale_ms"])[view.members] = view.stale

    def _scan(self, view: _View, sensor: IntArray, t: IntArray, grouped: Segments | None) -> Silence | None:
        """Fold the readings (arrival order) into the state; the silences found at the
        tick crossings on the way, ordered by (arrival position, sensor)."""
        track = _Track.of(view, sensor, t, grouped)
        crossing, tick, start, w0 = self._crossings(track, view)
        track = dataclasses.replace(track, stale=self._staleness(track, view, crossing, tick, start, w0))
        silence = self._silences(track, view, crossing, tick) if crossing.size else None
        track.fold(view)
        self._store(view)
        return silence

    def _idle(self, idle: set[int], kind_clock: int, n_readings: int) -> list[Silence]:
        """Idle partitions follow the clock of the partitions heard in this batch (the kind's
        watermark, Flink's idleness): their sensors, none of them speaking, are judged at
        the newest tick it passed."""
        found = []
        for q in sorted(idle):
            view = self._view(q)
            before = view.clock()
            self.floor_ms[q] = max(before, kind_clock)
            if kind_clock == NEVER_MS or (before != NEVER_MS and kind_clock // self.tick_ms <= before // self.tick_ms):
                continue
            tick = kind_clock // self.tick_ms * self.tick_ms
            heard = view.last != NEVER_MS
            tracked = np.flatnonzero(heard | view.catalog)
            start = int(ints(self.state["first_ms"]).min(initial=UNSET_MS))  # the kind's start of observation
            since = np.where(heard[tracked], view.last[tracked], start)
            period = self._period(view.last[tracked], view.first[tracked], view.count[tracked])
            extra = self._extra(view.stale[tracked], period, heard[tracked])
            periods = (tick - since - extra) / period
            after = self._after(heard[tracked], view.count[tracked])
            silent = np.flatnonzero((periods >= after) & (since != UNSET_MS))
            if silent.size:
                who = view.members[tracked[silent]]
                found.append(Silence(np.full(who.shape[0], n_readings, np.int64), who,
                                     np.full(who.shape[0], tick, np.int64), periods[silent]))
        return found

    def _crossings(self, track: _Track, view: _View) -> tuple[IntArray, IntArray, int, int]:
        """The arrival positions at which the clock (the ``rank``-th newest of the sensors'
        newest event times) passes one or more ticks, and the newest tick passed at each.

        The clock only moves at readings, and only to a value some sensor's newest event
        time takes (a *level*). Per level v, the position where it is reached is where the
        ``rank``-th sensor gets to >= v (sensors already there before the batch count from
        the start); per tick, that of the first level at or past it. Exact integer work:
        a search per (sensor, level it passes in the batch), levels limited to those
        preceded by a tick, in chunks of bounded size.

        Also returns where the clock starts (-1: it ran before the batch; the number of
        readings: it does not start) and its value there."""
        none = np.zeros(0, np.int64)
        n_rows = int(track.position.shape[0])
        r, tick_ms = view.rank, self.tick_ms
        seed = view.last
        g = track.segments
        final = seed.copy()
        final[track.sensor] = track.last[g.tail]
        w0, w_end = _newest(seed, r), _newest(final, r)
        start = -1
        if w_end == NEVER_MS:
            return none, none, n_rows, NEVER_MS
        if w0 == NEVER_MS:  # the clock starts at the reading that brings the rank-th sensor
            heard = int(np.count_nonzero(seed != NEVER_MS))
            new = np.flatnonzero(seed[track.sensor] == NEVER_MS)
            start = int(np.sort(track.position[g.head[new]])[r - heard - 1])
            upto = np.maximum.reduceat(np.where(track.position <= start, track.last, NEVER_MS), g.head)
            at_start = seed.copy()
            at_start[track.sensor] = np.maximum(seed[track.sensor], upto)
            w0 = _newest(at_start, r)
        w0 = max(w0, view.floor_ms)  # an idle spell may have moved the clock on already
        if w_end <= w0 or w_end // tick_ms == w0 // tick_ms:
            return none, none, start, w0
        ahead = seed[seed > w0]  # fewer than r sensors
        level = np.concatenate((track.last, ahead))
        level = np.unique(level[(level > w0) & (level <= w_end)])
        level = level[level // tick_ms > shifted(level, w0) // tick_ms]  # a tick just below
        reached = _reached(track, seed, ahead, level, r)
        last_of_run = lasts(reached)
        return reached[last_of_run], level[last_of_run] // tick_ms * tick_ms, start, w0

    def _silences(self, track: _Track, view: _View, crossing: IntArray, tick: IntArray) -> Silence | None:
        """Every (crossing, sensor) with a silence, found per *piece* (a sensor and the
        crossings between two of its readings, its state constant) by binary search, since
        the silence only grows from one crossing to the next within a piece."""
        pieces = track.pieces(view, crossing)
        n_cross = crossing.shape[0]
        # the start of observation at each crossing (for sensors never heard)
        earlier = np.concatenate((np.array([UNSET_MS], np.int64), track.running_first))
        start = np.minimum(track.start_seed, earlier[crossing])
        lo, hi = pieces.c_lo.copy(), pieces.c_hi.copy()
        period = self._period(pieces.last, pieces.first, pieces.count)

        extra = self._extra(pieces.stale, period, pieces.heard)
        after = self._after(pieces.heard, pieces.count)

        def periods(piece: IntArray, c: IntArray) -> FloatArray:
            since = np.where(pieces.heard[piece], pieces.last[piece], start[c])
            out: FloatArray = (tick[c] - since - extra[piece]) / period[piece]
            return out

        every = np.arange(lo.shape[0], dtype=np.int64)
        for _ in range(int(n_cross).bit_length() + 1):
            open_ = np.flatnonzero(lo < hi)
            if open_.size == 0:
                break
            mid = (lo[open_] + hi[open_]) // 2
            silent = periods(every[open_], mid) >= after[open_]
            hi[open_] = np.where(silent, mid, hi[open_])
            lo[open_] = np.where(silent, lo[open_], mid + 1)
        size = pieces.c_hi - lo
        piece = np.repeat(every, size)
        if piece.size == 0:
            return None
        c = lo[piece] + np.arange(piece.size, dtype=np.int64) - np.repeat(np.cumsum(size) - size, size)
        who = pieces.sensor[piece]
        order = np.lexsort((who, crossing[c]))
        piece, c = piece[order], c[order]
        return Silence(crossing[c], who[order], tick[c], periods(piece, c))

    def _staleness(self, track: _Track, view: _View, crossing: IntArray, tick: IntArray, start: int,
                   w0: int) -> FloatArray:
        """Per grouped row: the sensor's usual staleness after it (a running quantile).

        A reading's staleness is how far its sensor's newest event time trailed the
        partition's clock just before it arrived: about one period for a sensor that
        reports on its own, several for one behind a gateway that forwards a few readings
        at a time, and its lag for a sensor whose clock runs behind. The clock is taken
        at tick resolution (the newest tick it had passed, plus half a tick), which the
        crossings give at no extra cost. The quantile is tracked per sensor in arrival
        order (q += step * (tau - [x < q])), so an outage moves it by one step only; over
        a sensor's first ``warmup_readings`` it is the largest staleness seen (a gateway's
        pattern is learned at once, at the price of an outage that early counting as
        normal for a while). Silence is measured beyond it (``_extra``)."""
        out = track.stale.copy()
        if not self.learn_staleness or out.shape[0] == 0:
            return out
        before = self._tick_before(track.position, crossing, tick, start, w0)
        valid = (before != NEVER_MS) & (track.prev != NEVER_MS) & (track.last > track.prev)
        x = np.where(valid, np.maximum(before + self.tick_ms // 2 - track.prev, 0), 0).astype(np.float64)
        step_ms = STALE_STEP_PERIODS * self.tick_ms
        plan = RoundPlan.of(track.segments)  # round k: every sensor's k-th reading, a prefix of places
        q = view.stale[track.sensor[plan.perm]]  # per place, updated in place round by round
        x_r, valid_r = plan.to_rounds(x), plan.to_rounds(valid)
        early_r = plan.to_rounds(track.count <= self.warmup_readings)
        any_early = bool(early_r.any())
        after = np.empty(x.shape[0])
        moved, top = np.empty(q.shape[0]), np.empty(q.shape[0])
        b, c = plan.bounds, plan.counts
        for k in range(len(c)):
            lo, width = b[k], c[k]
            hi = lo + width
            qk, xk, m = q[:width], x_r[lo:hi], moved[:width]
            np.multiply(step_ms, np.subtract(STALE_QUANTILE, np.less(xk, qk)), out=m)
            m += qk
            if any_early:
                np.copyto(m, np.maximum(qk, xk, out=top[:width]), where=early_r[lo:hi])
            np.maximum(m, 0.0, out=m)
            np.copyto(qk, m, where=valid_r[lo:hi])
            after[lo:hi] = qk
        out[:] = plan.to_grouped(after)
        return out

    def _tick_before(self, position: IntArray, crossing: IntArray, tick: IntArray, start: int, w0: int) -> IntArray:
        """The newest tick the clock had passed just before each arrival ``position``
        (NEVER_MS while the clock has not started)."""
        base = NEVER_MS if w0 == NEVER_MS else w0 // self.tick_ms * self.tick_ms
        k = np.searchsorted(crossing, position, side="left") - 1  # crossings strictly before
        ticked = tick[np.maximum(k, 0)] if tick.size else np.full(position.shape[0], base, np.int64)
        out: IntArray = np.where(k >= 0, ticked, base)
        out = np.where(position <= start, NEVER_MS, out)
        return out

    def _after(self, heard: BoolArray, count: IntArray) -> FloatArray:
        """Periods of silence that count: ``report_after_periods`` once a sensor has shown
        how it reports (``warmup_readings``), ``unheard_after_periods`` before."""
        known = heard & (count >= self.warmup_readings)
        out: FloatArray = np.where(known, self.report_after_periods, self.unheard_after_periods)
        return out

    def _extra(self, stale: FloatArray, period: FloatArray, heard: BoolArray) -> FloatArray:
        """How much staleness beyond one period is this sensor's normal (0 if never heard)."""
        out: FloatArray = np.where(heard, np.maximum(stale - period, 0.0), 0.0)
        return out

    def _period(self, last: IntArray, first: IntArray, count: IntArray) -> FloatArray:
        """The period silence is measured in, per sensor (see the module docstring)."""
        expected = np.full(last.shape[0], float(self.tick_ms))
        if not self.learn_period:
            return expected
        known = count >= 3
        learned = np.where(known, (last - np.where(known, first, last)) / np.maximum(count - 1, 1), 0.0)
        out: FloatArray = np.maximum(expected, learned)
        return out

    def _scores(self, batch: ReadingBatch, readings: Readings, silent: Silence | None) -> Scores:
        real_rows = readings.row_sorted
        if silent is None:
            return Scores(rows=real_rows, score=np.zeros(real_rows.shape[0]), measure=MEASURE)
        who, at, tick, periods = silent.who, silent.at, silent.tick, silent.periods
        anchor = self._anchor(batch, readings, who, at)
        # real rows ascend; a silence entry sits just before its sensor's next reading
        cat = np.concatenate
        row = cat((real_rows, np.full(who.size, -1, np.int64)))
        key_row = cat((real_rows, anchor))
        key_real = cat((np.ones(real_rows.size, np.int64), np.zeros(who.size, np.int64)))
        key_at = cat((np.zeros(real_rows.size, np.int64), at))
        order = np.lexsort((key_at, key_real, key_row))
        n_real = real_rows.size
        sensor = cat((batch.sensor_idx[real_rows].astype(np.int64), who))
        times = cat((batch.event_time_ms[real_rows], tick))
        return Scores(
            rows=row[order],
            score=cat((np.zeros(n_real), periods))[order],
            measure=MEASURE,
            sensor_idx=sensor[order].astype(np.int32),
            event_time_ms=times[order],
        )

    @staticmethod
    def _anchor(batch: ReadingBatch, readings: Readings, who: IntArray, at: IntArray) -> IntArray:
        """The batch row of each silent sensor's first reading after arrival position ``at``
        (len(batch) if it sends none later in this batch)."""
        n = len(readings)
        sensor = batch.sensor_idx[readings.row].astype(np.int64)
        keys = sensor * (n + 1) + np.arange(n)
        order = np.argsort(keys)
        idx = np.searchsorted(keys[order], who * (n + 1) + at, side="right")
        found = idx < n
        found[found] = sensor[order[idx[found]]] == who[found]
        out = np.full(who.shape[0], len(batch), np.int64)
        out[found] = readings.row[order[idx[found]]]
        return out

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"report_after_periods": 3.0, "learn_period": False, "clock_rank": 1}
        yield {"clock_rank": 6}


def _reached(track: _Track, seed: IntArray, ahead: IntArray, level: IntArray, r: int) -> IntArray:
    """For each level (ascending, each above the clock before the batch and at most its
    clock after): the arrival position of the reading that brings the ``r``-th sensor to
    it (sensors in ``ahead`` were there before the batch). Exact integer work: a search per
    (sensor, level it passes in the batch), in chunks of bounded size."""
    g = track.segments
    need = r - (ahead[None, :] >= level[:, None]).sum(axis=1)  # sensors still to come
    lo = np.searchsorted(level, seed[track.sensor], side="right")  # per segment: levels it passes
    hi = np.searchsorted(level, track.last[g.tail], side="right")
    reached = np.empty(level.shape[0], np.int64)
    step = max(1, _PAIRS_PER_CHUNK // max(1, track.sensor.shape[0]))
    for c0 in range(0, level.shape[0], step):
        c1 = min(level.shape[0], c0 + step)
        a, b = np.maximum(lo, c0), np.minimum(hi, c1)
        count = np.maximum(b - a, 0)
        seg = np.repeat(np.arange(count.shape[0], dtype=np.int64), count)
        li = np.repeat(a, count) + np.arange(seg.shape[0], dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
        row = segment_searchsorted(track.last, g.seg, level[li] - 1, seg)  # first row with last >= level
        pos = track.position[row]
        order = np.lexsort((pos, li))
        per_level = np.bincount(li - c0, minlength=c1 - c0)
        first = np.cumsum(per_level) - per_level
        reached[c0:c1] = pos[order][first + need[c0:c1] - 1]
    return reached


def _newest(last: IntArray, rank: int) -> int:
    """The ``rank``-th newest of the sensors' newest event times (NEVER_MS with fewer heard)."""
    k = last.shape[0] - rank
    return NEVER_MS if k < 0 else int(np.partition(last, k)[k])


def _grouped(batch: ReadingBatch, readings: Readings) -> Segments | None:
    """The readings grouped by sensor, each sensor's in arrival order, read off the batch's
    row order when it already is (sensor, arrival); None when it is not (then sort)."""
    rows = readings.row_sorted
    sensor, position = batch.sensor_idx[rows], readings.of_row[rows]
    same = sensor[1:] == sensor[:-1]
    if not bool(np.all((sensor[1:] > sensor[:-1]) | (same & (position[1:] > position[:-1])))):
        return None
    return segments_of(position, sensor)
