"""Build a ReadingBatch from plain per-reading columns (one quantity per reading).

For callers that are not the Kafka decoder: ``cityops bench nab``, benchmarks
and tests. Rows are ordered the way the decoder orders them, by sensor and
then arrival, and ``reading_idx`` is each reading's arrival position, so
``scores.rows`` map back to arrival order through ``batch.reading_idx``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.base import ReadingBatch


def batch_from_columns(
    sensor_idx: npt.ArrayLike,
    event_time_ms: npt.ArrayLike,
    value: npt.ArrayLike,
    quantity_idx: npt.ArrayLike = 0,
    flag: npt.ArrayLike = 0,
) -> ReadingBatch:
    sensor = np.asarray(sensor_idx, np.int32)
    n = sensor.shape[0]
    order = np.argsort(sensor, kind="stable")
    return ReadingBatch(
        sensor_idx=sensor[order],
        reading_idx=order.astype(np.int32),
        event_time_ms=np.asarray(event_time_ms, np.int64)[order],
        quantity_idx=np.broadcast_to(np.asarray(quantity_idx, np.int16), (n,))[order],
        value=np.asarray(value, np.float64)[order],
        flag=np.broadcast_to(np.asarray(flag, np.uint8), (n,))[order],
    )
