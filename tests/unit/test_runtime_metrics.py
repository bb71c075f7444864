"""The worker's per-batch metrics (streams/runtime.py): latency from the Kafka timestamp,
alarm events by district and department, state size and tracked sensors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from sinks.base import Alert
from streams.decode import RawMessage
from streams.metrics import Metrics
from streams.pipeline import BatchResult
from streams.runtime import Runtime
from streams.settings import Settings
from streams.topology import load_topology
from tests.unit.test_topology import REPO

NOW_MS = 1_800_000_000_000


def alert(n: int, district: str, departments: list[str]) -> Alert:
    return Alert(
        alert_id=f"a{n}", alarm_key=f"S{n}:gas_lel_alarm", status="firing", severity="major", level="orange",
        rule="gas_lel_alarm", kind="hazmat", sensor_id=f"S{n}", site_id="SITE", district=district, lat=None, lon=None,
        quantity="gas_lel", value=30.0, threshold=25.0, score=30.0, event_ts="2027-01-15T16:00:00+08:00",
        event_time_ms=NOW_MS - 500, detected_at="2027-01-15T16:00:00+08:00", departments=departments, summary="gas",
    )


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    topology = load_topology(REPO / "topology.yaml")
    made = Runtime(Settings(), topology, Metrics.create(CollectorRegistry()))  # connects to nothing until start()
    yield made
    await made.redis.aclose()


async def test_alarm_latency_runs_from_the_oldest_message_of_the_batch(runtime: Runtime) -> None:
    messages = [RawMessage(b"{}", None, "t", 0, 1, NOW_MS - 80), RawMessage(b"{}", None, "t", 0, 2, NOW_MS - 30),
                RawMessage(b"{}", None, "t", 0, 3)]  # no timestamp: ignored
    result = BatchResult(alerts=[alert(1, "Humen", ["emergency"]), alert(2, "Humen", ["emergency", "fire"])],
                         dead=[], n_messages=3, n_readings=3, n_unknown_sensors=0)
    runtime._observe_latency("hazmat", result, messages, NOW_MS)
    registry = runtime.metrics.registry
    assert registry.get_sample_value("cityops_alarm_latency_seconds_count", {"kind": "hazmat"}) == 2
    assert registry.get_sample_value("cityops_alarm_latency_seconds_sum", {"kind": "hazmat"}) == pytest.approx(0.16)
    assert registry.get_sample_value("cityops_batch_latency_seconds_count", {"kind": "hazmat"}) == 1
    assert registry.get_sample_value("cityops_alarm_latency_seconds_bucket", {"kind": "hazmat", "le": "0.075"}) == 0
    assert registry.get_sample_value("cityops_alarm_latency_seconds_bucket", {"kind": "hazmat", "le": "0.1"}) == 2


async def test_a_batch_without_timestamps_observes_no_latency(runtime: Runtime) -> None:
    result = BatchResult(alerts=[], dead=[], n_messages=1, n_readings=1, n_unknown_sensors=0)
    runtime._observe_latency("air", result, [RawMessage(b"{}", None, "t", 0, 1)], NOW_MS)
    assert runtime.metrics.registry.get_sample_value("cityops_batch_latency_seconds_count", {"kind": "air"}) is None


async def test_alarm_events_are_counted_per_district_and_department_and_state_size_is_set(runtime: Runtime) -> None:
    result = BatchResult(alerts=[alert(1, "Humen", ["emergency"]), alert(2, "Humen", ["emergency", "fire"])],
                         dead=[], n_messages=2, n_readings=2, n_unknown_sensors=0)
    runtime._observe("hazmat", result)
    registry = runtime.metrics.registry
    by_district = {"kind": "hazmat", "district": "Humen", "severity": "major", "status": "firing"}
    assert registry.get_sample_value("cityops_alarm_events_by_district_total", by_district) == 2
    by_department = {"severity": "major", "status": "firing"}
    assert registry.get_sample_value("cityops_alarm_events_by_department_total", {"department": "emergency", **by_department}) == 2
    assert registry.get_sample_value("cityops_alarm_events_by_department_total", {"department": "fire", **by_department}) == 1
    catalog_hazmat = len(runtime.topology.catalog.by_kind("hazmat"))
    assert registry.get_sample_value("cityops_sensors_tracked", {"kind": "hazmat", "catalog": "yes"}) == catalog_hazmat
    state = registry.get_sample_value("cityops_detector_state_bytes", {"kind": "hazmat"})
    assert state is not None and state >= catalog_hazmat * 100  # ~dozens of detector/route fields per sensor


async def test_alarms_later_than_their_kinds_budget_are_counted_per_rule(runtime: Runtime) -> None:
    budget_ms = runtime.topology.kind("hazmat").batch.budget_ms
    on_time = [RawMessage(b"{}", None, "t", 0, 1, NOW_MS - budget_ms + 10)]
    late = [RawMessage(b"{}", None, "t", 0, 2, NOW_MS - budget_ms - 10)]
    result = BatchResult(alerts=[alert(1, "Humen", ["emergency"])], dead=[], n_messages=1, n_readings=1,
                         n_unknown_sensors=0)
    runtime._observe_latency("hazmat", result, on_time, NOW_MS)
    labels = {"kind": "hazmat", "rule": "gas_lel_alarm"}
    assert runtime.metrics.registry.get_sample_value("cityops_alarm_budget_overruns_total", labels) == 0
    runtime._observe_latency("hazmat", result, late, NOW_MS)
    assert runtime.metrics.registry.get_sample_value("cityops_alarm_budget_overruns_total", labels) == 1
