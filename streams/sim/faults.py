"""Random equipment faults: a reading outside any incident starts one with
probability ``per_sensor_per_hour * period / 3600``; the sensor then sends a
random non-N HJ 212 flag for ``min_readings..max_readings`` readings. Each fault
becomes a ``sensor_fault`` truth record, so false alarms can be counted later.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.base import FloatArray, IntArray
from streams.sim.city import City, FlagArray
from streams.sim.scenario import Faults
from streams.sim.truth import RuleBook, TruthRecord, severity_reached


class RandomFaults:
    """Per-sensor fault state in arrays; ``records`` collects the finished faults."""

    def __init__(self, cfg: Faults, city: City, book: RuleBook, period_s: FloatArray, rng: np.random.Generator) -> None:
        self._cfg, self._city, self._book, self._rng = cfg, city, book, rng
        self._start_p = cfg.per_sensor_per_hour * period_s / 3600.0  # per reading
        n = len(city.sensors)
        self._left = np.zeros(n, np.int64)  # readings still to flag
        self._flag = np.full(n, "N", "<U1")
        self._start_ms = np.zeros(n, np.int64)
        self._last_ms = np.zeros(n, np.int64)
        self._id = np.zeros(n, np.int64)
        self._count = 0
        self.records: list[TruthRecord] = []

    def apply(self, sensor: IntArray, event_ms: IntArray, covered: npt.NDArray[np.bool_], flags: FlagArray) -> None:
        """Flag these readings (one per sensor) in place; incidents (``covered``) win."""
        ongoing = self._left[sensor] > 0
        self._close(sensor[ongoing & covered])  # an incident takes over: the fault ends
        ongoing &= ~covered
        if ongoing.any():
            g = sensor[ongoing]
            flags[ongoing] = self._flag[g]
            self._left[g] -= 1
            self._last_ms[g] = event_ms[ongoing]
            self._close(g[self._left[g] == 0])
        if self._cfg.per_sensor_per_hour > 0:
            start = ~ongoing & ~covered & (self._rng.random(sensor.size) < self._start_p[sensor])
            if start.any():
                self._start(sensor[start], event_ms[start], flags, np.flatnonzero(start))

    def close_all(self) -> None:
        """End of run: record the faults still going on."""
        self._close(np.flatnonzero(self._left > 0))

    def _start(self, g: IntArray, event_ms: IntArray, flags: FlagArray, at: IntArray) -> None:
        cfg = self._cfg
        chosen = np.array(cfg.flags, "<U1")[self._rng.integers(len(cfg.flags), size=g.size)]
        flags[at] = chosen
        self._flag[g] = chosen
        self._left[g] = self._rng.integers(cfg.min_readings, cfg.max_readings + 1, size=g.size) - 1
        self._start_ms[g] = event_ms
        self._last_ms[g] = event_ms
        self._id[g] = self._count + 1 + np.arange(g.size)
        self._count += g.size
        self._close(g[self._left[g] == 0])

    def _close(self, sensors: IntArray) -> None:
        for g in sensors.tolist():
            self._left[g] = 0
            self.records.append(self._record(g))

    def _record(self, g: int) -> TruthRecord:
        sensor = self._city.sensors[g]
        flag = str(self._flag[g])
        route = self._book.flag_route(sensor.kind)
        score = self._book.flag_score(sensor.kind, flag)
        return TruthRecord(
            id=f"fault-{int(self._id[g]):04d}", type="sensor_fault",
            rule=route.rule if route else None, min_severity=severity_reached(route, score, sensor.limits),
            site_id=sensor.site_id, district=sensor.district, sensor_ids=(sensor.sensor_id,),
            start_ms=int(self._start_ms[g]), end_ms=int(self._last_ms[g]), detail={"flag": flag},
        )
