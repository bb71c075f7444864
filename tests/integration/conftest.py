"""Integration fixtures: the real local stack (Kafka KRaft + Redis), a real
worker process per test on its own topics, consumer group and Redis namespace.

The stack must be running (`make test` starts it). If it is not, tests fail
rather than skip: a skipped integration test would hide a broken setup.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams import stack
from streams.topology import Topology, load_topology

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stack_cfg() -> stack.StackConfig:
    cfg = stack.StackConfig.from_env(root=REPO / ".stack")
    status = stack.status(cfg)
    if not status.all_running:
        pytest.fail(f"the local stack is not running ({status}); run `make test` or `cityops stack up`")
    return cfg


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def isolated_topology(tmp_path: Path, stack_cfg: stack.StackConfig) -> Topology:
    """topology.yaml with this test's own topic names, so tests never see each other's data."""
    suffix = uuid.uuid4().hex[:8]
    data = yaml.safe_load((REPO / "topology.yaml").read_text())
    data["catalog"] = str(REPO / "catalog" / "dongguan_sensors.csv")
    for kind in data["kinds"].values():
        kind["topic"] = f"{kind['topic']}.{suffix}"
        kind["batch"]["budget_ms"] = min(kind["batch"]["budget_ms"], 200)
    data["topics"] = {**data.get("topics", {}), "alerts": f"city.alerts.{suffix}", "deadletter": f"city.deadletter.{suffix}", "partitions": 2}
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    topo = load_topology(path)
    stack.ensure_topics(stack_cfg.bootstrap, topo.all_topics())
    return topo


@dataclass
class WorkerProcess:
    """A real `cityops worker` child process."""

    topology: Topology
    env: dict[str, str]
    log_path: Path
    web_port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline_s: float = 60.0) -> None:
        cityops = str(Path(sys.executable).with_name("cityops"))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [cityops, "worker", "--topology", str(self.topology.path), "--loglevel", "info"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO, start_new_session=True,
        )
        wait_for(self._healthy, deadline_s, f"worker healthy on :{self.web_port} (log {self.log_path})")

    def assert_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")

    def _healthy(self) -> bool:
        self.assert_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())

    def partitions(self, kind: str) -> set[int]:
        """The partitions of ``kind``'s topic this worker's consumer owns (its /healthz)."""
        self.assert_alive()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/healthz", timeout=2) as resp:
            return set(json.loads(resp.read())["partitions"].get(kind, []))


@pytest.fixture
def worker(isolated_topology: Topology, stack_cfg: stack.StackConfig, tmp_path: Path) -> Iterator[WorkerProcess]:
    suffix = uuid.uuid4().hex[:8]
    port = free_port()
    env = {
        **os.environ,
        "CITYOPS_BOOTSTRAP": stack_cfg.bootstrap,
        "CITYOPS_REDIS_URL": stack_cfg.redis_url,
        "CITYOPS_APP_ID": f"cityops-test-{suffix}",
        "CITYOPS_NAMESPACE": f"test-{suffix}",
        "CITYOPS_WEB_PORT": str(port),
        "CITYOPS_DATA_DIR": str(tmp_path / "worker-data"),
    }
    proc = WorkerProcess(isolated_topology, env, tmp_path / "worker.log", port)
    yield proc
    proc.stop()


def wait_for(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


class TopicReader:
    """Reads a topic from the beginning; `until` waits for a condition on everything read so far."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: list[bytes] = []
        self._consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(
        self, condition: Callable[[list[bytes]], bool], deadline_s: float, what: str, *, alive: WorkerProcess | None = None
    ) -> list[bytes]:
        """Read until `condition(records)`; fail at the deadline, or at once if `alive` died."""
        end = time.monotonic() + deadline_s
        while not condition(self.records):
            if alive is not None and alive.proc is not None:
                alive.assert_alive()
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}; got {len(self.records)} records")
            batch = await self._consumer.getmany(timeout_ms=200)
            self.records.extend(r.value for recs in batch.values() for r in recs if r.value is not None)
        return self.records


@pytest.fixture
async def reader_factory(stack_cfg: stack.StackConfig) -> AsyncIterator[Callable[[str], TopicReader]]:
    readers: list[TopicReader] = []

    def make(topic: str) -> TopicReader:
        reader = TopicReader(stack_cfg.bootstrap, topic)
        readers.append(reader)
        return reader

    yield make
    await asyncio.gather(*(r.__aexit__() for r in readers), return_exceptions=True)
