"""A Redis outage delays alarms and never loses them; the worker keeps running."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sinks.base import Alert
from streams.stack import StackConfig
from streams.topology import Topology
from tests.integration.conftest import WorkerProcess, free_port, produce, wait_for

pytestmark = pytest.mark.integration


class RedisServer:
    """A real redis-server of the test's own, so the test may kill it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is installed by `cityops stack up`"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._pong, 20, f"redis on :{self.port}")

    def _pong(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def _health_status(worker: WorkerProcess) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/healthz", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _retries(worker: WorkerProcess, sink: str) -> float:
    """cityops_sink_retries_total of a hazmat sink step (the series exists at 0 from the start)."""
    prefix = f'cityops_sink_retries_total{{kind="hazmat",sink="{sink}"}} '
    return sum(float(line[len(prefix):]) for line in worker.metrics().splitlines() if line.startswith(prefix))


def _gas(sensor: str, value: float, ts: int) -> tuple[bytes, bytes]:
    return sensor.encode(), json.dumps({"sensor_id": sensor, "ts": ts, "values": {"gas_lel": value}}).encode()


async def test_redis_outage_delays_alarms_and_loses_none(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, own_redis: RedisServer, reader_factory: Any
) -> None:
    topo = isolated_topology
    topic = topo.kind("hazmat").topic
    sensor = next(s.sensor_id for s in topo.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS"))
    key = f"{sensor}:gas_lel_alarm"
    worker.env["CITYOPS_REDIS_URL"] = own_redis.url
    worker.start()
    t0 = time.time_ns() // 1_000_000 - 60_000

    def statuses(recs: list[bytes]) -> list[str]:
        return [a.status for a in map(Alert.from_json, recs) if a.alarm_key == key]

    async with reader_factory(topo.spec.topics.alerts) as reader:
        await produce(stack_cfg.bootstrap, topic, [_gas(sensor, 30.0, t0)])
        await reader.until(lambda recs: statuses(recs) == ["firing"], 60, "the first alarm", alive=worker)

        own_redis.kill()  # the live board goes away mid-stream
        wait_for(lambda: _health_status(worker) == 503, 10, "/healthz to report Redis down")
        await produce(stack_cfg.bootstrap, topic, [_gas(sensor, 60.0, t0 + 1000)])
        # the retried Redis step is the board's, or the alarm store's when the outage began
        # after the first batch's board write but before its (idempotent) alarm store write
        wait_for(lambda: _retries(worker, "RedisAlarmBoard") + _retries(worker, "AlarmStore") > 0, 30,
                 "the worker to retry the Redis write")
        await produce(stack_cfg.bootstrap, topic, [_gas(sensor, 1.0, t0 + 2000)])

        own_redis.start()  # same port: the worker's retries now succeed
        records = await reader.until(lambda recs: "resolved" in statuses(recs), 60, "the alarm to clear", alive=worker)
    assert statuses(records) == ["firing", "updated", "resolved"]  # each change exactly once
    worker.assert_alive()
    # Kafka has the resolution before Redis does (that is the delivery order): wait for the board
    board = redis.Redis.from_url(own_redis.url)
    wait_for(lambda: board.hget(f"cityops:{worker.env['CITYOPS_NAMESPACE']}:alarms:active", key) is None, 30,
             "the board to drop the resolved alarm")
