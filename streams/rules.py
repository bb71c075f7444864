"""Duration, repeat and hold conditions of a route, vectorized with per-sensor carry.

A route's level recursion is ``L = clamp(L_prev, lo, hi)`` (streams.alarms). Without
conditions ``lo`` is the number of set points the score crossed and ``hi`` the
number it still holds within the deadband. The conditions reshape both:

- ``for_s`` (on-delay, "above X for N minutes"): level k counts towards ``lo``
  only once every reading of the sensor has crossed k for at least ``for_s``
  seconds of event time;
- ``n_of_m`` ("N of M readings"): level k counts once at least n of the sensor's
  last m readings crossed it (with ``for_s`` too, both must hold);
- ``hold_s`` (clear hold time): level k stays in ``hi`` until the score has been
  out of k's deadband for ``hold_s`` seconds.

Rows come sorted by sensor, in arrival order, late rows removed; each function
takes the per-sensor carry of earlier batches and returns the new carry, so
any cut of the stream into batches gives the same levels.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.arrays import firsts, run_ends
from detectors.arrays import shifted as after_first
from detectors.base import IntArray

BoolArray = npt.NDArray[np.bool_]
NONE_MS = np.iinfo(np.int64).min  # no run in progress / never held


def segments(sensor: npt.NDArray[np.integer]) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Start row, end row, segment number and position within the segment of each row."""
    first = firsts(sensor)
    starts = np.flatnonzero(first)
    seg = np.cumsum(first) - 1
    ends = run_ends(starts, sensor.shape[0])
    return starts, ends, seg, np.arange(sensor.shape[0]) - starts[seg]


def run_start(hit: BoolArray, t: IntArray, starts: IntArray, seg: IntArray, carry: IntArray) -> IntArray:
    """Event time at which the current run of ``hit`` began, per row (NONE_MS if not
    in a run). ``carry``: per segment, the start of the run in progress before it."""
    n = hit.shape[0]
    idx = np.arange(n)
    last_miss = np.maximum.accumulate(np.where(hit, starts[seg] - 1, idx))  # resets per segment
    from_carry = last_miss < starts[seg]  # no miss in the segment so far
    begun = np.where(from_carry, carry[seg], t[np.minimum(last_miss + 1, n - 1)])
    begun = np.where(from_carry & (carry[seg] == NONE_MS), t[starts[seg]], begun)
    return np.where(hit, begun, NONE_MS)


def last_true_ms(hit: BoolArray, t: IntArray, seg: IntArray, carry: IntArray) -> IntArray:
    """Newest event time up to each row at which ``hit`` held (``carry`` before)."""
    t_min = int(t.min())
    span = int(t.max()) - t_min + 2
    key = np.where(hit, t - t_min + 1, 0) + seg * span  # 0 = not yet in this segment
    running = np.maximum.accumulate(key) - seg * span
    return np.where(running > 0, running + t_min - 1, carry[seg])


def recent_count(hit: BoolArray, position: IntArray, seg: IntArray, starts: IntArray, m: int,
                 carry: npt.NDArray[np.uint64]) -> IntArray:
    """How many of the last ``m`` readings (this one included) hit. ``carry`` per
    segment: bit j = whether the (j+1)-th most recent earlier reading hit."""
    c = np.cumsum(hit, dtype=np.int64)
    before = np.where(starts[seg] > 0, c[starts[seg] - 1], 0)
    in_seg = c - before
    lo = np.arange(hit.shape[0]) - m  # the row just outside the window
    outside = np.where(lo >= starts[seg], c[np.maximum(lo, 0)] - before, 0)
    from_rows = in_seg - outside
    n_carried = np.minimum(np.maximum(m - 1 - position, 0), 63).astype(np.uint64)
    carried = np.bitwise_count(carry[seg] & ((np.uint64(1) << n_carried) - np.uint64(1)))
    return (from_rows + carried.astype(np.int64)).astype(np.int64)


def next_carry_bits(hit: BoolArray, position: IntArray, ends: IntArray, seg: IntArray, m: int,
                    carry: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The carry after each segment: its last m-1 results, newest in bit 0."""
    keep = np.uint64((1 << max(m - 1, 0)) - 1)
    distance = ends[seg] - np.arange(hit.shape[0])  # 0 for the segment's last row
    bits = np.where(hit & (distance < m - 1), np.uint64(1) << np.minimum(np.maximum(distance, 0), 63).astype(np.uint64), np.uint64(0))
    fresh = np.add.reduceat(bits, after_first(ends + 1, 0)) if bits.size else bits
    length = (position[ends] + 1).astype(np.uint64)
    shifted = np.where(length < 64, carry << np.minimum(length, np.uint64(63)), np.uint64(0))
    return ((shifted | fresh) & keep).astype(np.uint64)
