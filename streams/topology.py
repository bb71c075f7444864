"""topology.yaml -> a validated Topology. The only place YAML turns into objects.

Errors name the path of the offending entry and the valid options, e.g.
``detectors[2].kind: unknown 'ewmaz'; valid: ['aqi_hj633', 'hj212_flag', ...]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, cast, get_args, get_origin

import yaml
from aiokafka.partitioner import murmur2
from pydantic import BaseModel, ValidationError

from detectors.base import DetectorContext
from streams.catalog import Catalog, SensorInfo, load_catalog
from streams.errors import TopologyError
from streams.topology_spec import Category, KindSpec, RouteSpec, TopologySpec

DEFAULT_TOPOLOGY = Path("topology.yaml")


@dataclass(frozen=True, slots=True)
class Topology:
    path: Path
    spec: TopologySpec
    catalog: Catalog

    def kind(self, name: str) -> KindSpec:
        return self.spec.kinds[name]

    def quantities(self, kind: str) -> tuple[str, ...]:
        return tuple(self.spec.kinds[kind].quantities)

    def context(self, kind: str) -> DetectorContext:
        sensors = self.catalog.by_kind(kind)
        return DetectorContext(
            **_kind_context(self.spec, kind),
            sensor_ids=tuple(s.sensor_id for s in sensors),
            site_ids=tuple(s.site_id for s in sensors),
            site_names=tuple(s.site_name for s in sensors),
            limits=tuple(s.limits for s in sensors),
            sensor_partitions=tuple(key_partition(s.sensor_id.encode(), self.spec.topics.partitions) for s in sensors),
        )

    def input_topics(self) -> dict[str, str]:
        """topic -> sensor kind."""
        return {spec.topic: kind for kind, spec in self.spec.kinds.items()}

    def all_topics(self) -> list[tuple[str, int]]:
        """Every topic the worker reads or writes, with its partition count."""
        names = [*self.input_topics(), self.spec.topics.alerts, self.spec.topics.deadletter]
        return [(name, self.spec.topics.partitions) for name in names]

    def routes_for(self, detector: str) -> list[RouteSpec]:
        return [r for r in self.spec.routes if r.detector == detector]

    def rule_categories(self) -> dict[str, Category]:
        """rule -> its category (the route's ``category``, else its detector kind's, else value)."""
        from detectors.registry import DETECTOR_CATEGORIES

        kinds = {d.name: d.kind for d in self.spec.detectors}
        return {
            r.rule: r.category or cast(Category, DETECTOR_CATEGORIES.get(kinds.get(r.detector, ""), "value"))
            for r in self.spec.routes
        }


def key_partition(key: bytes, n_partitions: int) -> int:
    """The partition Kafka's default partitioner (Java's and aiokafka's: murmur2) gives ``key``."""
    return int(murmur2(key) & 0x7FFFFFFF) % n_partitions


def load_topology(path: str | Path = DEFAULT_TOPOLOGY) -> Topology:
    """Read, parse and cross-check topology.yaml and its sensor catalog."""
    path = Path(path)
    spec = parse_spec(path, _read_yaml(path))
    catalog = load_catalog((path.parent / spec.catalog).resolve())
    problems = list(_cross_check(spec)) + list(_check_catalog(spec, catalog.sensors))
    if problems:
        raise TopologyError(_report(path, problems))
    return Topology(path=path, spec=spec, catalog=catalog)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"{path}: cannot read topology: {exc.strerror}"
        raise TopologyError(msg) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = f"{path}: not valid YAML: {exc}"
        raise TopologyError(msg) from exc


def parse_spec(path: Path, data: Any) -> TopologySpec:
    if not isinstance(data, dict):
        msg = f"{path}: expected a mapping at the top level, got {type(data).__name__}"
        raise TopologyError(msg)
    try:
        return TopologySpec.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(_report(path, [_describe(err) for err in exc.errors()])) from None


