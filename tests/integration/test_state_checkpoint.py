"""Detector and route state survives a worker restart through its Redis checkpoint.

The gas route gets an on-delay (`for_s: 60`): two readings above 25 %LEL, 30 s
apart, start the condition but do not fire it. The worker stops cleanly (its
offsets are committed, nothing is re-delivered) and a new one starts. A third
reading 60 s after the first must fire the alarm at once. That only happens if
the restarted worker knows when the condition began, i.e. restored the
route's state from Redis; a worker starting from scratch would begin a new
60 s wait.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from sinks.base import Alert
from streams.stack import StackConfig
from streams.topology import Topology
from tests.integration.conftest import WorkerProcess, produce, wait_for

pytestmark = pytest.mark.integration


def _readings(worker: WorkerProcess) -> float:
    worker.assert_alive()
    return sum(float(line.rsplit(" ", 1)[1]) for line in worker.metrics().splitlines()
               if line.startswith("cityops_readings_total{"))


def _gas(sensor: str, ts: int, lel: float) -> tuple[bytes, bytes]:
    return sensor.encode(), json.dumps({"sensor_id": sensor, "ts": ts, "values": {"gas_lel": lel}}).encode()


async def test_on_delay_condition_survives_a_restart(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, reader_factory: Any
) -> None:
    data = yaml.safe_load(isolated_topology.path.read_text())
    gas_route = next(r for r in data["routes"] if r["rule"] == "gas_lel_alarm")
    gas_route["for_s"] = 60
    isolated_topology.path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    topic = isolated_topology.kind("hazmat").topic
    sensor = next(s.sensor_id for s in isolated_topology.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS"))
    t0 = time.time_ns() // 1_000_000 - 120_000

    worker.start()
    await produce(stack_cfg.bootstrap, topic, [_gas(sensor, t0, 30.0), _gas(sensor, t0 + 30_000, 30.0)])
    wait_for(lambda: _readings(worker) >= 2, 60, "the first worker to process two readings")
    worker.stop()  # clean: offsets committed, nothing re-delivered

    worker.start()
    await produce(stack_cfg.bootstrap, topic, [_gas(sensor, t0 + 60_000, 30.0)])
    reader = reader_factory(isolated_topology.spec.topics.alerts)
    await reader.__aenter__()

    def fired(records: list[bytes]) -> bool:
        return any(Alert.from_json(r).status == "firing" for r in records)

    records = await reader.until(fired, 60, "the gas alarm after the restart", alive=worker)
    alerts = [Alert.from_json(r) for r in records]
    assert [(a.alarm_key, a.status, a.event_time_ms) for a in alerts] == [
        (f"{sensor}:gas_lel_alarm", "firing", t0 + 60_000)
    ]
