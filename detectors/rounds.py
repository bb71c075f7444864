"""Split a batch into rounds of distinct sensors, keeping each sensor's order.

Round k holds every sensor's k-th row of the batch. Stepping a per-sensor
recursion round by round is vectorized across sensors and performs, for each
sensor, exactly the arithmetic of one-reading-at-a-time processing, so scores
are bit-identical however the stream is cut into batches. With many sensors
a batch is usually one or two rounds; a backlog from one sensor is many.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.base import IntArray


def occurrence_rounds(sensor: npt.NDArray[np.integer]) -> list[IntArray]:
    """Positions into ``sensor``: round k = each sensor's k-th occurrence, ascending."""
    n = sensor.shape[0]
    if n == 0:
        return []
    ascending = bool(np.all(sensor[1:] >= sensor[:-1]))
    if ascending and bool(np.all(sensor[1:] != sensor[:-1])):
        return [np.arange(n, dtype=np.int64)]  # the common case: no sensor twice
    order = np.arange(n, dtype=np.int64) if ascending else np.argsort(sensor, kind="stable")
    s = sensor[order]
    first = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(first)
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    by_rank = np.argsort(rank, kind="stable")
    counts = np.bincount(rank)
    # within a round, positions ascend (sorted by sensor within the rank)
    return [np.sort(p) for p in np.split(order[by_rank], np.cumsum(counts)[:-1])]
