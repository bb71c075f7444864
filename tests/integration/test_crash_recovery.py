"""A worker killed with SIGKILL mid-stream and restarted loses no alarm."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import msgspec
import pytest

from sinks.base import Alert
from streams.sim.engine import SimOptions, generate, ground_truth
from streams.stack import StackConfig
from streams.topology import Topology
from tests.integration.conftest import WorkerProcess, produce

pytestmark = pytest.mark.integration

SIM_SECONDS = 60.0


def _incidents_alarmed(truth: list[dict[str, Any]], alerts: list[Alert]) -> list[str]:
    """Ids of scripted incidents with no firing alert of the expected rule on one of their sensors."""
    fired = {(a.rule, a.sensor_id) for a in alerts if a.status in ("firing", "updated")}
    return [t["id"] for t in truth if not any((t["rule"], s) in fired for s in t["sensor_ids"])]


def _lifecycles_are_consistent(alerts: list[Alert]) -> None:
    """After de-duplicating on alert_id, each alarm_key alternates firing -> (updated)* -> resolved.
    A restarted worker that forgot its state would fire twice; one that repeated
    a change with a new id would break de-duplication."""
    unique: dict[str, Alert] = {}
    for alert in alerts:
        previous = unique.setdefault(alert.alert_id, alert)
        # a redelivered batch re-emits the same event; only detected_at (wall clock) may differ
        same = msgspec.structs.replace(previous, detected_at=alert.detected_at) == alert
        assert same, f"alert_id {alert.alert_id} reused for a different event: {previous} vs {alert}"
    per_key: dict[str, list[Alert]] = defaultdict(list)
    for alert in unique.values():
        per_key[alert.alarm_key].append(alert)
    for key, events in per_key.items():
        active = False
        for event in sorted(events, key=lambda a: a.event_time_ms):
            expected_active = event.status != "firing"
            history = [(e.status, e.event_ts, e.value) for e in events]
            assert active == expected_active, f"{key}: {event.status} at {event.event_ts} while active={active}; {history}"
            active = event.status != "resolved"


async def test_sigkill_mid_stream_loses_no_alarm(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, reader_factory: Any
) -> None:
    topo = isolated_topology
    # a minute of simulated city, produced as fast as Kafka takes it; event times end now
    opts = SimOptions(rate=None, duration_s=SIM_SECONDS, seed=20261126, speed=1.0,
                      start_ms=time.time_ns() // 1_000_000 - int(SIM_SECONDS * 1000))
    messages = [m for tick in generate(topo, opts) for m in tick]
    truth = [t for t in ground_truth(topo, opts) if t["type"] != "sensor_fault" and t["rule"]]
    assert len({t["type"] for t in truth}) == 4, truth
    half = len(messages) // 2

    async def send(part: list[Any]) -> None:
        by_topic: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        for m in part:
            by_topic[m.topic].append((m.key, m.value))
        for topic, records in by_topic.items():
            await produce(stack_cfg.bootstrap, topic, records)

    await send(messages[:half])
    worker.start()
    async with reader_factory(topo.spec.topics.alerts) as reader:
        await reader.until(lambda recs: len(recs) >= 1, 60, "the first alarm before the kill", alive=worker)
        worker.kill()
        await send(messages[half:])
        worker.start()
        records = await reader.until(
            lambda recs: not _incidents_alarmed(truth, [Alert.from_json(r) for r in recs]),
            90, f"an alarm for every scripted incident {[t['id'] for t in truth]}", alive=worker,
        )
    alerts = [Alert.from_json(r) for r in records]
    import os
    if os.environ.get("CITYOPS_DEBUG_DUMP"):
        with open(os.environ["CITYOPS_DEBUG_DUMP"], "wb") as fh:
            fh.write(b"\n".join(records))
    assert _incidents_alarmed(truth, alerts) == []
    _lifecycles_are_consistent(alerts)
