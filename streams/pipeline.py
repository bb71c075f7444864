"""One sensor kind's processing: messages -> batch -> scores -> alarm changes.

Free of Faust, Kafka and Redis so it can be tested and benchmarked alone; the
worker's batch consumer (streams/consumer.py) feeds it micro-batches and ships its outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from detectors.base import Detector, IntArray, ReadingBatch, Scores
from detectors.registry import build_detector
from sinks.base import Alert, Status
from streams.alarms import RouteEvaluator, Transitions
from streams.catalog import SensorIndex, SensorInfo
from streams.checkpoint import Stateful
from streams.deadletter import DeadLetter
from streams.decode import KindDecoder, RawBatch, RawMessage
from streams.idle import IdlePartitions, idle_after_s
from streams.latest import LatestValues
from streams.topology import Topology
from streams.timeparse import parse_offset
from streams.topology_spec import RouteSpec


@dataclass(slots=True)
class BatchResult:
    alerts: list[Alert]
    dead: list[DeadLetter]
    n_messages: int
    n_readings: int
    n_unknown_sensors: int
    late_by_rule: dict[str, int] = field(default_factory=dict)  # readings too old to move an alarm
    touched: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))  # sensors whose state moved
    stage_seconds: dict[str, float] = field(default_factory=dict)
    detector_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Route:
    detector: str
    evaluator: RouteEvaluator


class KindPipeline:
    """Decoder, detectors and routes of one sensor kind, with its alarm state."""

    def __init__(self, topology: Topology, kind: str) -> None:
        spec = topology.spec
        self.kind = kind
        self.topology = topology
        self._kind_spec = spec.kinds[kind]
        catalog = topology.catalog
        self._sensors: list[SensorInfo | None] = list(catalog.by_kind(kind))
        self.index = SensorIndex([s for s in self._sensors if s is not None])
        foreign = {s.sensor_id: s.kind for s in catalog.sensors if s.kind != kind}
        self.decoder = KindDecoder(kind, self._kind_spec, spec.input, foreign)
        self.detectors: dict[str, Detector] = {}
        self.routes: list[_Route] = []
        self.partitions = IdlePartitions(idle_after_s(self._kind_spec.expected_period_s))
        self.reset_state()
        self._tz = parse_offset(spec.timezone)

    def reset_state(self) -> None:
        """Fresh detectors and routes (before a restore from a checkpoint)."""
        spec, kind = self.topology.spec, self.kind
        context = self.topology.context(kind)
        self.detectors = {
            d.name: build_detector(d.kind, context, d.params) for d in spec.detectors if d.sensor_kind == kind
        }
        for detector in self.detectors.values():
            detector.resize(len(self._sensors))
        self.routes = [
            _Route(r.detector, RouteEvaluator(r, kind, self._sensors))
            for r in spec.routes
            if r.detector in self.detectors
        ]
        self._alert_sensors: dict[int, tuple[str, str, str, float | None, float | None, SensorInfo | None]] = {}
        self._detected: tuple[int, str] = (-1, "")
        # what the boards read (streams/latest.py); reset with the state: a partition that
        # moved away must not keep showing its sensors' old values from this worker
        self.latest = LatestValues(
            kind, [s for s in self._sensors if s is not None], list(self._kind_spec.quantities),
            spec.metrics.latest_values.get(kind, []), [d for d in spec.metrics.latest_scores if d in self.detectors])

    def stateful_parts(self) -> dict[str, Stateful]:
        """Every part with per-sensor state, by a stable name (for checkpoints)."""
        parts: dict[str, Stateful] = {f"detector:{name}": det for name, det in self.detectors.items()}
        parts.update({f"route:{r.evaluator.spec.rule}": r.evaluator.state for r in self.routes})
        return parts

    def process(self, messages: RawBatch | Sequence[RawMessage], now_ms: int) -> BatchResult:
        t0 = time.perf_counter()
        raw = RawBatch.of(messages)
        decoded = self.decoder.decode(raw, self.index, now_ms)
        self.partitions.delivered(np.unique(raw.partitions).tolist(), now_ms)
        idle = self.partitions.idle(now_ms)
        if idle:  # their clocks may follow the others' (streams/idle.py)
            decoded = dataclasses.replace(decoded, batch=dataclasses.replace(decoded.batch, idle_partitions=idle))
        self._grow()
        t1 = time.perf_counter()
        late: dict[str, int] = {}
        touched: list[IntArray] = [decoded.batch.sensor_idx.astype(np.int64)]
        timings: dict[str, float] = {}
        alerts = self._detect(decoded.batch, now_ms, late, touched, timings)
        t2 = time.perf_counter()
        return BatchResult(
            alerts=alerts,
            dead=decoded.dead,
            n_messages=len(raw),
            n_readings=decoded.n_readings,
            n_unknown_sensors=decoded.n_unknown_sensors,
            late_by_rule=late,
            touched=np.unique(np.concatenate(touched)),
            detector_seconds=timings,
            # detect: the detectors' scoring; alarm: the routes (levels, conditions, alerts)
            stage_seconds={"decode": t1 - t0, "detect": sum(timings.values()),
                           "alarm": max(0.0, t2 - t1 - sum(timings.values()))},
        )

    def _grow(self) -> None:
        if len(self.index) > len(self._sensors):
            self._sensors.extend([None] * (len(self.index) - len(self._sensors)))
            for route in self.routes:
                route.evaluator.resize(self._sensors)
            for detector in self.detectors.values():
                detector.resize(len(self._sensors))

    def _detect(
        self, batch: ReadingBatch, now_ms: int, late: dict[str, int], touched: list[IntArray], timings: dict[str, float]
    ) -> list[Alert]:
        if len(batch) == 0:
            return []
        scores: dict[str, Scores] = {}
        for name, detector in self.detectors.items():
            t0 = time.perf_counter()
            scores[name] = detector.score_and_update(batch)
            timings[name] = time.perf_counter() - t0
        for found in scores.values():
            if found.sensor_idx is not None:  # entries about silent sensors
                touched.append(found.sensor_idx.astype(np.int64))
        self.latest.update(batch, scores)
        alerts: list[Alert] = []
        for route in self.routes:
            found = scores[route.detector]
            changes = route.evaluator.evaluate(batch, found)
            if changes.n_late:
                late[route.evaluator.spec.rule] = changes.n_late
            alerts.extend(self._alerts(route.evaluator, changes, found.measure, now_ms))
        alerts.sort(key=lambda a: (a.event_time_ms, a.alarm_key))
        return alerts

    def _alerts(self, ev: RouteEvaluator, t: Transitions, measure: str, now_ms: int) -> list[Alert]:
        """One alarm event per level change of a route (a cleared alarm reports the level it
        left), with what the changes share looked up once."""
        if t.rows.shape[0] == 0:
            return []
        route = ev.spec
        rule, kind, levels = route.rule, self.kind, [(lv.severity.value, lv.severity.colour) for lv in route.levels]
        detected_at = self._detected_at(now_ms)
        fixed = list(route.departments) if route.departments else None
        who, out = self._alert_sensors, []
        for sensor_idx, event_ms, previous, current, score, threshold, event_ts in zip(
                t.sensor_idx.tolist(), t.event_time_ms.tolist(), t.previous.tolist(), t.current.tolist(),
                t.score.tolist(), t.threshold.tolist(), self._iso_many(t.event_time_ms), strict=True):
            status: Status = "firing" if previous == 0 else ("resolved" if current == 0 else "updated")
            severity, colour = levels[(current or previous) - 1]
            sensor_id, site_id, district, lat, lon, info = who.get(sensor_idx) or self._who(sensor_idx)
            alarm_key = f"{sensor_id}:{rule}"
            fields = {"rule": rule, "sensor_id": sensor_id, "site_id": site_id, "district": district, "value": score,
                      "threshold": threshold, "severity": severity, "status": status}
            out.append(Alert(
                alert_id=alert_id(alarm_key, status, event_ms, previous, current),
                alarm_key=alarm_key, status=status, severity=severity, level=colour, rule=rule, kind=kind,
                sensor_id=sensor_id, site_id=site_id, district=district, lat=lat, lon=lon, quantity=measure,
                value=score, threshold=threshold, score=score, event_ts=event_ts, event_time_ms=event_ms,
                detected_at=detected_at, departments=list(fixed) if fixed is not None else self._departments(route, info),
                summary=_summary(route, fields),
            ))
        return out

    def _who(self, sensor_idx: int) -> tuple[str, str, str, float | None, float | None, SensorInfo | None]:
        """What an alarm event says about a sensor (cached: indices and the catalog are fixed)."""
        found = self._alert_sensors.get(sensor_idx)
        if found is None:
            sensor_id = self.index.sensor_id(sensor_idx)
            info = self._sensors[sensor_idx] if sensor_idx < len(self._sensors) else None
            found = (sensor_id, info.site_id if info else sensor_id, info.district if info else "unknown",
                     info.lat if info else None, info.lon if info else None, info)
            self._alert_sensors[sensor_idx] = found
        return found

    def _departments(self, route: RouteSpec, info: SensorInfo | None) -> list[str]:
        if route.departments:
            return list(route.departments)
        if info is not None and info.departments:
            return list(info.departments)
        return list(self._kind_spec.departments)

    def _iso(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, self._tz).isoformat(timespec="milliseconds")

    def _detected_at(self, now_ms: int) -> str:
        """``_iso(now_ms)``, once per batch."""
        if self._detected[0] != now_ms:
            self._detected = (now_ms, self._iso(now_ms))
        return self._detected[1]

    def _iso_many(self, ms: IntArray) -> list[str]:
        """``_iso`` of each event time, formatted by numpy in one call (the city's offset is a
        whole number of minutes: ``isoformat`` then writes it as the fixed suffix)."""
        offset = self._tz.utcoffset(None)
        if len(ms) < 4 or offset is None or offset.seconds % 60 or offset.microseconds:
            return [self._iso(m) for m in ms.tolist()]
        local = np.asarray(ms, np.int64) + offset // timedelta(milliseconds=1)
        if int(local.min()) < _YEAR_1000_MS or int(local.max()) >= _YEAR_10000_MS:
            return [self._iso(m) for m in ms.tolist()]
        suffix = self._iso(0)[23:]
        return [text + suffix for text in np.datetime_as_string(local.astype("datetime64[ms]"), unit="ms").tolist()]

    def restore(self, active: Sequence[Alert]) -> int:
        """Set every alarm level from the live alarms (Redis) after a restart."""
        rules = {r.evaluator.spec.rule: r.evaluator for r in self.routes}
        for evaluator in rules.values():
            evaluator.level[:] = 0
        restored = 0
        mine = [a for a in active if a.kind == self.kind and a.rule in rules]
        idx = self.index.lookup([a.sensor_id for a in mine])
        self._grow()
        for a, sensor_idx in zip(mine, idx, strict=True):
            ev = rules[a.rule]
            ranks = [lvl.severity.value for lvl in ev.spec.levels]
            if a.severity in ranks:
                ev.level[sensor_idx] = ranks.index(a.severity) + 1
                # readings up to the alarm's own are already reflected in it
                ev.last_event_ms[sensor_idx] = max(ev.last_event_ms[sensor_idx], a.event_time_ms)
                restored += 1
        return restored


_YEAR_1000_MS = (datetime(1000, 1, 1) - datetime(1970, 1, 1)) // timedelta(milliseconds=1)
_YEAR_10000_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000) - datetime(1970, 1, 1)) // timedelta(milliseconds=1) + 1


def alert_id(alarm_key: str, status: str, event_ms: int, previous: int, current: int) -> str:
    """Deterministic: the same reading causing the same change gives the same id."""
    digest = hashlib.blake2b(f"{alarm_key}|{status}|{event_ms}|{previous}|{current}".encode(), digest_size=12)
    return digest.hexdigest()


def _summary(route: RouteSpec, fields: dict[str, object]) -> str:
    try:
        text = route.summary.format(**fields)
    except (KeyError, ValueError, IndexError):
        text = f"{route.rule} at {fields['site_id']}"
    word = {"firing": "", "updated": " (level changed)", "resolved": " (cleared)"}[str(fields["status"])]
    return f"[{fields['severity']}] {text}{word}"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000
