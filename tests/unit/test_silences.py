"""sinks.silences against a real redis-server (the private one of tests/unit/test_outbox.py).

Expectations come from Alertmanager's silence semantics as the module docstring
states them: a [start, end) window, every matcher must match, anchored regexes,
a missing label is "", expiring ends it now, every create/expire is audited."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from sinks.alarm_store import AlarmStore
from sinks.silences import (
    Matcher,
    Silence,
    SilenceNotFound,
    SilenceStateError,
    SilenceStore,
    SilenceValidationError,
    matches,
    read_audit,
)
from tests.unit.test_alarm_store import KEY, episode
from tests.unit.test_outbox import T0, FakeClock, RedisServer, client, redis_server  # noqa: F401  (fixtures)

HOUR = 3600 * 1000
SITE_A = Matcher(name="site_id", value="SITE-A")
LABELS = {"alarm_key": KEY, "rule": "gas_lel_high", "kind": "hazmat", "sensor_id": "DG-GAS-0001",
          "site_id": "SITE-A", "district": "Songshan Lake", "severity": "major"}


def silences(conn: aioredis.Redis, clock: FakeClock | None = None, **kwargs: Any) -> SilenceStore:
    return SilenceStore(conn, "t", clock_ms=clock or FakeClock(T0), **kwargs)


async def create(s: SilenceStore, *matchers: Matcher, starts: int = T0, ends: int = T0 + HOUR,
                 at: int = T0) -> Silence:
    return await s.create(list(matchers) or [SITE_A], starts_at_ms=starts, ends_at_ms=ends, created_by="alice",
                          comment="maintenance", at_ms=at)


def silence(*matchers: Matcher, starts: int = 0, ends: int = 10) -> Silence:
    return Silence(id="s", matchers=matchers, starts_at_ms=starts, ends_at_ms=ends, created_by="a", comment="c",
                   created_at_ms=0, updated_at_ms=0)


async def raw_audit(conn: aioredis.Redis) -> list[dict[str, Any]]:
    return [msgspec.json.decode(e) for e in await conn.lrange("cityops:t:audit", 0, -1)]


# ---- store -------------------------------------------------------------------------------------------------------

async def test_create_then_get_and_list_round_trip(client: aioredis.Redis) -> None:
    s = silences(client)
    made = await create(s, SITE_A, Matcher(name="rule", value="gas_.*", is_regex=True))
    assert await s.get(made.id) == made
    assert await s.list() == [made]
    assert made.created_by == "alice" and made.comment == "maintenance"
    assert (made.starts_at_ms, made.ends_at_ms, made.state(T0)) == (T0, T0 + HOUR, "active")
    assert await s.get("nope") is None


async def test_create_and_expire_are_audited_in_the_alarm_store_trail(client: aioredis.Redis) -> None:
    alarms, s = AlarmStore(client, "t", clock_ms=FakeClock(T0)), silences(client)
    await alarms.apply(episode()[:1])
    await alarms.acknowledge(KEY, "bob", T0)
    made = await create(s, SITE_A, at=T0 + 1)
    await s.expire(made.id, "carol", T0 + 2)
    entries = await raw_audit(client)
    assert [(e["what"], e["who"], e["at_ms"]) for e in entries] == [
        ("acknowledge", "bob", T0), ("silence_create", "alice", T0 + 1), ("silence_expire", "carol", T0 + 2)]
    assert set(entries[1]) == set(entries[0]) | {"silence_id"}  # the alarm store's shape, plus the silence id
    assert entries[1] | {"text": ""} == {
        "at_ms": T0 + 1, "who": "alice", "what": "silence_create", "alarm_key": "", "alarm_id": "",
        "state_before": "", "state_after": "active", "text": "", "silence_id": made.id}
    assert entries[1]["text"] == '{site_id="SITE-A"} maintenance'
    assert (entries[2]["state_before"], entries[2]["state_after"]) == ("active", "expired")
    read = await read_audit(client, "cityops:t:audit")
    assert [(r.what, r.silence_id) for r in read] == [
        ("acknowledge", None), ("silence_create", made.id), ("silence_expire", made.id)]
    # the alarm store reads the shared trail too (it used to reject silence entries)
    mine = await alarms.audit()
    assert [(e.what, e.who, e.silence_id) for e in mine] == [
        ("acknowledge", "bob", ""), ("silence_create", "alice", made.id), ("silence_expire", "carol", made.id)]


async def test_expire_ends_an_active_silence_now(client: aioredis.Redis) -> None:
    s = silences(client)
    made = await create(s)
    expired = await s.expire(made.id, "bob", T0 + 5)
    assert (expired.starts_at_ms, expired.ends_at_ms, expired.expired_by) == (T0, T0 + 5, "bob")
    assert expired.state(T0 + 5) == "expired" and expired.is_active(T0 + 4)
    assert await s.get(made.id) == expired
    with pytest.raises(SilenceStateError, match="already expired"):
        await s.expire(made.id, "bob", T0 + 6)
    with pytest.raises(SilenceNotFound):
        await s.expire("no-such-id", "bob", T0)
    assert [e["what"] for e in await raw_audit(client)] == ["silence_create", "silence_expire"]


async def test_expiring_a_pending_silence_leaves_an_empty_window(client: aioredis.Redis) -> None:
    s = silences(client)
    made = await create(s, starts=T0 + HOUR, ends=T0 + 2 * HOUR)
    assert made.state(T0) == "pending"
    expired = await s.expire(made.id, "bob", T0 + 1)
    assert (expired.starts_at_ms, expired.ends_at_ms) == (T0 + 1, T0 + 1)
    assert not any(expired.is_active(t) for t in (T0, T0 + 1, T0 + HOUR, T0 + 2 * HOUR - 1))
    assert (await raw_audit(client))[-1]["state_before"] == "pending"


async def test_concurrent_expires_of_one_silence_succeed_once(client: aioredis.Redis,
                                                                redis_server: RedisServer) -> None:  # noqa: F811
    s = silences(client)
    made = await create(s)
    others = [aioredis.Redis.from_url(redis_server.url) for _ in range(8)]  # own connections: real interleaving
    try:
        stores = [SilenceStore(c, "t", clock_ms=FakeClock(T0)) for c in others]
        results = await asyncio.wait_for(
            asyncio.gather(*(st.expire(made.id, f"op{i}", T0 + 10) for i, st in enumerate(stores)),
                           return_exceptions=True), 10)
    finally:
        for c in others:
            await c.aclose()
    assert sum(isinstance(r, Silence) for r in results) == 1, results
    assert all(isinstance(r, (Silence, SilenceStateError)) for r in results), results
    assert [e["what"] for e in await raw_audit(client)] == ["silence_create", "silence_expire"]


async def test_a_start_in_the_past_becomes_now(client: aioredis.Redis) -> None:
    made = await create(silences(client), starts=T0 - HOUR, at=T0)
    assert made.starts_at_ms == T0


async def test_list_active_at_excludes_pending_and_expired(client: aioredis.Redis) -> None:
    s = silences(client)
    now_on = await create(s, ends=T0 + HOUR)
    later = await create(s, starts=T0 + HOUR, ends=T0 + 2 * HOUR)
    gone = await create(s, ends=T0 + 3 * HOUR)
    await s.expire(gone.id, "bob", T0 + 1)
    assert {x.id for x in await s.list(active_at_ms=T0 + 2)} == {now_on.id}
    assert {x.id for x in await s.list(active_at_ms=T0 + HOUR)} == {later.id}
    assert await s.list(active_at_ms=T0 + 2 * HOUR) == []
    assert {x.id for x in await s.list()} == {now_on.id, later.id, gone.id}


async def test_expired_silences_are_deleted_after_the_retention(client: aioredis.Redis) -> None:
    clock = FakeClock(T0)
    s = silences(client, clock, retention_ms=HOUR)
    short = await create(s, ends=T0 + 10)
    long = await create(s, ends=T0 + 5 * HOUR)
    clock.now_ms = T0 + 10 + HOUR  # exactly the retention after its end: still kept
    assert {x.id for x in await s.list()} == {short.id, long.id}
    clock.now_ms += 1
    assert [x.id for x in await s.list()] == [long.id]
    assert await s.get(short.id) is None
    assert await client.zrange("cityops:t:silences:ends", 0, -1) == [long.id.encode()]
    assert len(await raw_audit(client)) == 2  # the audit trail is never trimmed


@pytest.mark.parametrize(("matchers", "kwargs", "field", "words"), [
    ([], {}, "matchers", "at least one"),
    ([SITE_A, Matcher(name="sensor", value="x")], {}, "matchers[1].name", "unknown label 'sensor'"),
    ([Matcher(name="rule", value="gas_(", is_regex=True)], {}, "matchers[0].value", "invalid regex"),
    ([Matcher(name="rule", value=".*", is_regex=True)], {}, "matchers", "match every alarm"),
    ([Matcher(name="district", value="")], {}, "matchers", "match every alarm"),
    ([SITE_A], {"ends_at_ms": T0 - 1, "starts_at_ms": T0 - 10}, "ends_at_ms", "not in the future"),
    ([SITE_A], {"ends_at_ms": T0 + 5, "starts_at_ms": T0 + 5}, "ends_at_ms", "after starts_at_ms"),
    ([SITE_A], {"comment": "  "}, "comment", "why"),
    ([SITE_A], {"created_by": ""}, "created_by", "name"),
])
async def test_invalid_input_is_refused_naming_the_field(client: aioredis.Redis, matchers: list[Matcher],
                                                         kwargs: dict[str, Any], field: str, words: str) -> None:
    s = silences(client)
    args: dict[str, Any] = {"starts_at_ms": T0, "ends_at_ms": T0 + HOUR, "created_by": "alice",
                            "comment": "maintenance", "at_ms": T0} | kwargs
    with pytest.raises(SilenceValidationError, match=words) as caught:
        await s.create(matchers, **args)
    assert caught.value.field == field and str(caught.value).startswith(f"{field}: ")
    assert await client.keys("cityops:t:*") == []  # nothing written, nothing audited


# ---- matching (pure) ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("matcher", "hit"), [
    (Matcher(name="site_id", value="SITE-A"), True),
    (Matcher(name="site_id", value="SITE"), False),
    (Matcher(name="rule", value="gas_.*", is_regex=True), True),
    (Matcher(name="rule", value="gas", is_regex=True), False),  # anchored: not a search
    (Matcher(name="rule", value="lel", is_regex=True), False),
    (Matcher(name="severity", value="major|critical", is_regex=True), True),
    (Matcher(name="severity", value="major", is_equal=False), False),
    (Matcher(name="severity", value="minor", is_equal=False), True),
    (Matcher(name="district", value="Song.*", is_regex=True, is_equal=False), False),
])
def test_one_matcher(matcher: Matcher, hit: bool) -> None:
    assert (matches([silence(matcher)], LABELS, 5) != []) is hit


def test_every_matcher_must_match() -> None:
    both = silence(SITE_A, Matcher(name="kind", value="hazmat"))
    one = silence(SITE_A, Matcher(name="kind", value="air"))
    assert matches([both, one], LABELS, 5) == [both]


def test_a_missing_label_is_empty() -> None:
    needs_empty = silence(SITE_A, Matcher(name="district", value=""))
    assert matches([needs_empty], {"site_id": "SITE-A"}, 5) == [needs_empty]
    assert matches([needs_empty], LABELS, 5) == []


def test_the_window_is_half_open() -> None:
    s = silence(SITE_A, starts=100, ends=200)
    assert [t for t in (99, 100, 199, 200) if matches([s], LABELS, t)] == [100, 199]
    assert [s.state(t) for t in (99, 100, 200)] == ["pending", "active", "expired"]
