"""``ewma_z``: |z| of each reading against the sensor's EWMA mean and variance.

mean and variance are exponentially weighted (West 1979) with weight
max(alpha, 1/n), so the first readings form a plain running mean. The reading
is scored against the state before it is folded in; the first ``warmup``
readings of a sensor score 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_at_least, check_below_one, floats, ints
from detectors.series import SeriesDetector
from detectors.state import Field
from detectors.stats import ewma_fold, scale


class EwmaZScore(SeriesDetector):
    """|x - EWMA mean| / EWMA std per sensor."""

    measure: ClassVar[str] = "ewma_z"
    anomaly: ClassVar[str] = "spike"

    def __init__(self, context: DetectorContext, *, quantity: str, alpha: float = 0.05, warmup: int = 30) -> None:
        check_below_one("alpha", alpha)
        check_at_least("warmup", warmup, 2)
        self.alpha, self.warmup = alpha, int(warmup)
        super().__init__(context, quantity=quantity)

    def state_fields(self) -> Mapping[str, Field]:
        return {"n": Field(np.int64, 0), "mean": Field(np.float64, 0.0), "var": Field(np.float64, 0.0)}

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value"}
        yield {"quantity": "value", "alpha": 0.3, "warmup": 2}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        n = ints(self.state["n"])[sensor] + 1
        mean, var = floats(self.state["mean"])[sensor], floats(self.state["var"])[sensor]
        z: FloatArray = np.where(n > self.warmup, np.abs(value - mean) / scale(var, mean), 0.0)
        mean, var = ewma_fold(mean, var, value, np.maximum(self.alpha, 1.0 / n))
        floats(self.state["mean"])[sensor], floats(self.state["var"])[sensor] = mean, var
        ints(self.state["n"])[sensor] = n
        return z