def _describe(err: Any) -> str:
    loc = tuple(err["loc"])
    where = format_loc(loc)
    if err["type"] == "extra_forbidden":
        valid = _fields_at(loc[:-1])
        return f"{where}: unknown field; valid: {valid}"
    if err["type"] == "missing":
        return f"{where}: required field is missing"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"


def format_loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """Field names of the model found by walking ``loc`` from TopologySpec."""
    annotation: Any = TopologySpec
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    annotation = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return sorted(annotation.model_fields)
    return []


def _step(annotation: Any, part: Any) -> Any:
    """The type one step down: a list item, a dict value, or a model field."""
    annotation = _strip_optional(annotation)
    if get_origin(annotation) in (list, dict):
        return get_args(annotation)[-1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return field.annotation if field is not None else None
    return None


def _strip_optional(annotation: Any) -> Any:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _report(path: Path, problems: Sequence[str]) -> str:
    shown = "\n".join(f"  - {p}" for p in problems[:25])
    more = f"\n  ... and {len(problems) - 25} more" if len(problems) > 25 else ""
    return f"{path}: {len(problems)} problem(s):\n{shown}{more}"


def _cross_check(spec: TopologySpec) -> Iterator[str]:
    yield from _check_kinds(spec)
    yield from _check_detectors(spec)
    yield from _check_routes(spec)
    yield from _check_notifications(spec)
    yield from _check_metrics(spec)


def _check_kinds(spec: TopologySpec) -> Iterator[str]:
    departments = sorted(spec.departments)
    topics: dict[str, str] = {}
    for kind, kspec in spec.kinds.items():
        for i, dept in enumerate(kspec.departments):
            if dept not in spec.departments:
                yield f"kinds.{kind}.departments[{i}]: unknown department {dept!r}; valid: {departments}"
        if kspec.topic in topics:
            yield f"kinds.{kind}.topic: {kspec.topic!r} is already the topic of kind {topics[kspec.topic]!r}"
        topics[kspec.topic] = kind


def _check_detectors(spec: TopologySpec) -> Iterator[str]:
    from detectors.registry import DETECTORS, build_detector  # registry imports every detector

    seen: set[str] = set()
    for i, det in enumerate(spec.detectors):
        where = f"detectors[{i}]"
        if det.name in seen:
            yield f"{where}.name: duplicate detector name {det.name!r}"
        seen.add(det.name)
        if det.sensor_kind not in spec.kinds:
            yield f"{where}.sensor_kind: unknown {det.sensor_kind!r}; valid: {sorted(spec.kinds)}"
            continue
        if det.kind not in DETECTORS:
            yield f"{where}.kind: unknown {det.kind!r}; valid: {sorted(DETECTORS)}"
            continue
        context = DetectorContext(**_kind_context(spec, det.sensor_kind))
        try:
            build_detector(det.kind, context, det.params)
        except (TypeError, ValueError) as exc:
            yield f"{where}.params: {exc}"


def _kind_context(spec: TopologySpec, kind: str) -> dict[str, Any]:
    """The DetectorContext fields that come from topology.yaml alone."""
    kspec = spec.kinds[kind]
    sign = -1 if spec.timezone.startswith("-") else 1
    hours, _, minutes = spec.timezone.lstrip("+-").partition(":")
    return {
        "quantities": tuple(kspec.quantities),
        "quantity_ranges": tuple((q.min, q.max) for q in kspec.quantities.values()),
        "expected_period_s": kspec.expected_period_s,
        "utc_offset_s": sign * (int(hours) * 3600 + int(minutes) * 60),
    }


def _check_routes(spec: TopologySpec) -> Iterator[str]:
    detectors = {d.name: d for d in spec.detectors}
    rules: set[str] = set()
    for i, route in enumerate(spec.routes):
        where = f"routes[{i}]"
        if route.rule in rules:
            yield f"{where}.rule: duplicate rule {route.rule!r}"
        rules.add(route.rule)
        det = detectors.get(route.detector)
        if det is None:
            yield f"{where}.detector: unknown {route.detector!r}; valid: {sorted(detectors)}"
            continue
        for j, dept in enumerate(route.departments or []):
            if dept not in spec.departments:
                yield f"{where}.departments[{j}]: unknown department {dept!r}; valid: {sorted(spec.departments)}"
        kind = spec.kinds.get(det.sensor_kind)
        if kind is not None:
            yield from _check_levels(where, route, tuple(kind.quantities))


def _check_levels(where: str, route: RouteSpec, quantities: tuple[str, ...]) -> Iterator[str]:
    ranks = [level.severity.rank for level in route.levels]
    if ranks != sorted(set(ranks)):
        yield f"{where}.levels: severities must rise strictly from the first level to the last"
    fixed = [level.at for level in route.levels if level.at is not None]
    ordered = sorted(fixed) if route.direction == "above" else sorted(fixed, reverse=True)
    if fixed != ordered or len(set(fixed)) != len(fixed):
        yield f"{where}.levels: `at` values must be strictly {'increasing' if route.direction == 'above' else 'decreasing'}"
    for j, level in enumerate(route.levels):
        if level.limit is not None and level.limit.partition(".")[0] not in quantities:
            yield (
                f"{where}.levels[{j}].limit: {level.limit!r} must be `<quantity>.<name>` "
                f"with a quantity of this kind; valid quantities: {list(quantities)}"
            )


def _check_catalog(spec: TopologySpec, sensors: Sequence[SensorInfo]) -> Iterator[str]:
    for sensor in sensors:
        where = f"catalog {sensor.sensor_id}"
        kind = spec.kinds.get(sensor.kind)
        if kind is None:
            yield f"{where}: kind {sensor.kind!r} unknown; valid: {sorted(spec.kinds)}"
            continue
        for dept in sensor.departments:
            if dept not in spec.departments:
                yield f"{where}: department {dept!r} unknown; valid: {sorted(spec.departments)}"
        for name in sensor.limits:
            if name.partition(".")[0] not in kind.quantities:
                yield f"{where}: limit {name!r} names no quantity of kind {sensor.kind!r}; valid: {list(kind.quantities)}"


def _check_notifications(spec: TopologySpec) -> Iterator[str]:
    notes = spec.notifications
    names: set[str] = set()
    for i, receiver in enumerate(notes.receivers):
        where = f"notifications.receivers[{i}]"
        if receiver.name in names:
            yield f"{where}.name: duplicate receiver name {receiver.name!r}"
        names.add(receiver.name)
        for j, dept in enumerate(receiver.departments or []):
            if dept not in spec.departments:
                yield f"{where}.departments[{j}]: unknown department {dept!r}; valid: {sorted(spec.departments)}"
    rules = sorted(r.rule for r in spec.routes)
    for i, inhibit in enumerate(notes.inhibit):
        for side in ("source", "target"):
            match = getattr(inhibit, side)
            for j, rule in enumerate(match.rule or []):
                if rule not in rules:
                    yield f"notifications.inhibit[{i}].{side}.rule[{j}]: unknown rule {rule!r}; valid: {rules}"
            for j, kind in enumerate(match.kind or []):
                if kind not in spec.kinds:
                    yield f"notifications.inhibit[{i}].{side}.kind[{j}]: unknown kind {kind!r}; valid: {sorted(spec.kinds)}"


def _check_metrics(spec: TopologySpec) -> Iterator[str]:
    for kind, quantities in spec.metrics.latest_values.items():
        kspec = spec.kinds.get(kind)
        if kspec is None:
            yield f"metrics.latest_values.{kind}: unknown kind; valid: {sorted(spec.kinds)}"
            continue
        for i, quantity in enumerate(quantities):
            if quantity not in kspec.quantities:
                yield f"metrics.latest_values.{kind}[{i}]: unknown quantity {quantity!r}; valid: {list(kspec.quantities)}"
    detectors = sorted(d.name for d in spec.detectors)
    for i, name in enumerate(spec.metrics.latest_scores):
        if name not in detectors:
            yield f"metrics.latest_scores[{i}]: unknown detector {name!r}; valid: {detectors}"
