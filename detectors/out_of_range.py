"""``out_of_range``: a value outside its quantity's band.

The band of a quantity is its physical range (topology ``min``/``max``, via
``context.quantity_ranges``), narrowed by fixed ``lower``/``upper`` bounds
(e.g. the supply-voltage tolerance) and then by per-sensor catalog limits named
by ``lower_limit``/``upper_limit`` (e.g. ``voltage_v.low``) where the sensor has
them. Note that the decoder already dead-letters values outside the physical
range, so in the worker only the narrower bands can fire.

One row per reading (its first row), score = the worst of its quantities:
0 inside the band, else ``1 + distance outside / band width``, so a route at 1
fires on any excursion and higher levels on larger ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, Final

import numpy as np

from detectors.base import FLAG_NORMAL, DetectorContext, FloatArray, Int32Array, ReadingBatch, Scores, Stateless
from detectors.params import check_quantity
from detectors.views import views

MEASURE: Final = "out_of_range"


class OutOfRange(Stateless):
    """Distance outside the band, in band widths, plus one (0 inside)."""

    anomaly: ClassVar[str] = "spike"

    def __init__(
        self,
        context: DetectorContext,
        *,
        quantity: str | None = None,
        lower: float | None = None,
        upper: float | None = None,
        lower_limit: str | None = None,
        upper_limit: str | None = None,
    ) -> None:
        if quantity is None and (lower is not None or upper is not None):
            msg = "lower/upper: fixed bounds need a `quantity` (they would apply to every quantity)"
            raise ValueError(msg)
        self._selected = np.zeros(len(context.quantities), bool)
        if quantity is None:
            self._selected[:] = True
        else:
            self._selected[check_quantity(quantity, context.quantities)] = True
        ranges = list(context.quantity_ranges) or [(-math.inf, math.inf)] * len(context.quantities)
        self._lo = np.array([r[0] for r in ranges], np.float64)
        self._hi = np.array([r[1] for r in ranges], np.float64)
        if quantity is not None:
            q = context.quantities.index(quantity)
            self._lo[q] = self._lo[q] if lower is None else float(lower)
            self._hi[q] = self._hi[q] if upper is None else float(upper)
            if not self._lo[q] < self._hi[q]:
                msg = f"lower/upper: the band of {quantity!r} is empty: [{self._lo[q]}, {self._hi[q]}]"
                raise ValueError(msg)
        self._lo_limit = _limit_array(context, lower_limit, "lower_limit")
        self._hi_limit = _limit_array(context, upper_limit, "upper_limit")
        self._limit_quantity = context.quantities.index(quantity) if quantity is not None else -1
        if (lower_limit or upper_limit) and quantity is None:
            msg = "lower_limit/upper_limit: per-sensor limits need a `quantity`"
            raise ValueError(msg)

    def score_and_update(self, batch: ReadingBatch) -> Scores:
        mask = self._selected[batch.quantity_idx] & (batch.flag == FLAG_NORMAL)
        rows = np.flatnonzero(mask)
        score = self._row_scores(batch.sensor_idx[rows], batch.quantity_idx[rows].astype(np.int64), batch.value[rows])
        shared = views(batch)
        starts = shared.reading_starts()
        if starts is not None:  # rows of a reading are contiguous: the worst is a reduceat, rows ascend
            every = np.full(len(batch), -1.0)
            every[rows] = score
            worst_run = np.maximum.reduceat(every, starts)
            has_run = worst_run >= 0
            return Scores(rows=starts[has_run], score=worst_run[has_run], measure=MEASURE)
        readings = shared.readings()
        worst = np.full(len(readings), -1.0)
        np.maximum.at(worst, readings.of_row[rows], score)
        has = worst >= 0
        first = readings.row[has]
        order = np.argsort(first)
        return Scores(rows=first[order], score=worst[has][order], measure=MEASURE)

    def _row_scores(self, sensor: Int32Array, q: np.ndarray, value: FloatArray) -> FloatArray:
        lo, hi = self._lo[q], self._hi[q]
        mine = q == self._limit_quantity
        if self._lo_limit is not None:
            lo = np.where(mine, np.fmax(lo, _at(self._lo_limit, sensor)), lo)
        if self._hi_limit is not None:
            hi = np.where(mine, np.fmin(hi, _at(self._hi_limit, sensor)), hi)
        width = np.where(np.isfinite(hi - lo) & (hi > lo), hi - lo, 1.0)
        excess = np.maximum(lo - value, value - hi)
        out: FloatArray = np.where(excess > 0, 1.0 + excess / width, 0.0)
        return out

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value", "lower": 0.0, "upper": 150.0}


def _limit_array(context: DetectorContext, name: str | None, param: str) -> FloatArray | None:
    if name is None:
        return None
    if name.partition(".")[0] not in context.quantities:
        msg = f"{param}: {name!r} must be `<quantity>.<limit>` with a quantity of this kind; valid: {list(context.quantities)}"
        raise ValueError(msg)
    return np.array([limits.get(name, math.nan) for limits in context.limits], np.float64)


def _at(limit: FloatArray, sensor: Int32Array) -> FloatArray:
    """Per-sensor limit (NaN for sensors beyond the catalog: no limit)."""
    inside = sensor < limit.shape[0]
    out: FloatArray = np.where(inside, limit[np.where(inside, sensor, 0)] if limit.size else np.nan, np.nan)
    return out
