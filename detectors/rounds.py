"""Per-sensor order within a batch: segments of one sensor's rows, and rounds.

A batch's rows are grouped by sensor (``group_by_sensor``), each sensor's rows
kept in their order: a *segment*. A per-sensor recursion can then run either

* as a segmented scan over the whole batch, when it is exact that way (integer
  counters, running maxima of indices, comparisons with the previous value), or
* round by round: round k holds every sensor's k-th row, so stepping round by
  round is vectorized across sensors and performs, for each sensor, exactly
  the arithmetic of one-reading-at-a-time processing (``rounds``).

Either way scores are bit-identical however the stream is cut into batches.
With many sensors a batch is usually one or two rounds; a backlog from one
sensor is many.
"""

from __future__ import annotations

import functools
from typing import Any
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.arrays import run_ends, run_starts
from detectors.base import IntArray

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Segments:
    """Rows grouped by sensor: ``order`` maps grouped position -> original position."""

    order: IntArray  # grouped row -> row of the input
    head: IntArray  # grouped index of each segment's first row
    size: IntArray  # rows per segment
    seg: IntArray  # segment of each grouped row
    rank: IntArray  # position of each grouped row within its segment

    @property
    def tail(self) -> IntArray:
        """Grouped index of each segment's last row."""
        out: IntArray = self.head + self.size - 1
        return out

    @property
    def first(self) -> BoolArray:
        """Grouped row is its segment's first."""
        out: BoolArray = self.rank == 0
        return out

    def subset(self, keep: BoolArray) -> Segments:
        """The segments of the kept grouped rows (empty segments dropped)."""
        seg = self.seg[keep]
        size = np.bincount(seg, minlength=self.head.shape[0])
        size = size[size > 0].astype(np.int64)
        return _segments(self.order[keep], size)


def group_by_sensor(sensor: npt.NDArray[np.integer]) -> Segments:
    """Segments of equal ``sensor``, ascending, each in row order (a stable sort)."""
    n = sensor.shape[0]
    if n and bool(np.all(sensor[1:] >= sensor[:-1])):
        order = np.arange(n, dtype=np.int64)
        s = sensor
    else:
        order = np.argsort(sensor, kind="stable").astype(np.int64)
        s = sensor[order]
    return segments_of(order, s)


@functools.lru_cache(maxsize=8)
def distinct(n: int) -> Segments:
    """The segments of ``n`` rows of distinct, ascending sensors (shared, read-only)."""
    rows = np.arange(n, dtype=np.int64)
    zeros, ones = np.zeros(n, np.int64), np.ones(n, np.int64)
    for a in (rows, zeros, ones):
        a.flags.writeable = False
    return Segments(rows, rows, ones, rows, zeros)


def segments_of(order: IntArray, key: npt.NDArray[np.integer]) -> Segments:
    """Segments of runs of equal ``key`` (the sensors of the rows ``order``, grouped)."""
    n = order.shape[0]
    if n and bool(np.all(key[1:] != key[:-1])):
        every = distinct(n)
        return Segments(order, every.head, every.size, every.seg, every.rank)
    starts = run_starts(key)
    return _segments(order, run_ends(starts, n) - starts + 1)


def _segments(order: IntArray, size: IntArray) -> Segments:
    n = order.shape[0]
    head = np.zeros(size.shape[0], np.int64)
    np.cumsum(size[:-1], out=head[1:])
    if n == size.shape[0]:  # the common case: every sensor once
        seg = np.arange(n, dtype=np.int64)
        return Segments(order, head, size, seg, np.zeros(n, np.int64))
    seg = np.repeat(np.arange(size.shape[0], dtype=np.int64), size)
    return Segments(order, head, size, seg, np.arange(n, dtype=np.int64) - head[seg])


def rounds(segments: Segments) -> tuple[IntArray, list[tuple[int, int]]]:
    """Grouped rows reordered by round (each segment's k-th row in round k), and each
    round's [start, stop) in that order: round k is a contiguous slice."""
    n = segments.rank.shape[0]
    if n == segments.head.shape[0]:
        return np.arange(n, dtype=np.int64), [(0, n)] if n else []
    by_rank = np.argsort(segments.rank, kind="stable").astype(np.int64)
    bounds = np.concatenate(([0], np.cumsum(np.bincount(segments.rank)))).tolist()
    return by_rank, list(zip(bounds[:-1], bounds[1:], strict=True))


def occurrence_rounds(sensor: npt.NDArray[np.integer]) -> list[IntArray]:
    """Positions into ``sensor``: round k = each sensor's k-th occurrence, ascending."""
    g = group_by_sensor(sensor)
    by_rank, bounds = rounds(g)
    pos = g.order[by_rank]
    return [np.sort(pos[lo:hi]) for lo, hi in bounds]


