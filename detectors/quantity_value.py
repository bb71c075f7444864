"""``quantity_value``: the raw value of one quantity, for threshold routes.

This is how gas %LEL, tank level/pressure/temperature and road speed reach the
routes, whose levels hold the set points (thresholds belong to routes).
"""

from __future__ import annotations

import numpy as np

from detectors.base import DetectorContext, ReadingBatch, Scores, Stateless
from detectors.views import views


class QuantityValue(Stateless):
    """Score = value of ``quantity`` on its normal-flag rows; measure = ``quantity``."""

    def __init__(self, context: DetectorContext, *, quantity: str) -> None:
        if quantity not in context.quantities:
            msg = (
                f"quantity: {quantity!r} is not in this kind's catalog; "
                f"valid: {list(context.quantities)}"
            )
            raise ValueError(msg)
        self.quantity = quantity
        self._quantity_idx = context.quantities.index(quantity)

    def score_and_update(self, batch: ReadingBatch) -> Scores:
        # HJ 212: non-N data raise equipment alarms (hj212_flag), never value alarms.
        rows = views(batch).quantity_rows(self._quantity_idx)  # its normal-flag rows (shared)
        return Scores(rows=rows, score=batch.value[rows].astype(np.float64), measure=self.quantity)
