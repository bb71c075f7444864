"""``stuck``: a sensor repeating one value (or staying inside a tiny band) for many readings.

Per sensor the detector keeps the current *run*: the readings since the last one
that left the band, and the band's low and high value. A reading extends the run
when the run's values, itself included, span at most ``tolerance``; otherwise it
starts a new run. ``tolerance = 0`` means exact repeats (a frozen sensor
re-sending its last value); a small tolerance also catches a collapsed variance
(a sensor that still wobbles in its last digit but no longer measures).

Score = run length / ``run_length`` once the run holds two readings or more
(1.0 when ``run_length`` consecutive readings sat in the band, 2.0 at twice
that), 0 for a reading that starts a new run. A route at 1.0 fires on the
``run_length``-th reading of a run; a reading that leaves the band clears it.

Cost: with ``tolerance = 0`` a batch is one segmented scan (no rounds): a
reading extends the run iff it equals the previous one, and run lengths are
integer offsets from the last reset, exactly what ``step`` computes one reading
at a time. A positive tolerance makes the run's start depend on its whole band,
so it steps round by round.

``floor``: readings at or below it never score. A gas detector in clean air reads its
zero (0 %LEL) for hours and a plant that is off draws 0 kW: a run there is the normal
state of the instrument, not a frozen one (a frozen sensor is caught when it freezes
above its floor, and a dead one by no_signal or its HJ 212 flag).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.params import check_at_least, check_int_at_least, floats, ints
from detectors.series import Series, SeriesDetector
from detectors.state import Field


class StuckValue(SeriesDetector):
    """Run of readings within ``tolerance`` of each other, over ``run_length``."""

    measure: ClassVar[str] = "stuck_run"
    anomaly: ClassVar[str] = "flatline"
    exact_scan: ClassVar[bool] = True

    def __init__(self, context: DetectorContext, *, quantity: str, run_length: int = 10, tolerance: float = 0.0,
                 floor: float | None = None) -> None:
        check_int_at_least("run_length", run_length, 2)
        check_at_least("tolerance", tolerance, 0.0)
        if floor is not None and (isinstance(floor, bool) or not isinstance(floor, (int, float)) or not np.isfinite(floor)):
            msg = f"floor: must be a number, got {floor!r}"
            raise ValueError(msg)
        self.run_length = run_length
        self.tolerance = float(tolerance)
        self.floor = -np.inf if floor is None else float(floor)
        super().__init__(context, quantity=quantity)
        self.resize(len(context.sensor_ids))  # catalog sensors: snapshot(sensors) may name any

    def state_fields(self) -> Mapping[str, Field]:
        return {"run": Field(np.int64, 0), "low": Field(np.float64, np.nan), "high": Field(np.float64, np.nan)}

    def step(self, sensor: Int32Array, event_ms: IntArray, value: FloatArray) -> FloatArray:
        run, low, high = ints(self.state["run"]), floats(self.state["low"]), floats(self.state["high"])
        new_low = np.fmin(low[sensor], value)  # fmin: a sensor's first reading has NaN bounds
        new_high = np.fmax(high[sensor], value)
        stays = (run[sensor] > 0) & (new_high - new_low <= self.tolerance)
        run[sensor] = np.where(stays, run[sensor] + 1, 1)
        low[sensor] = np.where(stays, new_low, value)
        high[sensor] = np.where(stays, new_high, value)
        out: FloatArray = np.where((run[sensor] > 1) & (value > self.floor), run[sensor] / self.run_length, 0.0)
        return out

    def scan(self, series: Series) -> FloatArray:
        if self.tolerance > 0:
            return self.step_by_round(series)
        g, v = series.segments, series.value
        run, low, high = ints(self.state["run"]), floats(self.state["low"]), floats(self.state["high"])
        head = g.head
        sensor = series.sensor[head]
        run0, low0, high0 = run[sensor], low[sensor], high[sensor]
        stays = np.empty(v.shape[0], np.bool_)  # a reading extends its sensor's run
        stays[1:] = np.fmax(v[:-1], v[1:]) - np.fmin(v[:-1], v[1:]) <= self.tolerance
        stays[head] = (run0 > 0) & (np.fmax(high0, v[head]) - np.fmin(low0, v[head]) <= self.tolerance)
        rows = np.arange(v.shape[0], dtype=np.int64)
        anchor = np.maximum.accumulate(np.where(stays, 0, rows))  # the newest reset
        anchor = np.maximum(anchor, head[g.seg])
        at_head = np.zeros(v.shape[0], np.int64)  # a run carried over from the state
        at_head[head] = np.where(stays[head], run0, 0)
        run_now = at_head[anchor] + (rows - anchor + 1)
        tail = g.tail
        carried = anchor[tail] == head
        run[sensor] = run_now[tail]
        low[sensor] = np.where(carried & stays[head], np.fmin(low0, v[head]), v[anchor[tail]])
        high[sensor] = np.where(carried & stays[head], np.fmax(high0, v[head]), v[anchor[tail]])
        out: FloatArray = np.where((run_now > 1) & (v > self.floor), run_now / self.run_length, 0.0)
        return out

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"quantity": "value", "run_length": 5}
        yield {"quantity": "value", "run_length": 8, "tolerance": 0.01}
        yield {"quantity": "value", "run_length": 5, "floor": 0.0}
