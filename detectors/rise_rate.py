"""``rise_rate``: a value climbing fast while still below its first set point (a pre-alarm).

A slow gas leak or a tank pressure build-up shows first as a steady climb, long
before the value crosses the first alarm set point. Per sensor the detector
keeps its last ``max_points`` readings in a ring buffer and fits a
least-squares line over those within the last ``window_s`` of event time
(the newest reading included). Score = the fitted rise per minute as a
percentage of the sensor's set point (``setpoint`` or the catalog limit named
by ``setpoint_limit``): "rising 10 % of the set point per minute".

The score is 0 while the value is at or above the set point (the set-point
alarm has taken over), when the slope is negative, when fewer than
``min_points`` readings fall in the window or they span less than half of it,
and for sensors without a set point.

Cost: the whole batch is scored at once (no rounds): each reading's window is
a contiguous stretch of its sensor's readings (the ring's newest points in
the window, then the batch's), found by binary search, and the fit runs over
an (n x points-in-window) array of just the readings that can score, not the
full ring. Sums are sequential in time order (oldest first), so a reading's
score is a function of its window alone, whatever the batch cut; versus the
former ring-order pairwise sums this differs only by floating-point rounding
(a few ulp of the slope).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_int_at_least, check_positive, floats, ints
from detectors.rounds import Segments, segment_searchsorted
from detectors.series import Series, SeriesDetector
from detectors.state import NEVER_MS, Field


class RiseRate(SeriesDetector):
    """Least-squares rise per minute over ``window_s``, in % of the set point, below it."""

    measure: ClassVar[str] = "rise_pct_of_setpoint_per_min"
    anomaly: ClassVar[str] = "none"
    exact_scan: ClassVar[bool] = True

    def __init__(
        self,
        context: DetectorContext,
        *,
        quantity: str,
        window_s: float = 120.0,
        min_points: int = 4,
        max_points: int = 64,
        setpoint: float | None = None,
        setpoint_limit: str | None = None,
    ) -> None:
        check_positive("window_s", window_s)
        check_int_at_least("min_points", min_points, 3)
        check_int_at_least("max_points", max_points, min_points)
        if (setpoint is None) == (setpoint_limit is None):
            msg = "setpoint/setpoint_limit: give exactly one (a number, or a catalog limit like 'pressure_kpa.high')"
            raise ValueError(msg)
        if setpoint is not None:
            check_positive("setpoint", setpoint)
        if setpoint_limit is not None and setpoint_limit.partition(".")[0] != quantity:
            msg = f"setpoint_limit: {setpoint_limit!r} must be a limit of {quantity!r}, like '{quantity}.high'"
            raise ValueError(msg)
        self.window_ms = round(window_s * 1000)
        self.min_points = min_points
        self.max_points = max_points
        self._fixed = None if setpoint is None else float(setpoint)
        self._limits = (
            np.zeros(0) if setpoint_limit is None
            else np.array([lim.get(setpoint_limit, math.nan) for lim in context.limits], np.float64)
        )
        super().__init__(context, quantity=quantity)
        self.resize(len(context.sensor_ids))  # catalog sensors: snapshot(sensors) may name any

    def state_fields(self) -> Mapping[str, Field]:
        c = (self.max_points,)
        return {"t_ms": Field(np.int64, NEVER_MS, c), "v": Field(np.float64, 0.0, c), "head": Field(np.int64, 0)}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        """One reading per sensor: the scan of a one-row-per-sensor series."""
        n = sensor.shape[0]
        rows = np.arange(n, dtype=np.int64)
        segments = Segments(rows, rows, np.ones(n, np.int64), rows, np.zeros(n, np.int64))
        return self.scan(Series(sensor, event_ms, value, segments))

    def scan(self, series: Series) -> FloatArray:
        t, value = series.event_ms, series.value
        t_seq, v_seq, at, lo = self._windows(series)
        n = at - lo + 1
        setpoint = self._setpoint(series.sensor)
        spans = -((t_seq[lo] - t) / 60_000.0) * 60_000.0 >= self.window_ms / 2
        ok = (n >= self.min_points) & spans & (value < setpoint) & (setpoint > 0)
        out = np.zeros(t.shape[0], np.float64)
        rows = np.flatnonzero(ok)
        if rows.size:
            slope = _slopes(t_seq, v_seq, lo[rows], n[rows], t[rows])
            out[rows] = np.maximum(slope, 0.0) / setpoint[rows] * 100.0
        self._remember(series)
        return out

    def _windows(self, series: Series) -> tuple[IntArray, FloatArray, IntArray, IntArray]:
        """Each segment's sequence (the ring's points that can fall in its first reading's
        window, oldest first, then the batch's rows); per row its position there and the
        position of its window's oldest point."""
        g, p = series.segments, self.max_points
        t_buf, v_buf = ints(self.state["t_ms"]), floats(self.state["v"])
        sensor = series.sensor[g.head]
        h0 = ints(self.state["head"])[sensor]
        m0 = self._ring_in_window(sensor, h0, series.event_ms[g.head] - self.window_ms)
        size = m0 + g.size
        start = np.zeros(size.shape[0], np.int64)
        np.cumsum(size[:-1], out=start[1:])
        total = int(size.sum())
        t_seq, v_seq = np.empty(total, np.int64), np.empty(total, np.float64)
        n_ring = int(m0.sum())
        if n_ring:
            ring_seg = np.repeat(np.arange(m0.shape[0], dtype=np.int64), m0)
            j = np.arange(n_ring, dtype=np.int64) - np.repeat(np.cumsum(m0) - m0, m0)
            slot = ((h0 - m0) % p)[ring_seg] + j  # oldest first, wrapping past the last slot
            slot[slot >= p] -= p
            flat = (sensor.astype(np.int64) * p)[ring_seg] + slot
            pos = start[ring_seg] + j
            t_seq[pos] = t_buf.reshape(-1).take(flat)
            v_seq[pos] = v_buf.reshape(-1).take(flat)
        at = start[g.seg] + m0[g.seg] + g.rank
        t_seq[at], v_seq[at] = series.event_ms, series.value
        seq_seg = np.repeat(np.arange(size.shape[0], dtype=np.int64), size)
        lo = np.maximum(segment_searchsorted(t_seq, seq_seg, series.event_ms - self.window_ms, g.seg), at - (p - 1))
        return t_seq, v_seq, at, lo

    def _ring_in_window(self, sensor: Int32Array, h0: IntArray, after_ms: IntArray) -> IntArray:
        """How many of the ring's newest points (at most max_points - 1) are newer than
        ``after_ms``: the ring is in time order from its head back (only fresh readings are
        written, oldest first), so that is a count."""
        t_flat, p = ints(self.state["t_ms"]).reshape(-1), self.max_points
        back = np.arange(1, p, dtype=np.int64)  # the newest point, the one before, ...
        slots = (h0[:, None] - back) % p + (sensor.astype(np.int64) * p)[:, None]
        out: IntArray = np.count_nonzero(t_flat.take(slots) > after_ms[:, None], axis=1).astype(np.int64)
        return out

    def _remember(self, series: Series) -> None:
        """Write each segment's last max_points readings into its ring."""
        g, p = series.segments, self.max_points
        head = ints(self.state["head"])
        sensor = series.sensor[g.head]
        h0 = head[sensor]
        keep = np.flatnonzero(g.rank >= (g.size - p)[g.seg])
        s = series.sensor[keep]
        slot = (h0[g.seg[keep]] + g.rank[keep]) % p
        ints(self.state["t_ms"])[s, slot] = series.event_ms[keep]
        floats(self.state["v"])[s, slot] = series.value[keep]
        head[sensor] = (h0 + g.size) % p

    def _setpoint(self, sensor: Int32Array) -> FloatArray:
        if self._fixed is not None:
            return np.full(sensor.shape[0], self._fixed)
        inside = sensor < self._limits.shape[0]
        picked = self._limits[np.where(inside, sensor, 0)] if self._limits.size else np.full(sensor.shape[0], math.nan)
        out: FloatArray = np.where(inside, picked, math.nan)
        return out

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value", "setpoint": 500.0, "window_s": 600.0}


