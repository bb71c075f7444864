"""The detector library through the real stack: a slow gas leak that never reaches
25 %LEL and a frozen gas detector both alarm through Kafka, the worker and Redis.

Before issue #3 neither raised anything: the leak stays under the GB/T 50493 first
set point and the frozen detector reads a perfectly normal value.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from sinks.base import Alert
from streams.stack import StackConfig
from streams.topology import Topology
from tests.integration.conftest import WorkerProcess, produce

pytestmark = pytest.mark.integration

PERIOD_MS = 10_000  # hazmat detectors report every 10 s


def _gas(sensor: str, ts: int, lel: float) -> tuple[bytes, bytes]:
    return sensor.encode(), json.dumps({"sensor_id": sensor, "ts": ts, "values": {"gas_lel": lel}}).encode()


async def test_slow_leak_and_frozen_detector_alarm(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, reader_factory: Any
) -> None:
    topic = isolated_topology.kind("hazmat").topic
    leaking, frozen = [s.sensor_id for s in isolated_topology.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS")][:2]
    t0 = time.time_ns() // 1_000_000 - 40 * 60_000
    n = 31  # five minutes of readings
    # the leak: 1 -> 22 %LEL over five minutes (17 % of the 25 %LEL set point per minute)
    leak = [_gas(leaking, t0 + i * PERIOD_MS, 1.0 + 21.0 * i / (n - 1)) for i in range(n)]
    # the frozen detector: a normal-looking 3.0 %LEL, repeated
    stuck = [_gas(frozen, t0 + i * PERIOD_MS + 5_000, 3.0) for i in range(n)]
    assert max(json.loads(v)["values"]["gas_lel"] for _, v in leak) < 25.0

    worker.start()
    await produce(stack_cfg.bootstrap, topic, [m for pair in zip(leak, stuck, strict=True) for m in pair])
    reader = reader_factory(isolated_topology.spec.topics.alerts)
    await reader.__aenter__()

    def firing(records: list[bytes], sensor: str, rule: str) -> list[Alert]:
        return [a for a in map(Alert.from_json, records)
                if a.sensor_id == sensor and a.rule == rule and a.status == "firing"]

    def both(records: list[bytes]) -> bool:
        return bool(firing(records, leaking, "gas_lel_rise_prealarm")) and bool(firing(records, frozen, "stuck_gas_lel"))

    records = await reader.until(both, 60, "a rise pre-alarm for the leak and a stuck alarm for the frozen detector",
                                 alive=worker)
    pre_alarm = firing(records, leaking, "gas_lel_rise_prealarm")[0]
    assert pre_alarm.value >= 8.0 and pre_alarm.event_time_ms < t0 + (n - 1) * PERIOD_MS
    assert not [a for a in map(Alert.from_json, records) if a.sensor_id == leaking and a.rule == "gas_lel_alarm"]
    stuck_alarm = firing(records, frozen, "stuck_gas_lel")[0]
    # the stuck rule needs its run of identical readings first (gas_lel_stuck: run_length 12)
    assert stuck_alarm.event_time_ms >= t0 + 11 * PERIOD_MS + 5_000
    assert "frozen" in stuck_alarm.summary
