"""Two workers in one group. A second worker joins, clears an alarm on the
partition it took over, and leaves again. The first worker gets the partition
back with a stale in-memory level for that sensor: unless it re-reads the
levels from Redis on assignment, the next crossing would not alarm."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from sinks.base import Alert
from streams.stack import StackConfig
from streams.topology import Topology
from tests.integration.conftest import WorkerProcess, free_port, wait_for

pytestmark = pytest.mark.integration


def _readings(worker: WorkerProcess) -> float:
    worker.assert_alive()
    return sum(float(line.rsplit(" ", 1)[1]) for line in worker.metrics().splitlines()
               if line.startswith("cityops_readings_total{"))


async def _send_gas(bootstrap: str, topic: str, values: dict[str, float], ts: int) -> dict[str, int]:
    """One gas reading per sensor; returns the partition each landed on."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        partitions = {}
        for sensor, value in values.items():
            body = json.dumps({"sensor_id": sensor, "ts": ts, "values": {"gas_lel": value}}).encode()
            meta = await (await producer.send(topic, value=body, key=sensor.encode()))
            partitions[sensor] = meta.partition
        return partitions
    finally:
        await producer.stop()


async def test_partition_handed_back_gets_fresh_alarm_levels(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, reader_factory: Any, tmp_path: Path
) -> None:
    topo = isolated_topology
    topic = topo.kind("hazmat").topic
    gas = [s.sensor_id for s in topo.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS")]
    t0 = time.time_ns() // 1_000_000 - 60_000
    # one gas detector per partition, whichever partition the second worker gets
    probe = await _send_gas(stack_cfg.bootstrap, topic, {s: 1.0 for s in gas}, t0)
    sensors = [next(s for s in gas if probe[s] == p) for p in sorted(set(probe.values()))]
    assert len(sensors) == topo.spec.topics.partitions

    def statuses(recs: list[bytes], sensor: str) -> list[str]:
        return [a.status for a in map(Alert.from_json, recs) if a.alarm_key == f"{sensor}:gas_lel_alarm"]

    port = free_port()
    second = replace(worker, env={**worker.env, "CITYOPS_WEB_PORT": str(port), "CITYOPS_DATA_DIR": str(tmp_path / "b")},
                     log_path=tmp_path / "worker-b.log", web_port=port, proc=None)
    try:
        worker.start()
        async with reader_factory(topo.spec.topics.alerts) as reader:
            await _send_gas(stack_cfg.bootstrap, topic, {s: 30.0 for s in sensors}, t0 + 1000)
            await reader.until(lambda recs: all(statuses(recs, s) == ["firing"] for s in sensors), 60,
                               "both alarms firing on the first worker", alive=worker)
            second.start()
            # the hazmat partitions split between the two (one rebalance generation: disjoint, all owned)
            wait_for(lambda: (second.partitions("hazmat") and not second.partitions("hazmat") & worker.partitions("hazmat")
                              and len(second.partitions("hazmat") | worker.partitions("hazmat")) == len(sensors)),
                     60, "the second worker's share of the hazmat partitions")
            await _send_gas(stack_cfg.bootstrap, topic, {s: 5.0 for s in sensors}, t0 + 2000)
            await reader.until(lambda recs: all(statuses(recs, s) == ["firing", "resolved"] for s in sensors), 60,
                               "both alarms cleared, one of them by the second worker", alive=second)
            # its counters move right after its sinks: wait, do not race them
            wait_for(lambda: _readings(second) > 0, 10, "the second worker's readings counter")
            second.stop()  # the first worker takes its partition back
            await _send_gas(stack_cfg.bootstrap, topic, {s: 40.0 for s in sensors}, t0 + 3000)
            records = await reader.until(
                lambda recs: all(len(statuses(recs, s)) >= 3 for s in sensors), 60, "both alarms firing again",
                alive=worker)
        for sensor in sensors:
            assert statuses(records, sensor) == ["firing", "resolved", "firing"], sensor
    finally:
        second.stop()
