"""A kind's pipeline on the real topology.yaml: readings in, alarm events out."""

from __future__ import annotations

import json

import pytest

from streams.decode import RawMessage
from streams.pipeline import KindPipeline
from streams.topology import Topology, load_topology

NOW_MS = 1_795_700_000_000


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology("topology.yaml")


def _gas_sensor(topology: Topology) -> str:
    return next(s.sensor_id for s in topology.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS"))


def _messages(sensor: str, values: list[float], flag: str = "N", first: int = 0) -> list[RawMessage]:
    """Readings `first`.. of a stream whose reading i is at NOW - 60 s + i s."""
    return [
        RawMessage(
            json.dumps({"sensor_id": sensor, "ts": NOW_MS - 60_000 + i * 1000, "values": {"gas_lel": v}, "flag": flag}).encode(),
            sensor.encode(), "city.hazmat.readings", 0, i,
        )
        for i, v in enumerate(values, start=first)
    ]


def test_gas_fires_escalates_and_clears_once_each(topology: Topology) -> None:
    pipeline = KindPipeline(topology, "hazmat")
    sensor = _gas_sensor(topology)
    result = pipeline.process(_messages(sensor, [3, 26, 27, 52, 53, 30, 10]), NOW_MS)
    gas = [a for a in result.alerts if a.rule == "gas_lel_alarm"]
    assert [(a.status, a.severity, a.level) for a in gas] == [
        ("firing", "major", "orange"), ("updated", "critical", "red"), ("updated", "major", "orange"), ("resolved", "major", "orange"),
    ]
    assert [a.threshold for a in gas] == [25, 50, 50, 25]
    first = gas[0]
    info = next(s for s in topology.catalog.sensors if s.sensor_id == sensor)
    assert (first.sensor_id, first.site_id, first.district, first.lat) == (sensor, info.site_id, info.district, info.lat)
    assert first.alarm_key == f"{sensor}:gas_lel_alarm"
    assert first.event_time_ms == NOW_MS - 60_000 + 1000
    assert first.event_ts.endswith("+08:00")
    assert set(first.departments) == set(info.departments or topology.kind("hazmat").departments)


def test_alert_ids_are_deterministic_and_batching_does_not_matter(topology: Topology) -> None:
    sensor = _gas_sensor(topology)
    messages = _messages(sensor, [3, 26, 27, 52, 53, 30, 10, 60])
    whole = KindPipeline(topology, "hazmat").process(messages, NOW_MS).alerts
    split_pipeline = KindPipeline(topology, "hazmat")
    split = [a for m in messages for a in split_pipeline.process([m], NOW_MS + 5).alerts]
    assert [a.alert_id for a in whole] == [a.alert_id for a in split]
    assert len({a.alert_id for a in whole}) == len(whole)


def test_non_normal_flag_raises_equipment_alarm_not_gas_alarm(topology: Topology) -> None:
    pipeline = KindPipeline(topology, "hazmat")
    sensor = _gas_sensor(topology)
    result = pipeline.process(_messages(sensor, [80.0, 80.0], flag="D"), NOW_MS)
    assert {(a.rule, a.status) for a in result.alerts} == {("equipment_hazmat", "firing")}
    recovered = pipeline.process(_messages(sensor, [1.0], first=2), NOW_MS)
    assert [(a.rule, a.status) for a in recovered.alerts] == [("equipment_hazmat", "resolved")]


def test_restart_restores_levels_so_nothing_repeats(topology: Topology) -> None:
    sensor = _gas_sensor(topology)
    first = KindPipeline(topology, "hazmat")
    fired = first.process(_messages(sensor, [30.0]), NOW_MS).alerts
    restarted = KindPipeline(topology, "hazmat")
    assert restarted.restore(fired) == 1
    again = restarted.process(_messages(sensor, [31.0], first=1), NOW_MS).alerts
    assert again == []
    cleared = restarted.process(_messages(sensor, [1.0], first=2), NOW_MS).alerts
    assert [a.status for a in cleared] == ["resolved"]


def test_unknown_sensor_uses_kind_defaults(topology: Topology) -> None:
    pipeline = KindPipeline(topology, "hazmat")
    result = pipeline.process(_messages("NOT-IN-CATALOG", [55.0]), NOW_MS)
    assert result.n_unknown_sensors == 1
    (alert,) = [a for a in result.alerts if a.rule == "gas_lel_alarm"]
    assert alert.severity == "critical" and alert.district == "unknown" and alert.lat is None
    assert alert.departments == topology.kind("hazmat").departments
