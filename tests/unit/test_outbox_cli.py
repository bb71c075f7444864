"""`cityops outbox status|dead|retry` against a private Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from sinks.outbox import Outbox, OutboxItem
from streams.cli import app
from tests.unit.test_outbox import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.unit.test_topology import REPO

NS = "clitest"


async def _one_dead_one_waiting(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushall()
        box = Outbox(client, NS, "duty_webhook")
        await box.enqueue([OutboxItem("n-1", b'{"a": 1}', ("alert:a1",)), OutboxItem("n-2", b"{}", ())])
        claimed = await box.claim(1, 60_000, 8)
        assert await box.bury(claimed[0], "HTTP 400: bad payload")
    finally:
        await client.aclose()


@pytest.fixture
def env(redis_server: RedisServer) -> dict[str, str]:
    asyncio.run(_one_dead_one_waiting(redis_server.url))
    return {"CITYOPS_REDIS_URL": redis_server.url, "CITYOPS_NAMESPACE": NS,
            "CITYOPS_TOPOLOGY": str(REPO / "topology.yaml")}


def test_status_dead_and_retry(env: dict[str, str]) -> None:
    runner = CliRunner()
    status = runner.invoke(app, ["outbox", "status"], env=env)
    assert status.exit_code == 0, status.output
    row = next(line for line in status.output.splitlines() if line.startswith("duty_webhook"))
    assert row.split()[1:3] == ["1", "1"]  # one waiting, one dead
    dead = runner.invoke(app, ["outbox", "dead", "duty_webhook"], env=env)
    assert dead.exit_code == 0 and "n-1  attempts 1  HTTP 400: bad payload" in dead.output
    retry = runner.invoke(app, ["outbox", "retry", "duty_webhook"], env=env)
    assert retry.exit_code == 0 and "1 dead letter(s) of duty_webhook queued again" in retry.output
    status = runner.invoke(app, ["outbox", "status"], env=env)
    row = next(line for line in status.output.splitlines() if line.startswith("duty_webhook"))
    assert row.split()[1:3] == ["2", "0"]


def test_an_unknown_receiver_names_the_valid_ones(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["outbox", "retry", "pager"], env=env)
    assert result.exit_code != 0
    assert "receiver 'pager' is not in" in str(result.exception) + result.output