def _slopes(t_seq: IntArray, v_seq: FloatArray, lo: IntArray, n: IntArray, t: IntArray) -> FloatArray:
    """Least-squares slope (units per minute) of the points t_seq/v_seq[lo:lo+n] per row,
    two-pass (means, then centred sums); sums run oldest point first.

    Rows go in chunks of about ``_CHUNK`` (points x rows) so the work arrays stay in cache,
    each laid out (point, row): a sum is one sequential accumulate down the points."""
    out = np.empty(lo.shape[0], np.float64)
    width = int(n.max())
    step = max(1, _CHUNK // width)
    col = np.arange(width, dtype=np.int64)[:, None]
    buf = np.empty((width, min(step, lo.shape[0])))
    for a in range(0, lo.shape[0], step):
        b = min(a + step, lo.shape[0])
        out[a:b] = _slope_chunk(t_seq, v_seq, lo[a:b], n[a:b], t[a:b], col, buf[:, : b - a])
    return out


_CHUNK = 1 << 14  # (points x rows) a chunk: 128 KB arrays stay below malloc's mmap threshold, and in cache


def _slope_chunk(t_seq: IntArray, v_seq: FloatArray, lo: IntArray, n: IntArray, t: IntArray, col: IntArray,
                 buf: FloatArray) -> FloatArray:
    valid = col < n
    idx = np.minimum(lo + col, t_seq.shape[0] - 1)
    x = np.where(valid, (t_seq[idx] - t) / 60_000.0, 0.0)  # minutes, <= 0
    v = v_seq[idx]
    mx = _column_sums(x, buf) / n
    mv = _column_sums(np.where(valid, v, 0.0), buf) / n
    dx = np.where(valid, x - mx, 0.0)
    sxx = _column_sums(dx * dx, buf)
    sxy = _column_sums(dx * np.where(valid, v - mv, 0.0), buf)
    out: FloatArray = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), 0.0)
    return out


def _column_sums(a: FloatArray, buf: FloatArray) -> FloatArray:
    """Sequential sums down the columns, so trailing zero padding, and so the padded
    width, never changes a column's sum. A reduction down axis 0 of a C-contiguous array
    adds row after row (vectorized across the columns); with one column numpy would sum
    pairwise instead, so that case accumulates (tests/unit/test_scan_equivalence.py
    checks both against the one-by-one sum)."""
    if a.shape[1] >= 2 and a.flags.c_contiguous:
        out: FloatArray = np.add.reduce(a, axis=0)
        return out
    summed: FloatArray = np.add.accumulate(a, axis=0, out=buf)[-1].copy()
    return summed
