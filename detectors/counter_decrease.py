"""``counter_decrease``: a cumulative register (energy_kwh, a flow totaliser) going down.

A register only grows; a reading below the previous one means a reset, a
rollover, a replaced meter or tampering. Score = how far it fell, in the
quantity's unit (0 when it did not fall), so the route's set point is the
smallest drop worth an alarm (rounding never makes a register fall).
The next reading is compared with the fallen value, so the alarm clears on the
next reading that does not fall again.

Each reading is compared with the one before it, so a batch is scored at once
(``scan``: previous values by shifting, no rounds), exactly as ``step`` would.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import floats
from detectors.series import Series, SeriesDetector
from detectors.state import Field


class CounterDecrease(SeriesDetector):
    """Drop of a cumulative register since the sensor's previous reading."""

    measure: ClassVar[str] = "register_drop"
    anomaly: ClassVar[str] = "decrease"
    exact_scan: ClassVar[bool] = True

    def __init__(self, context: DetectorContext, *, quantity: str) -> None:
        super().__init__(context, quantity=quantity)
        self.resize(len(context.sensor_ids))  # catalog sensors: snapshot(sensors) may name any

    def state_fields(self) -> Mapping[str, Field]:
        return {"previous": Field(np.float64, np.nan)}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        previous = floats(self.state["previous"])
        before = previous[sensor]
        drop: FloatArray = np.where(np.isnan(before), 0.0, np.maximum(before - value, 0.0))
        previous[sensor] = value
        return drop

    def scan(self, series: Series) -> FloatArray:
        previous, g, value = floats(self.state["previous"]), series.segments, series.value
        if g.head.shape[0] == value.shape[0]:  # every sensor once: one step
            return self.step(series.sensor, series.event_ms, value)
        before = np.empty_like(value)
        before[1:] = value[:-1]
        sensor = series.sensor[g.head]
        before[g.head] = previous[sensor]
        drop: FloatArray = np.where(np.isnan(before), 0.0, np.maximum(before - value, 0.0))
        previous[sensor] = value[g.tail]
        return drop

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value"}
