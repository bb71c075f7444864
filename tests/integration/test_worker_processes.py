"""`cityops worker --processes 2`: two processes of one node share the partitions, both
raise alarms, stop together on SIGTERM, and a child that dies takes the node down.
`cityops worker --isolate hazmat`: hazmat in a process of its own, the other kinds in
another, each raising its own kinds' alarms."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from sinks.base import Alert
from streams.stack import StackConfig
from streams.topology import Topology
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _two_free_ports() -> int:
    """A port p with p and p + 1 both free (the children serve p and p + 1)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            try:
                with socket.socket() as b:
                    b.bind(("127.0.0.1", port + 1))
                    return port
            except OSError:
                continue
    raise AssertionError("no two consecutive free ports")


def _healthz(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return dict(json.loads(resp.read()))
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


Node = tuple[subprocess.Popen[bytes], int, Path]


@pytest.fixture
def node(isolated_topology: Topology, stack_cfg: StackConfig, tmp_path: Path) -> Iterator[Node]:
    yield from _start_node(isolated_topology, stack_cfg, tmp_path, ["--processes", "2"])


@pytest.fixture
def isolated_node(isolated_topology: Topology, stack_cfg: StackConfig, tmp_path: Path) -> Iterator[Node]:
    yield from _start_node(isolated_topology, stack_cfg, tmp_path, ["--isolate", "hazmat"])


def _start_node(isolated_topology: Topology, stack_cfg: StackConfig, tmp_path: Path, args: list[str]) -> Iterator[Node]:
    port = _two_free_ports()
    suffix = isolated_topology.kind("hazmat").topic.rsplit(".", 1)[-1]
    env = {**os.environ, "CITYOPS_BOOTSTRAP": stack_cfg.bootstrap, "CITYOPS_REDIS_URL": stack_cfg.redis_url,
           "CITYOPS_APP_ID": f"cityops-procs-{suffix}", "CITYOPS_NAMESPACE": f"procs-{suffix}",
           "CITYOPS_WEB_PORT": str(port), "CITYOPS_DATA_DIR": str(tmp_path / "data")}
    log_path = tmp_path / "node.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("cityops")), "worker", *args,
             "--topology", str(isolated_topology.path)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    try:
        yield proc, port, log_path
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _split(port: int, kind: str, n_partitions: int) -> bool:
    a, b = _healthz(port), _healthz(port + 1)
    if a is None or b is None:
        return False
    pa, pb = set(a["partitions"][kind]), set(b["partitions"][kind])
    return bool(pa) and bool(pb) and not pa & pb and len(pa | pb) == n_partitions


async def test_two_processes_share_the_partitions_and_both_raise_alarms(
    node: tuple[subprocess.Popen[bytes], int, Path], isolated_topology: Topology, stack_cfg: StackConfig,
    reader_factory: Any,
) -> None:
    proc, port, log_path = node
    topo = isolated_topology
    n = topo.spec.topics.partitions
    wait_for(lambda: proc.poll() is None and _split(port, "hazmat", n), 90,
             f"both processes healthy with the hazmat partitions split (log {log_path})")
    assert proc.poll() is None, log_path.read_text()[-3000:]
    topic = topo.kind("hazmat").topic
    gas = [s.sensor_id for s in topo.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS")]
    now = time.time_ns() // 1_000_000
    producer = AIOKafkaProducer(bootstrap_servers=stack_cfg.bootstrap, acks="all")
    await producer.start()
    try:
        landed: dict[int, str] = {}
        for sensor in gas:  # one sensor per partition, so each process has one to alarm on
            body = json.dumps({"sensor_id": sensor, "ts": now - 5000, "values": {"gas_lel": 1.0}}).encode()
            meta = await (await producer.send(topic, value=body, key=sensor.encode()))
            landed.setdefault(meta.partition, sensor)
        assert len(landed) == n
        for sensor in landed.values():
            body = json.dumps({"sensor_id": sensor, "ts": now, "values": {"gas_lel": 40.0}}).encode()
            await producer.send_and_wait(topic, value=body, key=sensor.encode())
    finally:
        await producer.stop()
    async with reader_factory(topo.spec.topics.alerts) as reader:
        keys = {f"{s}:gas_lel_alarm" for s in landed.values()}
        await reader.until(lambda recs: keys <= {a.alarm_key for a in map(Alert.from_json, recs) if a.status == "firing"},
                           60, "a firing gas alarm from each partition")

    def readings(p: int) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=2) as resp:
            return sum(float(line.rsplit(" ", 1)[1]) for line in resp.read().decode().splitlines()
                       if line.startswith('cityops_readings_total{kind="hazmat"}'))

    wait_for(lambda: readings(port) > 0 and readings(port + 1) > 0, 10, "both processes counting hazmat readings")
    children = _children(proc.pid)
    assert len(children) == 2
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0, log_path.read_text()[-3000:]
    assert all(not Path(f"/proc/{c}").exists() for c in children)


def test_a_child_that_dies_takes_the_node_down(node: tuple[subprocess.Popen[bytes], int, Path],
                                               isolated_topology: Topology) -> None:
    proc, port, log_path = node
    wait_for(lambda: proc.poll() is None and _healthz(port) is not None and _healthz(port + 1) is not None, 90,
             f"both processes healthy (log {log_path})")
    children = _children(proc.pid)
    assert len(children) == 2
    os.kill(children[0], signal.SIGKILL)
    assert proc.wait(60) != 0  # the node's supervisor sees a failure and restarts it
    wait_for(lambda: not Path(f"/proc/{children[1]}").exists() or Path(f"/proc/{children[1]}/stat").read_text().split()[2] == "Z",
             30, "the other child stopped")


def _readings(port: int, kind: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        return sum(float(line.rsplit(" ", 1)[1]) for line in resp.read().decode().splitlines()
                   if line.startswith(f'cityops_readings_total{{kind="{kind}"}}'))


async def test_isolated_hazmat_has_a_process_of_its_own(
    isolated_node: Node, isolated_topology: Topology, stack_cfg: StackConfig, reader_factory: Any,
) -> None:
    proc, port, log_path = isolated_node
    topo = isolated_topology
    n = topo.spec.topics.partitions
    others = sorted(k for k in topo.spec.kinds if k != "hazmat")

    def ready() -> bool:
        a, b = _healthz(port), _healthz(port + 1)
        return (proc.poll() is None and a is not None and b is not None and len(a["partitions"]["hazmat"]) == n
                and all(len(b["partitions"][k]) == n for k in others))

    wait_for(ready, 90, f"the hazmat process owning every hazmat partition, the other every other one (log {log_path})")
    assert _healthz(port)["kinds"] == ["hazmat"]  # type: ignore[index]
    assert _healthz(port + 1)["kinds"] == others  # type: ignore[index]
    gas = next(s.sensor_id for s in topo.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS"))
    station = topo.catalog.by_kind("air")[0].sensor_id
    now = time.time_ns() // 1_000_000
    producer = AIOKafkaProducer(bootstrap_servers=stack_cfg.bootstrap, acks="all")
    await producer.start()
    try:
        for lel, ts in ((1.0, now - 5000), (40.0, now)):
            body = json.dumps({"sensor_id": gas, "ts": ts, "values": {"gas_lel": lel}}).encode()
            await producer.send_and_wait(topo.kind("hazmat").topic, value=body, key=gas.encode())
        body = json.dumps({"sensor_id": station, "ts": now, "values": {"pm25": 20.0}}).encode()
        await producer.send_and_wait(topo.kind("air").topic, value=body, key=station.encode())
    finally:
        await producer.stop()
    async with reader_factory(topo.spec.topics.alerts) as reader:
        await reader.until(lambda recs: any(a.alarm_key == f"{gas}:gas_lel_alarm" and a.status == "firing"
                                            for a in map(Alert.from_json, recs)), 60, "the firing gas alarm")
    wait_for(lambda: _readings(port, "hazmat") == 2 and _readings(port + 1, "air") == 1, 10,
             "hazmat counted by the hazmat process, air by the other")
    assert _readings(port + 1, "hazmat") == 0 and _readings(port, "air") == 0
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0, log_path.read_text()[-3000:]
