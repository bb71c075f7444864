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
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray
from detectors.readings import check_int_at_least, check_positive, floats, ints
from detectors.series import SeriesDetector
from detectors.state import NEVER_MS, Field


class RiseRate(SeriesDetector):
    """Least-squares rise per minute over ``window_s``, in % of the set point, below it."""

    measure: ClassVar[str] = "rise_pct_of_setpoint_per_min"
    anomaly: ClassVar[str] = "none"

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
        t_buf, v_buf, head = ints(self.state["t_ms"]), floats(self.state["v"]), ints(self.state["head"])
        h = head[sensor]
        t_buf[sensor, h] = event_ms
        v_buf[sensor, h] = value
        head[sensor] = (h + 1) % self.max_points
        t, v = t_buf[sensor], v_buf[sensor]
        valid = (t != NEVER_MS) & (t > (event_ms - self.window_ms)[:, None])
        x = (np.where(valid, t, event_ms[:, None]) - event_ms[:, None]) / 60_000.0  # minutes, <= 0
        n = valid.sum(axis=1)
        safe_n = np.maximum(n, 1)
        mx = np.where(valid, x, 0.0).sum(axis=1) / safe_n
        mv = np.where(valid, v, 0.0).sum(axis=1) / safe_n
        dx = np.where(valid, x - mx[:, None], 0.0)
        sxx = (dx * dx).sum(axis=1)
        sxy = (dx * np.where(valid, v - mv[:, None], 0.0)).sum(axis=1)
        slope = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), 0.0)  # units per minute
        spans = -np.where(valid, x, 0.0).min(axis=1) * 60_000.0 >= self.window_ms / 2
        setpoint = self._setpoint(sensor)
        ok = (n >= self.min_points) & spans & (value < setpoint) & (setpoint > 0)
        out: FloatArray = np.where(ok, np.maximum(slope, 0.0) / np.where(ok, setpoint, 1.0) * 100.0, 0.0)
        return out

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
