"""``robust_z``: |x - median| / (1.4826 MAD) over the sensor's last ``window`` readings.

Each sensor keeps a ring buffer of its last ``window`` readings. A reading is
scored against the median and the median absolute deviation of the buffer
(scaled by 1.4826, the MAD of a unit normal), then written into it. Unlike a
mean/std, one wild reading in the buffer moves neither the median nor the MAD,
so it neither masks the next anomaly nor inflates later scores. Sensors score
0 until their buffer is full. Costs O(window) per reading (a median per row).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.state import Field
from detectors.stats import floats, ints, scale, StatisticalDetector

MAD_TO_STD = 1.4826
MAX_WINDOW = 10_000


class RobustZScore(StatisticalDetector):
    """Rolling median / MAD z-score per sensor."""

    measure: ClassVar[str] = "robust_z"
    anomaly: ClassVar[str] = "spike"

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


