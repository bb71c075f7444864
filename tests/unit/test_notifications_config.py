"""topology.yaml `notifications`: validation with the path named, receiver URLs, and
what build_notifier makes of the shipped topology."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from sinks.alarm_store import AlarmStore
from sinks.cap_sink import CapSink
from sinks.redis_board import RedisAlarmBoard
from sinks.webhook import WebhookSink
from streams.errors import ConfigError
from streams.notifications import build_notifier, receiver_headers, receiver_url
from streams.topology import load_topology
from streams.topology_spec import ReceiverSpec, Severity
from tests.unit.test_topology import BASE, REPO, _error


def _receivers(data: dict[str, Any]) -> list[dict[str, Any]]:
    return list(data["notifications"]["receivers"])


@pytest.mark.parametrize(("change", "expected"), [
    (lambda r: r[0].pop("cap"), "notifications.receivers[0]: Value error, a cap receiver needs `cap:"),
    (lambda r: r[1].update(url="http://x/hook"), "give exactly one of `url: <http(s) URL>` or `url_env"),
    (lambda r: r[1].update(url_env=None, url="ftp://x"), "url: 'ftp://x' must start with http:// or https://"),
    (lambda r: r[0].update(repeat=True), "repeat is for webhook receivers"),
    (lambda r: r[0].update(departments=["police"]), "notifications.receivers[0].departments[0]: unknown department 'police'"),
    (lambda r: r[1].update(name="emergency_cap"), "notifications.receivers[1].name: duplicate receiver name"),
    (lambda r: r[1].update(type="sms"), "notifications.receivers[1].type"),
])
def test_a_bad_receiver_is_reported_at_its_path(tmp_path: Path, change: Any, expected: str) -> None:
    data = copy.deepcopy(BASE)
    change(_receivers(data))
    assert expected in _error(tmp_path, data)


def test_an_inhibition_rule_must_compare_a_sensor_or_a_site(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["notifications"]["inhibit"][0]["equal"] = ["district"]
    assert "notifications.inhibit[0].equal" in _error(tmp_path, data)


def test_an_inhibition_rule_naming_an_unknown_rule_lists_the_rules(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["notifications"]["inhibit"][0]["source"] = {"rule": ["gas_lel_alarn"]}
    assert "notifications.inhibit[0].source.rule[0]: unknown rule 'gas_lel_alarn'; valid: [" in _error(tmp_path, data)


def test_receiver_urls_come_from_the_environment_or_the_file() -> None:
    by_env = ReceiverSpec(name="hook", type="webhook", url_env="HOOK_URL")
    assert receiver_url(by_env, {}) is None
    assert receiver_url(by_env, {"HOOK_URL": " "}) is None
    assert receiver_url(by_env, {"HOOK_URL": "https://bridge.example/h"}) == "https://bridge.example/h"
    with pytest.raises(ConfigError, match="HOOK_URL='bridge:80' \\(receiver hook\\) must be an http"):
        receiver_url(by_env, {"HOOK_URL": "bridge:80"})
    assert receiver_url(ReceiverSpec(name="h", type="webhook", url="http://a/b"), {}) == "http://a/b"


async def test_the_shipped_topology_builds_its_receivers_and_rules() -> None:
    topology = load_topology(REPO / "topology.yaml")
    client = aioredis.Redis()  # not connected: nothing here talks to Redis
    board, store = RedisAlarmBoard(client, "t"), AlarmStore(client, "t")
    off = build_notifier(topology, client, "t", board, store, env={})
    assert off.routes == [] and len(off.rules) == 2
    on = build_notifier(topology, client, "t", board, store,
                        env={"CITYOPS_CAP_URL": "http://127.0.0.1:1/cap", "CITYOPS_WEBHOOK_URL": "http://127.0.0.1:1/h"})
    cap, hook = on.routes
    assert isinstance(cap.sink, CapSink) and cap.departments == frozenset({"emergency", "fire"})
    assert cap.min_severity is Severity.MINOR and not cap.repeat
    assert isinstance(hook.sink, WebhookSink) and hook.departments is None and hook.repeat
    assert on.categories["no_signal_hazmat"] == "offline" and on.categories["gas_lel_alarm"] == "value"
    await client.aclose()


def test_receiver_headers_come_from_the_environment_and_a_missing_one_is_an_error() -> None:
    spec = ReceiverSpec(name="cap", type="webhook", url="https://platform.example/cap",
                        headers_env={"Authorization": "CAP_AUTH"})
    assert receiver_headers(spec, {"CAP_AUTH": "Bearer s3cret"}) == {"Authorization": "Bearer s3cret"}
    with pytest.raises(ConfigError, match="CAP_AUTH is not set: receiver cap sends it as its Authorization header"):
        receiver_headers(spec, {})
    with pytest.raises(ConfigError, match="must be one line"):
        receiver_headers(spec, {"CAP_AUTH": "Bearer x\r\nX-Evil: 1"})


async def test_a_cap_receiver_posts_its_headers_and_the_cap_content_type(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["catalog"] = str(REPO / "catalog" / "dongguan_sensors.csv")
    data["notifications"]["receivers"][0]["headers_env"] = {"Authorization": "CAP_AUTH"}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    topology = load_topology(tmp_path / "t.yaml")
    client = aioredis.Redis()  # not connected
    env = {"CITYOPS_CAP_URL": "http://127.0.0.1:1/cap", "CAP_AUTH": "Bearer s3cret"}
    notifier = build_notifier(topology, client, "t", RedisAlarmBoard(client, "t"), AlarmStore(client, "t"), env=env)
    sink = notifier.routes[0].sink
    assert isinstance(sink, CapSink) and sink.deliverer is not None
    assert sink.deliverer.headers["Authorization"] == "Bearer s3cret"
    assert sink.deliverer.headers["Content-Type"] == "application/cap+xml"
    await client.aclose()
