"""Ground truth: what happened where and when, and which route should fire.

The expected rule and its minimum severity come from topology.yaml itself (the
route fed by the matching detector, its levels and the sensor's catalog
limits), so a threshold change in the topology moves the expectation with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.aqi import TABLE_FOR_MODE, iaqi
from detectors.hj212_flag import DEFAULT_SEVERITY_BY_FLAG
from streams.sim.city import City
from streams.sim.incidents import DOWNSTREAM, JITTER_MAX, TANK, TARGET, UPSTREAM, Plan
from streams.sim.messages import format_rfc3339
from streams.sim.scenario import (
    GasLeak,
    MeterFault,
    MeterIdle,
    MeterReset,
    PollutionEpisode,
    SensorSilent,
    SlowLeak,
    StuckSensor,
    TrafficIncident,
)
from streams.topology_spec import DetectorSpec, RouteSpec, TopologySpec


@dataclass(frozen=True, slots=True)
class TruthRecord:
    """One scripted incident or random sensor fault, as the alarms should see it."""

    id: str
    type: str  # gas_leak | pollution_episode | traffic_incident | meter_fault | sensor_fault
    rule: str | None  # topology route expected to fire (None: the topology has none)
    min_severity: str | None
    site_id: str
    district: str
    sensor_ids: tuple[str, ...]
    start_ms: int
    end_ms: int
    detail: Mapping[str, float | str] = field(default_factory=dict)
    also_rules: tuple[str, ...] = ()  # other routes whose alarms on these sensors also detect it

    def to_json(self, tz_offset_s: int) -> dict[str, Any]:
        start, end = format_rfc3339(np.array([self.start_ms, self.end_ms], np.int64), tz_offset_s)
        return {
            "id": self.id, "type": self.type, "rule": self.rule, "min_severity": self.min_severity,
            "site_id": self.site_id, "district": self.district, "sensor_ids": list(self.sensor_ids),
            "start": str(start), "end": str(end), "start_ms": self.start_ms, "end_ms": self.end_ms,
            "detail": dict(self.detail), "also_rules": list(self.also_rules),
        }


class RuleBook:
    """Finds the route a detector feeds and the severity a score reaches on it."""

    def __init__(self, spec: TopologySpec) -> None:
        self._spec = spec
        self._routes = {r.detector: r for r in spec.routes}

    def value_route(self, sensor_kind: str, quantity: str) -> RouteSpec | None:
        return self._route(sensor_kind, "quantity_value", lambda d: d.params.get("quantity") == quantity)

    def aqi_route(self, sensor_kind: str) -> RouteSpec | None:
        return self._route(sensor_kind, "aqi_hj633", lambda d: True)

    def flag_route(self, sensor_kind: str) -> RouteSpec | None:
        return self._route(sensor_kind, "hj212_flag", lambda d: True)

    def aqi_of_pm(self, sensor_kind: str, pm25: float, pm10: float) -> float:
        """The AQI the ``aqi_hj633`` detector computes from these PM values alone."""
        det = self._detector(sensor_kind, "aqi_hj633")
        tables = TABLE_FOR_MODE[str(det.params.get("averaging", "1h")) if det else "1h"]
        sub25 = iaqi("pm25", np.array([pm25]), tables["pm25"])
        sub10 = iaqi("pm10", np.array([pm10]), tables["pm10"])
        return float(max(sub25[0], sub10[0]))

    def flag_score(self, sensor_kind: str, flag: str) -> float:
        det = self._detector(sensor_kind, "hj212_flag")
        overrides = dict(det.params.get("severity_by_flag") or {}) if det else {}
        return float({**DEFAULT_SEVERITY_BY_FLAG, **overrides}[flag])

    def routes_of(self, sensor_kind: str, kind: str, quantity: str | None = None) -> list[RouteSpec]:
        """Every route fed by a ``kind`` detector of ``sensor_kind`` (of ``quantity``, if given)."""
        return [self._routes[d.name] for d in self._spec.detectors
                if d.sensor_kind == sensor_kind and d.kind == kind and d.name in self._routes
                and (quantity is None or d.params.get("quantity") == quantity)]

    def _detector(self, sensor_kind: str, kind: str) -> DetectorSpec | None:
        return next((d for d in self._spec.detectors if d.sensor_kind == sensor_kind and d.kind == kind), None)

    def _route(self, sensor_kind: str, kind: str, match: Any) -> RouteSpec | None:
        for det in self._spec.detectors:
            if det.sensor_kind == sensor_kind and det.kind == kind and match(det) and det.name in self._routes:
                return self._routes[det.name]
        return None


def severity_reached(route: RouteSpec | None, score: float, limits: Mapping[str, float]) -> str | None:
    """The highest level of ``route`` that ``score`` crosses (None: none, or no route)."""
    if route is None:
        return None
    reached: str | None = None
    for level in route.levels:
        at = level.at if level.at is not None else limits.get(level.limit or "")
        if at is None:
            continue  # a sensor without that limit never reaches that level
        crossed = score >= at if route.direction == "above" else score <= at
        if crossed:
            reached = level.severity.value
    return reached


def incident_truth(plan: Plan, city: City, book: RuleBook, start_ms: int, span_s: float) -> TruthRecord | None:
    """The record of a scripted incident (None if it starts after the run ends)."""
    if plan.start_s >= span_s:
        return None
    target = city.sensors[int(plan.rows[0])]
    route, score, others = _expectation(plan, book, target.limits)
    if route is None and others:  # e.g. a mild traffic incident: no speed alarm, the pair route instead
        route, others = others[0], others[1:]
    alarmed = plan.rows[(plan.part == TARGET) | (plan.part == UPSTREAM)]
    detail: dict[str, float | str] = {"expected_score": round(score, 2)} if score is not None else {}
    detail |= {_PART_NAMES[int(p)]: city.sensors[int(g)].sensor_id for g, p in zip(plan.rows, plan.part, strict=True)
               if p in (UPSTREAM, DOWNSTREAM, TANK)}
    return TruthRecord(
        id=plan.id,
        type=plan.spec.type,
        rule=route.rule if route else None,
        min_severity=(severity_reached(route, score, target.limits) if score is not None
                      else route.levels[0].severity.value if route else None),
        site_id=target.site_id,
        district=target.district,
        sensor_ids=tuple(city.sensors[int(g)].sensor_id for g in alarmed),
        start_ms=start_ms + round(plan.start_s * 1000),
        end_ms=start_ms + round(min(plan.end_s, span_s) * 1000),
        detail=detail,
        also_rules=tuple(r.rule for r in others if route is None or r.rule != route.rule),
    )


_PART_NAMES = {UPSTREAM: "upstream", DOWNSTREAM: "downstream", TANK: "tank"}


def _expectation(plan: Plan, book: RuleBook, limits: Mapping[str, float]) -> tuple[RouteSpec | None, float | None, list[RouteSpec]]:
    """The route that should fire, the score its worst-hit sensor reaches (None: the
    route's first level is the expectation) and other routes that also detect it."""
    spec = plan.spec
    kind = plan.kind
    targets = plan.peak[plan.part == TARGET]
    low, high = targets * (1.0 - JITTER_MAX), targets * (1.0 + JITTER_MAX)  # the worst wobble
    if isinstance(spec, GasLeak):
        return book.value_route(kind, "gas_lel"), float(low.max()), _gas_pre_alarms(kind, book)
    if isinstance(spec, PollutionEpisode):
        # every station of the episode should alarm: the mildest one sets the minimum
        scores = [book.aqi_of_pm(kind, float(p), float(p) * spec.pm10_ratio) for p in low]
        return book.aqi_route(kind), min(scores), []
    if isinstance(spec, TrafficIncident):
        speed = book.value_route(kind, "speed_kmh")
        pair = book.routes_of(kind, "traffic_pair")
        if severity_reached(speed, float(high.max()), limits) is None:
            return None, None, pair  # mild: speed stays above every limit
        return speed, float(high.max()), pair
    if isinstance(spec, MeterFault):
        return book.flag_route(kind), book.flag_score(kind, spec.flag), []
    return None, None, _quality_routes(spec, kind, book)


def _gas_pre_alarms(kind: str, book: RuleBook) -> list[RouteSpec]:
    """Routes that see combustible gas coming before 25 %LEL: rise rate and CUSUM creep."""
    return book.routes_of(kind, "rise_rate", "gas_lel") + book.routes_of(kind, "cusum", "gas_lel")


def _quality_routes(spec: object, kind: str, book: RuleBook) -> list[RouteSpec]:
    if isinstance(spec, SlowLeak):
        return _gas_pre_alarms(kind, book)
    if isinstance(spec, StuckSensor):
        return book.routes_of(kind, "stuck")
    if isinstance(spec, SensorSilent):
        return book.routes_of(kind, "no_signal")
    if isinstance(spec, MeterReset):
        return book.routes_of(kind, "counter_decrease", "energy_kwh")
    if isinstance(spec, MeterIdle):
        return (book.routes_of(kind, "idle_in_hours") + book.routes_of(kind, "stuck", "power_kw")
                + book.routes_of(kind, "ensemble", "power_kw"))
    return []
