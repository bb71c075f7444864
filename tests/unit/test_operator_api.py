"""streams.operator_api over real HTTP (aiohttp's TestServer on 127.0.0.1) and a
real redis-server (the private one of tests/unit/test_outbox.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from sinks.alarm_store import AlarmStore
from sinks.silences import SilenceStore
from streams.errors import ConfigError
from streams.operator_api import create_operator_app, operator_tokens_from_env, parse_operator_tokens
from tests.unit.test_alarm_store import KEY, alert, episode
from tests.unit.test_outbox import T0, FakeClock, client, redis_server  # noqa: F401  (fixtures)

TOKENS = {"tok-alice-0123456789": "alice", "tok-bob-9876543210": "bob"}
ALICE = {"Authorization": "Bearer tok-alice-0123456789"}
BOB = {"Authorization": "Bearer tok-bob-9876543210"}
HOUR = 3600 * 1000
A = "/api/v1"


class Api:
    def __init__(self, http: TestClient[Any, Any], store: AlarmStore, clock: FakeClock) -> None:
        self.http, self.store, self.clock = http, store, clock

    async def call(self, method: str, path: str, *, who: dict[str, str] | None = None, **kwargs: Any) -> Any:
        """(status, JSON body) of one request, as alice unless told otherwise."""
        response: ClientResponse = await self.http.request(method, A + path, headers=ALICE if who is None else who,
                                                           **kwargs)
        async with response:
            assert response.content_type == "application/json", (response.status, await response.text())
            return response.status, await response.json()


@pytest.fixture
async def api(client: aioredis.Redis) -> AsyncIterator[Api]:  # noqa: F811
    clock = FakeClock(T0)
    store = AlarmStore(client, "t", clock_ms=clock)
    app = create_operator_app(store, SilenceStore(client, "t", clock_ms=clock), TOKENS, clock_ms=clock)
    http: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await http.start_server()
    try:
        yield Api(http, store, clock)
    finally:
        await http.close()


async def fire(api: Api) -> None:
    """Three active alarms: hazmat critical in Songshan Lake, hazmat minor there, air warning in Nancheng."""
    await api.store.apply(episode()[:2])
    await api.store.apply([alert(1000, "firing", "minor", 30.0, sensor="DG-GAS-0002")])
    await api.store.apply([alert(1000, "firing", "warning", 12.0, sensor="DG-AIR-0001", rule="pm25_high",
                                 kind="air", district="Nancheng")])


# ---- auth --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dG9rOnRvaw==", "tok-alice-0123456789"])
async def test_no_bearer_token_is_401_with_a_challenge(api: Api, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = await api.http.get(f"{A}/alarms", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "token" in (await response.json())["error"]


@pytest.mark.parametrize("token", ["wrong", "tok-alice-012345678", "tok-alice-0123456789x", "TOK-ALICE-0123456789",
                                   "tok-alice-0123456789 tok-bob-9876543210", "alice", "tok-alice-01234567é9"])
async def test_a_wrong_token_is_403(api: Api, token: str) -> None:
    status, body = await api.call("GET", "/alarms", who={"Authorization": f"Bearer {token}"})
    assert status == 403 and "token" in body["error"]


@pytest.mark.parametrize("header", ["Bearer tok-bob-9876543210", "bearer tok-bob-9876543210",
                                    "BEARER   tok-bob-9876543210  ", " Bearer tok-bob-9876543210"])
async def test_the_scheme_and_spacing_do_not_change_who_is_recognised(api: Api, header: str) -> None:
    await fire(api)
    status, alarm = await api.call("POST", f"/alarms/{KEY}/ack", who={"Authorization": header})
    assert status == 200 and alarm["acked_by"] == "bob"


async def test_every_route_needs_a_token(api: Api) -> None:
    for method, path in [("GET", "/alarms"), ("GET", f"/alarms/{KEY}"), ("POST", f"/alarms/{KEY}/ack"),
                         ("POST", f"/alarms/{KEY}/comment"), ("POST", f"/alarms/{KEY}/clear"), ("GET", "/silences"),
                         ("POST", "/silences"), ("GET", "/silences/x"), ("DELETE", "/silences/x"),
                         ("GET", "/audit"), ("GET", "/nowhere")]:
        assert (await api.call(method, path, who={}))[0] == 401, (method, path)
    assert await api.store.audit() == []


def test_tokens_parse_from_the_environment() -> None:
    assert parse_operator_tokens(" alice:tok1 , bob:t:o:k2") == {"tok1": "alice", "t:o:k2": "bob"}
    assert operator_tokens_from_env({"CITYOPS_OPERATOR_TOKENS": "alice:tok1"}) == {"tok1": "alice"}
    assert operator_tokens_from_env({"CITYOPS_OPERATOR_TOKENS": " "}) == {}
    assert operator_tokens_from_env({}) == {}
    for bad, words in [("alice", r"\[0\].*'operator:token'"), ("alice:tok1,,bob:tok2", r"\[1\].*empty"),
                       (":tok1", r"\[0\]"), ("alice:", r"\[0\]"), ("alice:t,bob:t", r"\[1\].*bob's token")]:
        with pytest.raises(ConfigError, match=words):
            parse_operator_tokens(bad)


async def test_an_app_without_tokens_is_refused(client: aioredis.Redis) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="CITYOPS_OPERATOR_TOKENS"):
        create_operator_app(AlarmStore(client, "t"), SilenceStore(client, "t"), {})


# ---- alarms ------------------------------------------------------------------------------------------------------

async def test_list_and_filter_alarms(api: Api) -> None:
    await fire(api)

    async def keys(query: str) -> list[str]:
        status, body = await api.call("GET", f"/alarms{query}")
        assert status == 200, body
        return [a["alarm_key"] for a in body["alarms"]]

    gas1, gas2, air = KEY, "DG-GAS-0002:gas_lel_high", "DG-AIR-0001:pm25_high"
    assert sorted(await keys("")) == sorted([gas1, gas2, air])
    assert sorted(await keys("?kind=hazmat")) == sorted([gas1, gas2])
    assert await keys("?severity_at_least=major") == [gas1]
    assert await keys("?district=Nancheng") == [air]
    assert sorted(await keys("?state=ACTIVE_UNACK&severity_at_least=minor")) == sorted([gas1, gas2])
    assert await keys("?state=CLEARED_UNACK") == []
    assert len(await keys("?limit=2")) == 2


@pytest.mark.parametrize(("query", "field"), [
    ("state=active", "state"), ("severity_at_least=high", "severity_at_least"), ("limit=0", "limit"),
    ("limit=1001", "limit"), ("limit=ten", "limit"), ("limit=-1", "limit"), ("kind=", "kind"),
    ("severity=major", "severity"), ("kind=air&kind=hazmat", "kind"),
])
async def test_bad_alarm_filters_are_400_naming_the_parameter(api: Api, query: str, field: str) -> None:
    status, body = await api.call("GET", f"/alarms?{query}")
    assert (status, body["field"]) == (400, field), body
    assert field in body["error"]


async def test_get_one_alarm_and_404(api: Api) -> None:
    await fire(api)
    status, alarm = await api.call("GET", f"/alarms/{KEY}")
    assert (status, alarm["alarm_key"], alarm["severity"], alarm["silenced_by"]) == (200, KEY, "critical", [])
    status, body = await api.call("GET", "/alarms/NOPE:rule")
    assert status == 404 and "NOPE:rule" in body["error"]


async def test_ack_comment_clear_are_audited_with_the_operator(api: Api) -> None:
    await fire(api)
    api.clock.now_ms = T0 + 1
    status, alarm = await api.call("POST", f"/alarms/{KEY}/ack")
    assert (status, alarm["state"], alarm["acked_by"], alarm["acked_at_ms"]) == (200, "ACTIVE_ACK", "alice", T0 + 1)
    api.clock.now_ms = T0 + 2
    status, alarm = await api.call("POST", f"/alarms/{KEY}/comment", json={"text": "crew on site"}, who=BOB)
    assert status == 200 and alarm["comments"] == [{"who": "bob", "at_ms": T0 + 2, "text": "crew on site"}]
    api.clock.now_ms = T0 + 3
    status, alarm = await api.call("POST", f"/alarms/{KEY}/clear", json={"reason": "valve closed"})
    assert (status, alarm["state"], alarm["clear_reason"], alarm["clear_note"]) == (
        200, "CLEARED_ACK", "operator: alice", "valve closed")
    status, body = await api.call("GET", "/audit")
    assert status == 200
    assert [(e["at_ms"], e["who"], e["what"], e["alarm_key"], e["state_after"], e["text"]) for e in body["entries"]] == [
        (T0 + 1, "alice", "acknowledge", KEY, "ACTIVE_ACK", ""),
        (T0 + 2, "bob", "comment", KEY, "ACTIVE_ACK", "crew on site"),
        (T0 + 3, "alice", "clear", KEY, "CLEARED_ACK", "valve closed"),
    ]
    status, body = await api.call("GET", "/audit?limit=1")
    assert [e["what"] for e in body["entries"]] == ["clear"]


async def test_actions_the_state_forbids_are_409(api: Api) -> None:
    await fire(api)
    assert (await api.call("POST", f"/alarms/{KEY}/ack"))[0] == 200
    status, body = await api.call("POST", f"/alarms/{KEY}/ack", who=BOB)
    assert status == 409 and "ACTIVE_ACK" in body["error"]
    assert (await api.call("POST", f"/alarms/{KEY}/clear", json={"reason": "done"}))[0] == 200
    status, body = await api.call("POST", f"/alarms/{KEY}/clear", json={"reason": "again"})
    assert status == 409 and "CLEARED_ACK" in body["error"]
    assert [e.what for e in await api.store.audit()] == ["acknowledge", "clear"]


async def test_actions_on_an_unknown_alarm_are_404(api: Api) -> None:
    for path, body in [("ack", None), ("comment", {"text": "x"}), ("clear", {"reason": "x"})]:
        status, reply = await api.call("POST", f"/alarms/NOPE:rule/{path}", json=body)
        assert status == 404 and "no such alarm" in reply["error"], (path, reply)


@pytest.mark.parametrize(("path", "body", "status", "field"), [
    ("comment", {}, 422, "text"),
    ("comment", {"text": ""}, 422, "text"),
    ("comment", {"text": 5}, 422, "text"),
    ("comment", {"text": "x" * 4097}, 422, "text"),
    ("comment", {"text": "x", "who": "mallory"}, 422, "who"),
    ("comment", {"text": "   "}, 422, None),  # the store's own check (text.strip())
    ("clear", {}, 422, "reason"),
    ("clear", ["valve closed"], 422, "body"),
    ("ack", {"by": "mallory"}, 422, "by"),
    ("comment", b"{not json", 400, "body"),
])
async def test_bad_bodies_are_refused_naming_the_field(api: Api, path: str, body: Any, status: int,
                                                       field: str | None) -> None:
    await fire(api)
    sent = {"data": body} if isinstance(body, bytes) else {"json": body}
    got, reply = await api.call("POST", f"/alarms/{KEY}/{path}", **sent)
    assert (got, reply["field"]) == (status, field), reply
    assert await api.store.audit() == []


# ---- silences ----------------------------------------------------------------------------------------------------

async def test_silence_create_list_expire(api: Api) -> None:
    await fire(api)
    new = {"matchers": [{"name": "kind", "value": "hazmat"}, {"name": "severity", "value": "critical|major",
                                                              "is_regex": True}],
           "ends_at_ms": T0 + HOUR, "comment": "planned purge"}
    status, made = await api.call("POST", "/silences", json=new, who=BOB)
    assert status == 201, made
    assert (made["created_by"], made["starts_at_ms"], made["state"]) == ("bob", T0, "active")
    assert (await api.call("GET", f"/alarms/{KEY}"))[1]["silenced_by"] == [made["id"]]
    silenced = {a["alarm_key"]: a["silenced_by"] for a in (await api.call("GET", "/alarms"))[1]["alarms"]}
    assert silenced == {KEY: [made["id"]], "DG-GAS-0002:gas_lel_high": [], "DG-AIR-0001:pm25_high": []}
    assert [s["id"] for s in (await api.call("GET", "/silences?state=active"))[1]["silences"]] == [made["id"]]
    assert (await api.call("GET", f"/silences/{made['id']}"))[1] == made

    api.clock.now_ms = T0 + 7
    status, gone = await api.call("DELETE", f"/silences/{made['id']}")
    assert (status, gone["state"], gone["ends_at_ms"], gone["expired_by"]) == (200, "expired", T0 + 7, "alice")
    assert (await api.call("GET", "/silences?state=active"))[1]["silences"] == []
    assert [s["id"] for s in (await api.call("GET", "/silences?state=expired"))[1]["silences"]] == [made["id"]]
    assert (await api.call("GET", f"/alarms/{KEY}"))[1]["silenced_by"] == []
    assert (await api.call("DELETE", f"/silences/{made['id']}"))[0] == 409
    assert (await api.call("DELETE", "/silences/nope"))[0] == 404
    assert (await api.call("GET", "/silences/nope"))[0] == 404

    entries = (await api.call("GET", "/audit"))[1]["entries"]
    assert [(e["who"], e["what"], e["silence_id"], e["at_ms"]) for e in entries] == [
        ("bob", "silence_create", made["id"], T0), ("alice", "silence_expire", made["id"], T0 + 7)]


async def test_a_pending_silence(api: Api) -> None:
    new = {"matchers": [{"name": "site_id", "value": "SITE-A"}], "starts_at_ms": T0 + HOUR,
           "ends_at_ms": T0 + 2 * HOUR, "comment": "tomorrow's works"}
    status, made = await api.call("POST", "/silences", json=new)
    assert (status, made["state"]) == (201, "pending")
    assert [s["id"] for s in (await api.call("GET", "/silences?state=pending"))[1]["silences"]] == [made["id"]]


@pytest.mark.parametrize(("change", "field"), [
    ({"matchers": []}, "matchers"),
    ({"matchers": [{"name": "sensor", "value": "x"}]}, "matchers[0].name"),
    ({"matchers": [{"name": "rule", "value": "(", "is_regex": True}]}, "matchers[0].value"),
    ({"matchers": [{"name": "rule", "value": "x", "regex": True}]}, "matchers[0].regex"),
    ({"matchers": [{"value": "x"}]}, "matchers[0].name"),
    ({"ends_at_ms": T0 - 1}, "ends_at_ms"),
    ({"ends_at_ms": "tomorrow"}, "ends_at_ms"),
    ({"starts_at_ms": T0 + 2 * HOUR}, "ends_at_ms"),
    ({"comment": ""}, "comment"),
    ({"created_by": "mallory"}, "created_by"),
])
async def test_bad_silences_are_422_naming_the_field(api: Api, change: dict[str, Any], field: str) -> None:
    new = {"matchers": [{"name": "site_id", "value": "SITE-A"}], "ends_at_ms": T0 + HOUR, "comment": "why"} | change
    status, body = await api.call("POST", "/silences", json=new)
    assert (status, body["field"]) == (422, field), body
    assert (await api.call("GET", "/silences"))[1]["silences"] == []
    assert (await api.call("GET", "/audit"))[1]["entries"] == []


async def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    assert (await api.call("GET", "/nowhere"))[0] == 404
    assert (await api.call("PUT", "/alarms"))[0] == 405
