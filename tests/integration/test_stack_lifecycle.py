"""Real stack lifecycle on non-default ports in a temp dir: Kafka (KRaft, Maven jars) + Redis.

Needs Java 17+, Maven (unless jars can be copied from the checkout's .stack) and redis-server
(installed by up() with apt-get when missing).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams import stack
from streams.stack import StackConfig, procs

pytestmark = pytest.mark.integration

TOPIC = "it.stack.lifecycle"
CHECKOUT_LIB = Path(__file__).resolve().parents[2] / ".stack" / "kafka" / "lib"


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (kept bound together so they cannot repeat)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def cfg(tmp_path: Path) -> Iterator[StackConfig]:
    kafka, controller, redis_port = free_ports(3)
    c = StackConfig(root=tmp_path / "stack", kafka_port=kafka, controller_port=controller,
                    redis_port=redis_port)  # fmt: skip
    version = CHECKOUT_LIB / ".kafka-version"
    if version.exists() and version.read_text().strip() == c.kafka_version:
        shutil.copytree(CHECKOUT_LIB, c.root / "kafka" / "lib")  # skip the Maven fetch
    yield c
    stack.down(c, log=lambda _: None)  # also when the test failed half-way


async def produce_and_consume(bootstrap: str, value: bytes, timeout_s: float = 30.0) -> bytes:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, value)
    finally:
        await producer.stop()
    return await consume_first(bootstrap, timeout_s)


async def consume_first(bootstrap: str, timeout_s: float = 30.0) -> bytes:
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), timeout_s)
        assert msg.value is not None
        return bytes(msg.value)
    finally:
        await consumer.stop()


def test_up_status_produce_noop_down_restart(cfg: StackConfig) -> None:
    lines: list[str] = []
    started = time.monotonic()
    st = stack.up(cfg, [(TOPIC, 2)], timeout_s=180, log=lines.append)
    print(f"first up: {time.monotonic() - started:.1f}s", *lines, sep="\n")
    assert st.all_running, st
    assert stack.status(cfg).all_running
    assert (cfg.root / "kafka" / "kafka.pid").read_text().strip() == str(st.kafka.pid)

    assert asyncio.run(produce_and_consume(cfg.bootstrap, b"hello")) == b"hello"
    r = redis.Redis.from_url(cfg.redis_url)
    r.set("it:key", "kept")

    lines.clear()
    again = stack.up(cfg, [(TOPIC, 2)], log=lines.append)
    assert (again.kafka.pid, again.redis.pid) == (st.kafka.pid, st.redis.pid)  # a no-op
    assert any("kafka: already running" in line for line in lines)
    assert any("redis: already running" in line for line in lines)

    down = stack.down(cfg, log=lambda _: None)
    assert not down.kafka.running and not down.redis.running
    after = stack.status(cfg)
    assert (after.kafka.detail, after.redis.detail) == ("stopped", "stopped")
    assert not (cfg.root / "kafka" / "kafka.pid").exists()
    assert not (cfg.root / "redis" / "redis.pid").exists()
    assert not procs._pid_alive(st.kafka.pid or 0) and not procs._pid_alive(st.redis.pid or 0)

    # Data survives a restart: the Kafka log and Redis' append-only file.
    assert stack.up(cfg, [(TOPIC, 2)], log=lambda _: None).all_running
    assert asyncio.run(consume_first(cfg.bootstrap)) == b"hello"
    assert r.get("it:key") == b"kept"
    r.close()