def newest_before(t: IntArray, segments: Segments, seed: IntArray) -> IntArray:
    """Per grouped row: the newest of ``seed`` (per segment) and the segment's earlier
    values of ``t`` (exact: integer running maxima)."""
    running = segment_cummax(t, segments)
    prev = np.empty_like(t)
    prev[1:] = running[:-1]
    first = segments.head
    prev[first] = seed
    # running max from the segment start, then with the seed
    out: IntArray = np.maximum(prev, seed[segments.seg])
    return out


def segment_cummax(t: IntArray, segments: Segments) -> IntArray:
    """Running maximum of the int64 ``t`` within each segment (exact)."""
    n = t.shape[0]
    if n == 0:
        return t.copy()
    if n == segments.head.shape[0]:
        return t.copy()
    t_min, t_max = int(t.min()), int(t.max())
    span = t_max - t_min + 1
    if span * segments.head.shape[0] < 2**62:
        offset = segments.seg * span
        out: IntArray = np.maximum.accumulate(offset + (t - t_min)) - offset + t_min
        return out
    # huge spread: run on dense ranks (order-preserving, exact), then map back
    values, rank = np.unique(t, return_inverse=True)
    rank = rank.reshape(-1).astype(np.int64)
    offset = segments.seg * (values.shape[0] + 1)
    back: IntArray = values[np.maximum.accumulate(offset + rank) - offset]
    return back


def segment_searchsorted(t: IntArray, seg: IntArray, query: IntArray, query_seg: IntArray) -> IntArray:
    """Per query: the first row of segment ``query_seg`` whose ``t`` is greater than
    ``query`` (its segment's end when none). ``seg`` ascends, ``t`` within a segment."""
    if t.shape[0] == 0 or query.shape[0] == 0:
        return np.zeros(query.shape[0], np.int64)
    low = min(int(t.min()), int(query.min()))
    span = max(int(t.max()), int(query.max())) - low + 1
    if span * (int(seg[-1]) + 2) < 2**62:
        keys = seg * span + (t - low)
        out: IntArray = np.searchsorted(keys, query_seg * span + (query - low), side="right").astype(np.int64)
        return out
    both_seg = np.r_[seg, query_seg]
    both_t = np.r_[t, query]
    is_query = np.r_[np.zeros(t.shape[0], np.int64), np.ones(query.shape[0], np.int64)]
    # queries sort after rows with equal t ("greater than"), rows of a segment before its end
    order = np.lexsort((is_query, both_t, both_seg))
    rows_before = np.cumsum(is_query[order] == 0)
    result = np.empty(query.shape[0], np.int64)
    q = order[order >= t.shape[0]]
    result[q - t.shape[0]] = rows_before[np.flatnonzero(order >= t.shape[0])]
    return result


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """Rounds of a grouping, laid out so that every round is one contiguous slice.

    Segments are put in one fixed order, longest first (``perm``); round k holds the
    k-th row of every segment with more than k rows, in that order. So the segments
    active in round k + 1 are the first ``counts[k + 1]`` of round k: a recursion that
    carries per-segment state from round to round reads round k's slice and writes the
    front of round k + 1's, with no gather or scatter (``detectors.recursions``).

    ``order`` maps each round-major position to its grouped row; round k occupies
    positions ``bounds[k] .. bounds[k + 1]``, ``counts[k]`` rows."""

    order: IntArray  # round-major position -> grouped row
    position: IntArray  # grouped row -> round-major position (the inverse of ``order``)
    perm: IntArray  # segment at each place of a round (longest first)
    bounds: list[int]
    counts: list[int]
    last: IntArray  # per place: round-major position of that segment's last row
    identity: bool  # one round (every segment once, in segment order): ``order`` is arange

    @property
    def n_rounds(self) -> int:
        return len(self.counts)

    @classmethod
    def of(cls, segments: Segments) -> RoundPlan:
        n, n_seg = segments.rank.shape[0], segments.head.shape[0]
        if n == n_seg:
            rows = distinct(n).order
            return cls(rows, rows, rows, [0, n], [n] if n else [], rows, True)
        size = segments.size
        perm = np.argsort(-size, kind="stable").astype(np.int64)
        place = np.empty(n_seg, np.int64)
        place[perm] = np.arange(n_seg, dtype=np.int64)
        longest = int(size[perm[0]])
        # counts[k]: segments with more than k rows
        per_size = np.bincount(size, minlength=longest + 1)
        counts = n_seg - np.cumsum(per_size)[:longest]
        bounds = np.zeros(longest + 1, np.int64)
        np.cumsum(counts, out=bounds[1:])
        position = bounds[segments.rank] + place[segments.seg]
        order = np.empty(n, np.int64)
        order[position] = np.arange(n, dtype=np.int64)
        last = bounds[size[perm] - 1] + np.arange(n_seg, dtype=np.int64)
        return cls(order, position, perm, bounds.tolist(), counts.tolist(), last, False)

    def to_rounds(self, a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """A grouped-order array (first axis: rows) in round-major order."""
        return a if self.identity else a[self.order]

    def to_grouped(self, a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """A round-major array back in grouped order."""
        return a if self.identity else a[self.position]
