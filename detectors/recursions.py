"""Per-sensor recursions over a whole batch, round by round, with nothing but slices.

A streaming statistic such as an EWMA is a recursion: each reading's state is the
previous state folded with that reading. Floating-point rounding makes it
sequential (a prefix scan would round differently, and differently for every cut
of the stream into batches), so it runs round by round: round k folds every
sensor's k-th reading at once (``detectors.rounds``).

What costs in a round is not arithmetic (a round holds a few dozen sensors) but
the number of numpy calls. So only the recursion itself runs in the rounds, laid
out by a :class:`~detectors.rounds.RoundPlan`: the state before each row is
written straight into the slot of that sensor's next row (round k + 1's slice
starts with the sensors still active), so a round is a handful of elementwise
calls on slices, with no gather, scatter or temporary array. Everything that
only *reads* the state (a z-score, a floor, a calibration) is computed afterwards
for all rows at once from the states recorded before each row, with exactly the
operations a one-reading-at-a-time step performs, so the results are the same to
the bit.

Several independent recursions of the same shape (K channels, e.g. an EWMA of the
value and one of its steps) run interleaved in one (rows, K) array: one call per
operation serves them all.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.base import FloatArray
from detectors.rounds import RoundPlan

BoolArray = npt.NDArray[np.bool_]


def ewma_before(
    plan: RoundPlan,
    x: FloatArray,
    w: FloatArray,
    mean0: FloatArray,
    var0: FloatArray | None = None,
    omw: FloatArray | None = None,
    *,
    squared_first: bool = False,
) -> tuple[FloatArray, FloatArray | None]:
    """EWMA mean (and variance) of each row's segment *before* the row is folded in.

    Per row and channel: ``d = x - mean``; ``mean += w * d``; with a variance,
    ``var = (var + w * d * d) * omw`` where ``w * d * d`` is ``(w * d) * d``, or
    ``w * (d * d)`` with ``squared_first`` (two spellings of West's update that round
    differently: each detector keeps its own). ``omw`` is ``1 - w`` as the caller
    computes it; a channel whose variance is not wanted may pass 0 there.

    Arrays are in the plan's round-major order: ``x``, ``w``, ``omw`` (rows,) or
    (rows, K); ``mean0``, ``var0`` the state of each segment by place (``plan.perm``),
    (segments,) or (segments, K). Returns arrays shaped like ``x``.
    """
    n_seg = len(mean0)
    mean = np.empty_like(x)
    mean[:n_seg] = mean0
    var = None
    if var0 is not None:
        assert omw is not None
        var = np.empty_like(x)
        var[:n_seg] = var0
    if plan.n_rounds > 1:
        k = 1 if x.ndim == 1 else x.shape[1]
        xf, wf, mf = x.reshape(-1), w.reshape(-1), mean.reshape(-1)
        width = plan.counts[1] * k
        d_buf, t_buf = np.empty(width), np.empty(width)
        if var is None:
            _mean_rounds(plan, k, xf, wf, mf, d_buf, t_buf)
        else:
            assert omw is not None
            u_buf = np.empty(width) if squared_first else None
            _mean_var_rounds(plan, k, xf, wf, omw.reshape(-1), mf, var.reshape(-1), d_buf, t_buf, u_buf)
    return mean, var


def _mean_rounds(plan: RoundPlan, k: int, x: FloatArray, w: FloatArray, mean: FloatArray,
                 d_buf: FloatArray, t_buf: FloatArray) -> None:
    b, c = plan.bounds, plan.counts
    subtract, multiply, add = np.subtract, np.multiply, np.add
    for r in range(len(c) - 1):
        lo, nlo, width = b[r] * k, b[r + 1] * k, c[r + 1] * k
        hi, nhi = lo + width, nlo + width
        m = mean[lo:hi]
        d = subtract(x[lo:hi], m, out=d_buf[:width])
        add(m, multiply(w[lo:hi], d, out=t_buf[:width]), out=mean[nlo:nhi])


def _mean_var_rounds(plan: RoundPlan, k: int, x: FloatArray, w: FloatArray, omw: FloatArray, mean: FloatArray,
                     var: FloatArray, d_buf: FloatArray, t_buf: FloatArray, u_buf: FloatArray | None) -> None:
    b, c = plan.bounds, plan.counts
    subtract, multiply, add = np.subtract, np.multiply, np.add
    for r in range(len(c) - 1):
        lo, nlo, width = b[r] * k, b[r + 1] * k, c[r + 1] * k
        hi, nhi = lo + width, nlo + width
        m, wr = mean[lo:hi], w[lo:hi]
        d = subtract(x[lo:hi], m, out=d_buf[:width])
        t = multiply(wr, d, out=t_buf[:width])
        add(m, t, out=mean[nlo:nhi])
        if u_buf is None:
            multiply(t, d, out=t)
        else:
            multiply(wr, multiply(d, d, out=u_buf[:width]), out=t)
        v = var[nlo:nhi]
        add(var[lo:hi], t, out=v)
        multiply(v, omw[lo:hi], out=v)


def ewma_after(mean: FloatArray, var: FloatArray, x: FloatArray, w: FloatArray, omw: FloatArray,
               *, squared_first: bool = False) -> tuple[FloatArray, FloatArray]:
    """The state after folding ``x`` into the state before (``ewma_before``'s update, for
    any set of rows at once, e.g. each segment's last)."""
    d = x - mean
    t = w * d
    after = mean + t
    t = w * (d * d) if squared_first else t * d
    return after, (var + t) * omw


def mean_after(mean: FloatArray, x: FloatArray, w: FloatArray) -> FloatArray:
    """``ewma_after`` of a mean alone: ``mean + w * (x - mean)``."""
    out: FloatArray = mean + w * (x - mean)
    return out


def fold_after(plan: RoundPlan, ufunc: np.ufunc, x: npt.NDArray[np.generic],
               start: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """``state = ufunc(state, x)`` per segment (e.g. a running minimum): the state after
    each row, round-major like ``x`` ((rows,) or (rows, K)); ``start`` by place."""
    out = np.empty_like(x)
    n_seg = len(start)
    ufunc(start, x[:n_seg], out=out[:n_seg])
    if plan.n_rounds > 1:
        k = 1 if x.ndim == 1 else x.shape[1]
        flat, xf = out.reshape(-1), x.reshape(-1)
        b, c = plan.bounds, plan.counts
        for r in range(len(c) - 1):
            lo, nlo, width = b[r] * k, b[r + 1] * k, c[r + 1] * k
            ufunc(flat[lo : lo + width], xf[nlo : nlo + width], out=flat[nlo : nlo + width])
    return out


def previous_rows(plan: RoundPlan, rank: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Round-major position of each row's predecessor in its segment (the row itself for
    a segment's first row: callers mask those), for round-major ``rank``."""
    bounds = np.asarray(plan.bounds, np.int64)
    place = np.arange(rank.shape[0], dtype=np.int64) - bounds[rank]
    out: npt.NDArray[np.int64] = np.where(rank > 0, bounds[np.maximum(rank - 1, 0)] + place, np.arange(rank.shape[0]))
    return out
