"""Hand-built ReadingBatches for detector tests."""

from __future__ import annotations

import numpy as np

from detectors.base import FLAG_CODE, DetectorContext, ReadingBatch


def make_batch(
    context: DetectorContext, reading_idx: list[int], quantity: list[str], value: list[float], flag: list[str]
) -> ReadingBatch:
    """One sensor's rows; quantities by name (from `context`), flags by HJ 212 letter."""
    n = len(value)
    index = {name: i for i, name in enumerate(context.quantities)}
    return ReadingBatch(
        sensor_idx=np.zeros(n, np.int32),
        reading_idx=np.array(reading_idx, np.int32),
        event_time_ms=np.arange(n, dtype=np.int64),
        quantity_idx=np.array([index[q] for q in quantity], np.int16),
        value=np.array(value, np.float64),
        flag=np.array([FLAG_CODE[f] for f in flag], np.uint8),
    )
