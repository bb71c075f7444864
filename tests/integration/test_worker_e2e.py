"""Readings in through real Kafka -> the expected alarms on the alerts topic,
bad input -> dead-letter records, live alarms on the Redis board."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import redis

from sinks.base import Alert
from streams.stack import StackConfig
from streams.topology import Topology
from tests.integration.conftest import WorkerProcess, produce, wait_for

pytestmark = pytest.mark.integration


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _reading(sensor: str, values: dict[str, Any], ts: Any = None, flag: str = "N") -> bytes:
    return json.dumps({"sensor_id": sensor, "ts": _now_ms() if ts is None else ts, "values": values, "flag": flag}).encode()


def _first(topo: Topology, kind: str, prefix: str, limit: str | None = None) -> str:
    return next(
        s.sensor_id for s in topo.catalog.by_kind(kind)
        if s.sensor_id.startswith(prefix) and (limit is None or limit in s.limits)
    )


async def test_readings_become_the_expected_alarms(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, reader_factory: Any
) -> None:
    topo = isolated_topology
    gas = _first(topo, "hazmat", "DG-GS")
    tank = _first(topo, "hazmat", "DG-TK", "pressure_kpa.highhigh")
    tank_hh = next(s.limits["pressure_kpa.highhigh"] for s in topo.catalog.sensors if s.sensor_id == tank)
    air = _first(topo, "air", "DG-AQ")
    meter = _first(topo, "energy", "DG-EM")
    worker.start()
    hazmat_topic, air_topic = topo.kind("hazmat").topic, topo.kind("air").topic
    t0 = _now_ms() - 10_000  # one reading a second: a repeated timestamp would be a duplicate
    await produce(stack_cfg.bootstrap, hazmat_topic, [
        (gas.encode(), _reading(gas, {"gas_lel": 2.0}, ts=t0)),
        (gas.encode(), _reading(gas, {"gas_lel": 27.0}, ts=t0 + 1000)),   # GB/T 50493 first-level alarm
        (gas.encode(), _reading(gas, {"gas_lel": 55.0}, ts=t0 + 2000)),   # second level
        (tank.encode(), _reading(tank, {"pressure_kpa": tank_hh + 10, "level_pct": 50.0, "temperature_c": 20.0})),
    ])
    # PM2.5 250 µg/m³ is IAQI 300 on HJ 633's 24 h table (breakpoint 250 -> 300): heavy pollution
    await produce(stack_cfg.bootstrap, air_topic, [(air.encode(), _reading(air, {"pm25": 250.0, "pm10": 80.0, "no2": 30.0}))])
    await produce(stack_cfg.bootstrap, topo.kind("energy").topic, [(meter.encode(), _reading(meter, {"power_kw": 0.0}, flag="D"))])

    expected = {
        (f"{gas}:gas_lel_alarm", "firing", "major"), (f"{gas}:gas_lel_alarm", "updated", "critical"),
        (f"{tank}:tank_pressure_limit", "firing", "critical"), (f"{air}:aqi_level", "firing", "minor"),
        (f"{meter}:equipment_energy", "firing", "minor"),
    }
    async with reader_factory(topo.spec.topics.alerts) as alerts_reader:
        records = await alerts_reader.until(
            lambda recs: expected <= {(a.alarm_key, a.status, a.severity) for a in map(Alert.from_json, recs)},
            60, f"alerts {sorted(expected)}", alive=worker,
        )
    alerts = [Alert.from_json(r) for r in records]
    by_key = {(a.alarm_key, a.status): a for a in alerts}
    critical = by_key[(f"{gas}:gas_lel_alarm", "updated")]
    assert (critical.level, critical.threshold, critical.value, critical.kind) == ("red", 50.0, 55.0, "hazmat")
    assert by_key[(f"{air}:aqi_level", "firing")].value == 300.0
    assert by_key[(f"{tank}:tank_pressure_limit", "firing")].threshold == tank_hh
    assert len({a.alert_id for a in alerts}) == len(alerts)
    # the live board in Redis (written right after Kafka) holds one alarm per key, at its current severity
    board = redis.Redis.from_url(stack_cfg.redis_url)
    board_key = f"cityops:{worker.env['CITYOPS_NAMESPACE']}:alarms:active"

    def live() -> dict[str, Alert]:
        return {k.decode(): Alert.from_json(v) for k, v in board.hgetall(board_key).items()}

    wait_for(lambda: {k for k, _, _ in expected} <= set(live()), 10, "the live board to hold every alarm")
    assert live()[f"{gas}:gas_lel_alarm"].severity == "critical"


async def test_bad_input_is_dead_lettered_and_valid_readings_in_the_same_batch_still_alarm(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, reader_factory: Any
) -> None:
    topo = isolated_topology
    gas = _first(topo, "hazmat", "DG-GS")
    max_bytes = topo.spec.input.max_message_bytes
    bad = {
        "malformed_json": b'{"sensor_id": "DG-GS-0001", "ts": ',
        "non_finite": b'{"sensor_id": "%s", "ts": %d, "values": {"gas_lel": NaN}}' % (gas.encode(), _now_ms()),
        "wrong_type": _reading(gas, {"gas_lel": "high"}),
        "unknown_quantity": _reading(gas, {"gas_lell": 3.0}),
        "oversize": b'{"sensor_id": "%s", "pad": "%s"}' % (gas.encode(), b"x" * max_bytes),
        "ts_future": _reading(gas, {"gas_lel": 3.0}, ts=_now_ms() + 86_400_000),
    }
    messages = [(gas.encode(), body) for body in bad.values()] + [(gas.encode(), _reading(gas, {"gas_lel": 60.0}))]
    await produce(stack_cfg.bootstrap, topo.kind("hazmat").topic, messages)  # before the worker starts: one batch
    worker.start()
    async with reader_factory(topo.spec.topics.deadletter) as dl_reader:
        records = await dl_reader.until(lambda recs: len(recs) >= len(bad), 60, "one dead letter per bad message", alive=worker)
    dead = [json.loads(r) for r in records]
    assert sorted(d["reason"] for d in dead) == sorted(bad)
    for d in dead:
        assert base64.b64decode(d["original_b64"]) == bad[d["reason"]]
        assert d["source"]["topic"] == topo.kind("hazmat").topic
        assert isinstance(d["source"]["offset"], int) and isinstance(d["source"]["partition"], int)
        assert d["detail"]
    async with reader_factory(topo.spec.topics.alerts) as alerts_reader:
        await alerts_reader.until(
            lambda recs: any(Alert.from_json(r).alarm_key == f"{gas}:gas_lel_alarm" for r in recs), 30, "the valid reading's alarm", alive=worker
        )
    # counters are updated right after the sinks: wait for them, do not race them
    wanted = [f'cityops_deadletters_total{{kind="hazmat",reason="{reason}"}} 1.0' for reason in bad]
    wait_for(lambda: all(line in worker.metrics() for line in wanted), 10, "a dead-letter counter per reason")
