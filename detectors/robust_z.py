"""``robust_z``: |x - median| / (1.4826 MAD) over the sensor's last ``window`` readings.

Each sensor keeps a ring buffer of its last ``window`` readings. A reading is
scored against the median and the median absolute deviation of the buffer
(scaled by 1.4826, the MAD of a unit normal), then written into it. Unlike a
mean/std, one wild reading in the buffer moves neither the median nor the MAD,
so it neither masks the next anomaly nor inflates later scores. Sensors score
0 until their buffer is full. Costs O(window) per reading (a median per row).

A score is a function of the buffer's multiset alone, so a batch is scored at
once (``scan``, no rounds): every reading's buffer is rebuilt from the state's
ring and the sensor's earlier readings of the batch, and the medians are the
ones np.median computes (the middle value, or the mean of the two middle values
for an even window), bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import floats, ints
from detectors.series import Series, SeriesDetector
from detectors.state import Field
from detectors.stats import scale

MAD_TO_STD = 1.4826
MAX_WINDOW = 10_000
CHUNK_ROWS = 2048


class RobustZScore(SeriesDetector):
    """Rolling median / MAD z-score per sensor."""

    measure: ClassVar[str] = "robust_z"
    anomaly: ClassVar[str] = "spike"
    exact_scan: ClassVar[bool] = True

    def __init__(self, context: DetectorContext, *, quantity: str, window: int = 60) -> None:
        if not 3 <= window <= MAX_WINDOW:
            msg = f"window: {window!r} is out of range; valid: 3 <= window <= {MAX_WINDOW}"
            raise ValueError(msg)
        self.window = int(window)
        super().__init__(context, quantity=quantity)

    def state_fields(self) -> Mapping[str, Field]:
        return {"n": Field(np.int64, 0), "ring": Field(np.float64, 0.0, (self.window,))}

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value"}
        yield {"quantity": "value", "window": 5}

    def scan(self, series: Series) -> FloatArray:
        w, g = self.window, series.segments
        count = ints(self.state["n"])
        sensor = series.sensor[g.head]
        n0 = count[sensor]
        before = n0[g.seg] + g.rank  # readings of the sensor before each row
        out = np.zeros(before.shape[0], np.float64)
        rows = np.flatnonzero(before >= w)
        windows = self._sequences(series, n0) if int(g.rank.max(initial=0)) > 0 else None
        for lo in range(0, rows.shape[0], CHUNK_ROWS):  # bounded (rows x window) temporaries
            r = rows[lo : lo + CHUNK_ROWS]
            if windows is None:  # every sensor once: its buffer is its ring (order does not matter)
                past: FloatArray = floats(self.state["ring"]).take(series.sensor[r].astype(np.int64), axis=0)
            else:
                past = windows[g.seg[r] * w + g.head[g.seg[r]] + g.rank[r]]
            ordered = np.sort(past, axis=1)
            median = _middle(ordered)
            deviation = np.abs(ordered - median[:, None])
            deviation.sort(axis=1)
            mad = MAD_TO_STD * _middle(deviation)
            out[r] = np.abs(series.value[r] - median) / scale(mad * mad, median)
        self._remember(series, n0)
        return out

    def _sequences(self, series: Series, n0: IntArray) -> FloatArray:
        """Per segment, the ring's ``window`` readings oldest first, then the batch's; as a
        sliding-window view, row ``seg * window + head + rank`` is the buffer before a row."""
        w, g = self.window, series.segments
        n_seg = g.head.shape[0]
        seq = np.empty(n_seg * w + series.value.shape[0], np.float64)
        off = np.arange(n_seg, dtype=np.int64) * w + g.head
        j = np.arange(w, dtype=np.int64)
        slot = (n0[:, None] + j) % w + (series.sensor[g.head].astype(np.int64) * w)[:, None]
        seq[off[:, None] + j] = floats(self.state["ring"]).reshape(-1).take(slot)
        seq[off[g.seg] + w + g.rank] = series.value
        out: FloatArray = np.lib.stride_tricks.sliding_window_view(seq, w)
        return out

    def _remember(self, series: Series, n0: IntArray) -> None:
        """Each segment's last ``window`` readings into its ring; counts forward."""
        w, g = self.window, series.segments
        keep = np.flatnonzero(g.rank >= (g.size - w)[g.seg])
        slot = (n0[g.seg[keep]] + g.rank[keep]) % w
        floats(self.state["ring"])[series.sensor[keep], slot] = series.value[keep]
        ints(self.state["n"])[series.sensor[g.head]] = n0 + g.size

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        n = ints(self.state["n"])[sensor]
        ring = floats(self.state["ring"])
        past = ring[sensor]
        median = np.median(past, axis=1)
        mad = MAD_TO_STD * np.median(np.abs(past - median[:, None]), axis=1)
        score: FloatArray = np.where(n >= self.window, np.abs(value - median) / scale(mad * mad, median), 0.0)
        ring[sensor, n % self.window] = value
        ints(self.state["n"])[sensor] = n + 1
        return score




def _middle(ordered: FloatArray) -> FloatArray:
    """np.median(a, axis=1) of rows already sorted: the middle value, or the mean of the
    two middle values, the values np.median finds (numpy's sort of short float rows is
    vectorized, and cheaper than the two partitions a median and a MAD take)."""
    half = ordered.shape[1] // 2
    if ordered.shape[1] % 2:
        odd: FloatArray = ordered[:, half].copy()
        return odd
    out: FloatArray = (ordered[:, half - 1] + ordered[:, half]) / 2
    return out
