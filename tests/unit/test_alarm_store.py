"""sinks.alarm_store against a real redis-server (the private one of tests/unit/test_outbox.py).

Expectations come from the definitions in the module docstring: one live
occurrence per alarm_key, ThingsBoard's four states, peak = most severe level,
then furthest past its set point, count = events applied, first/last seen =
event times, and "an event already applied changes nothing"."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from sinks.alarm_store import Alarm, AlarmNotFound, AlarmStateError, AlarmStore, AlarmStoreError, alarm_id
from sinks.base import Alert
from tests.unit.test_outbox import T0, FakeClock, client, redis_server  # noqa: F401  (fixtures)

SEVERITIES = ["warning", "minor", "major", "critical"]
COLOURS = {"warning": "blue", "minor": "yellow", "major": "orange", "critical": "red"}
SETPOINTS = {"warning": 10.0, "minor": 25.0, "major": 40.0, "critical": 50.0}
E0 = 1_764_115_200_000  # event time origin, epoch ms
KEY = "DG-GAS-0001:gas_lel_high"


def alert(t: int, status: str, severity: str, value: float, *, sensor: str = "DG-GAS-0001",
          rule: str = "gas_lel_high", kind: str = "hazmat", district: str = "Songshan Lake") -> Alert:
    return Alert(
        alert_id=f"aid-{sensor}-{rule}-{t}-{status}", alarm_key=f"{sensor}:{rule}",
        status=status,  # type: ignore[arg-type]
        severity=severity, level=COLOURS[severity], rule=rule, kind=kind, sensor_id=sensor, site_id="SITE-A",
        district=district, lat=22.9, lon=113.9, quantity="gas_lel", value=value, threshold=SETPOINTS[severity],
        score=value, event_ts="2026-11-26T08:00:00+08:00", event_time_ms=E0 + t,
        detected_at="2026-11-26T08:00:00.050+08:00", departments=["work_safety", "fire"],
        summary=f"[{severity}] gas at {sensor}",
    )


def episode(sensor: str = "DG-GAS-0001") -> list[Alert]:
    return [
        alert(1000, "firing", "minor", 30.0, sensor=sensor),
        alert(2000, "updated", "critical", 61.0, sensor=sensor),
        alert(3000, "updated", "major", 45.0, sensor=sensor),
        alert(4000, "resolved", "major", 35.0, sensor=sensor),
    ]


def store(conn: aioredis.Redis, ns: str = "t", **kwargs: Any) -> AlarmStore:
    return AlarmStore(conn, ns, clock_ms=FakeClock(T0), **kwargs)


async def snapshot(conn: aioredis.Redis, ns: str, *, with_applied: bool = True) -> dict[str, Any]:
    """Every alarm-store key of ``ns`` and its content, namespace stripped."""
    prefix = f"cityops:{ns}:"
    out: dict[str, Any] = {}
    async for raw in conn.scan_iter(match=f"{prefix}*"):
        name = raw.decode()
        if name.endswith(":applied") and not with_applied:
            continue
        kind = (await conn.type(name)).decode()  # type: ignore[union-attr]  # bytes: no decode_responses
        if kind == "hash":
            value: Any = await conn.hgetall(name)
        elif kind == "list":
            value = await conn.lrange(name, 0, -1)
        else:
            assert kind == "zset", name
            value = await conn.zrange(name, 0, -1, withscores=True)
        out[name.removeprefix(prefix)] = value
    return out


async def test_lifecycle_escalates_deescalates_and_clears_one_alarm(client: aioredis.Redis) -> None:
    s = store(client)
    events = episode()
    changes = [c for e in events for c in await s.apply([e])]
    assert [c.change for c in changes] == ["opened", "escalated", "deescalated", "cleared"]
    assert [c.state for c in changes] == ["ACTIVE_UNACK", "ACTIVE_UNACK", "ACTIVE_UNACK", "CLEARED_UNACK"]
    assert {c.alarm_id for c in changes} == {alarm_id(events[0].alert_id)}
    alarm = await s.get(KEY)
    assert alarm is not None
    assert (alarm.id, alarm.alarm_key, alarm.state) == (alarm_id(events[0].alert_id), KEY, "CLEARED_UNACK")
    assert (alarm.severity, alarm.level, alarm.peak_severity, alarm.peak_value) == ("major", "orange", "critical", 61.0)
    assert (alarm.first_seen_ms, alarm.last_seen_ms, alarm.count) == (E0 + 1000, E0 + 4000, 4)
    assert (alarm.cleared_at_ms, alarm.clear_reason, alarm.acked_by) == (E0 + 4000, "auto", None)
    assert (alarm.value, alarm.threshold, alarm.opened_by, alarm.last_alert_id) == (
        35.0, 40.0, events[0].alert_id, events[3].alert_id)
    assert alarm.departments == ("work_safety", "fire") and alarm.comments == ()
    assert await s.list(state="ACTIVE_UNACK") == [] and await s.list(state="CLEARED_UNACK") == [alarm]
    assert msgspec.json.decode(alarm.to_json(), type=Alarm) == alarm


async def test_states_and_severity_after_each_event(client: aioredis.Redis) -> None:
    s = store(client)
    seen = []
    for event in episode()[:3]:
        await s.apply([event])
        alarm = await s.get(KEY)
        assert alarm is not None
        seen.append((alarm.state, alarm.severity, alarm.peak_severity, alarm.count, alarm.last_seen_ms))
    assert seen == [("ACTIVE_UNACK", "minor", "minor", 1, E0 + 1000),
                    ("ACTIVE_UNACK", "critical", "critical", 2, E0 + 2000),
                    ("ACTIVE_UNACK", "major", "critical", 3, E0 + 3000)]
    assert [a.id for a in await s.list(state="ACTIVE_UNACK")] == [alarm_id(episode()[0].alert_id)]


async def test_repeated_trigger_updates_the_live_alarm_and_peak_is_furthest_past_setpoint(
        client: aioredis.Redis) -> None:
    s = store(client)
    changes = await s.apply([alert(1, "firing", "critical", 55.0), alert(2, "firing", "critical", 70.0),
                             alert(3, "updated", "critical", 52.0)])
    assert [c.change for c in changes] == ["opened", "repeated", "repeated"]
    assert len({c.alarm_id for c in changes}) == 1
    assert len(await s.list()) == 1
    alarm = await s.get(KEY)
    assert alarm is not None and (alarm.count, alarm.peak_value, alarm.value) == (3, 70.0, 52.0)


async def test_redelivered_batch_or_any_prefix_changes_nothing(client: aioredis.Redis) -> None:
    s = store(client)
    batch = [*episode(), *episode("DG-GAS-0002")[:2], alert(5000, "firing", "major", 44.0)]
    first = await s.apply(batch)
    assert [c.change for c in first] == ["opened", "escalated", "deescalated", "cleared", "opened", "escalated",
                                         "opened"]
    before = await snapshot(client, "t")
    for n in range(1, len(batch) + 1):
        again = await s.apply(batch[:n])
        assert {c.change for c in again} == {"duplicate"}, n
        assert await snapshot(client, "t") == before, n
    s.clock_ms = FakeClock(T0 + s.applied_retention_ms + 1)  # the applied ids have expired
    late = await s.apply(batch)
    assert {c.change for c in late} == {"stale"}
    assert await snapshot(client, "t", with_applied=False) == {
        k: v for k, v in before.items() if not k.endswith(":applied")}


async def test_out_of_order_event_is_stale(client: aioredis.Redis) -> None:
    s = store(client)
    await s.apply([alert(2000, "firing", "major", 45.0)])
    before = await snapshot(client, "t")
    [change] = await s.apply([alert(1500, "resolved", "major", 30.0)])
    assert change.change == "stale" and change.state == "ACTIVE_UNACK"
    assert await snapshot(client, "t") == before


def random_stream(rng: random.Random, sensors: int = 4, steps: int = 60) -> list[Alert]:
    """Level changes like streams/pipeline.py emits: firing 0->k, updated k->j, resolved k->0."""
    events = []
    for n in range(sensors):
        level, t = 0, 0
        for _ in range(steps):
            t += rng.randint(1, 500)
            new = rng.choice([lvl for lvl in range(5) if lvl != level])
            status = "firing" if level == 0 else ("resolved" if new == 0 else "updated")
            severity = SEVERITIES[(new or level) - 1]
            value = SETPOINTS[severity] + (rng.uniform(0.5, 9.5) if new else -rng.uniform(0.5, 5))
            events.append(alert(t, status, severity, round(value, 3), sensor=f"S{n}"))
            level = new
    return sorted(events, key=lambda a: (a.event_time_ms, a.alarm_key))


def split(events: list[Alert], rng: random.Random) -> list[list[Alert]]:
    cuts = sorted(rng.sample(range(1, len(events)), 6))
    return [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]


async def test_replay_into_a_fresh_namespace_reproduces_the_records(client: aioredis.Redis) -> None:
    rng = random.Random(7)
    stream = random_stream(rng)
    live = store(client, "live", history_length=25)
    for batch in split(stream, rng):
        await live.apply(batch)
    replay = store(client, "replay", history_length=25)
    for batch in split(stream, random.Random(99)):
        await replay.apply(batch)
    one_shot = store(client, "oneshot", history_length=25)
    await one_shot.apply(stream)
    expected = await snapshot(client, "live")
    last = {a.alarm_key: a.status for a in stream}
    active = sum(1 for status in last.values() if status != "resolved")
    resolved = sum(1 for a in stream if a.status == "resolved")
    assert resolved > 25 and len(await live.list(state="ACTIVE_UNACK", limit=1000)) == active
    assert len(await live.list(limit=1000)) == active + 25  # the history keeps the newest 25 cleared
    assert await snapshot(client, "replay") == expected
    assert await snapshot(client, "oneshot", with_applied=False) == {
        k: v for k, v in expected.items() if not k.endswith(":applied")}
    assert await replay.list(limit=1000) == await live.list(limit=1000)
    assert {c.change for c in await live.apply(stream)} == {"duplicate"}
    assert await snapshot(client, "live") == expected


async def test_operator_acknowledge_comment_clear_are_audited(client: aioredis.Redis) -> None:
    s = store(client)
    [opened] = await s.apply([alert(1000, "firing", "major", 45.0)])
    acked = await s.acknowledge(KEY, "alice", T0 + 10)
    assert (acked.state, acked.acked_by, acked.acked_at_ms, acked.acked_severity) == (
        "ACTIVE_ACK", "alice", T0 + 10, "major")
    noted = await s.comment(KEY, "bob", "crew dispatched 派人", T0 + 20)
    assert [(c.who, c.at_ms, c.text) for c in noted.comments] == [("bob", T0 + 20, "crew dispatched 派人")]
    cleared = await s.clear(KEY, "carol", "valve closed", T0 + 30)
    assert (cleared.state, cleared.cleared_at_ms, cleared.clear_reason, cleared.clear_note) == (
        "CLEARED_ACK", T0 + 30, "operator: carol", "valve closed")
    assert cleared.id == opened.alarm_id and len(cleared.comments) == 1
    trail = await s.audit()
    rows = [(e.what, e.who, e.at_ms, e.alarm_key, e.alarm_id, e.state_before, e.state_after, e.text) for e in trail]
    assert rows == [
        ("acknowledge", "alice", T0 + 10, KEY, opened.alarm_id, "ACTIVE_UNACK", "ACTIVE_ACK", ""),
        ("comment", "bob", T0 + 20, KEY, opened.alarm_id, "ACTIVE_ACK", "ACTIVE_ACK", "crew dispatched 派人"),
        ("clear", "carol", T0 + 30, KEY, opened.alarm_id, "ACTIVE_ACK", "CLEARED_ACK", "valve closed"),
    ]
    assert await client.llen("cityops:t:audit") == 3


async def test_after_an_operator_clear_the_next_trigger_opens_a_new_occurrence(client: aioredis.Redis) -> None:
    s = store(client)
    first = alert(1000, "firing", "major", 45.0)
    await s.apply([first])
    await s.clear(KEY, "carol", "false alarm", T0)
    [ignored] = await s.apply([alert(2000, "resolved", "major", 30.0)])  # the detector's own clear, later
    assert (ignored.change, ignored.alarm_id, ignored.state) == ("ignored", alarm_id(first.alert_id), "CLEARED_UNACK")
    second = alert(3000, "firing", "critical", 58.0)
    [opened] = await s.apply([second])
    assert (opened.change, opened.alarm_id) == ("opened", alarm_id(second.alert_id))
    assert alarm_id(second.alert_id) != alarm_id(first.alert_id)
    now = await s.get(KEY)
    assert now is not None and (now.id, now.state, now.count, now.first_seen_ms) == (
        alarm_id(second.alert_id), "ACTIVE_UNACK", 1, E0 + 3000)
    old = await s.get_by_id(alarm_id(first.alert_id))
    assert old is not None and (old.state, old.count, old.clear_reason) == ("CLEARED_UNACK", 1, "operator: carol")
    await s.clear(KEY, "carol", "again", T0 + 1)
    [reopened] = await s.apply([alert(4000, "updated", "minor", 26.0)])  # still alarming: a level change reopens
    assert reopened.change == "opened" and reopened.alarm_id == alarm_id(alert(4000, "updated", "minor", 26.0).alert_id)
    assert len(await s.list(state="ACTIVE_UNACK")) == 1 and len(await s.list(state="CLEARED_UNACK")) == 2


async def test_actions_on_unknown_or_cleared_alarms_fail_and_are_not_audited(client: aioredis.Redis) -> None:
    s = store(client)
    for action in (s.acknowledge("NOPE:rule", "alice", T0), s.comment("NOPE:rule", "alice", "hi", T0),
                   s.clear("NOPE:rule", "alice", "x", T0)):
        with pytest.raises(AlarmNotFound, match="NOPE:rule"):
            await action
    await s.apply(episode())
    with pytest.raises(AlarmStateError, match=f"{KEY}.*CLEARED_UNACK"):
        await s.clear(KEY, "alice", "x", T0)
    await s.acknowledge(KEY, "alice", T0)
    with pytest.raises(AlarmStateError, match=f"{KEY}.*CLEARED_ACK"):
        await s.acknowledge(KEY, "bob", T0 + 1)
    with pytest.raises(AlarmStoreError, match="operator"):
        await s.acknowledge(KEY, " ", T0)
    with pytest.raises(AlarmStoreError, match="text"):
        await s.comment(KEY, "bob", "", T0)
    assert [e.what for e in await s.audit()] == ["acknowledge"]


async def test_auto_cleared_alarm_can_be_acknowledged(client: aioredis.Redis) -> None:
    s = store(client)
    await s.apply(episode())
    acked = await s.acknowledge(KEY, "alice", T0)
    assert (acked.state, acked.acked_by) == ("CLEARED_ACK", "alice")


async def test_escalation_above_the_acknowledged_severity_rearms(client: aioredis.Redis) -> None:
    s = store(client)
    await s.apply([alert(1000, "firing", "major", 45.0)])
    await s.acknowledge(KEY, "alice", T0)
    [down] = await s.apply([alert(2000, "updated", "minor", 30.0)])
    assert (down.change, down.state) == ("deescalated", "ACTIVE_ACK")
    [back] = await s.apply([alert(3000, "updated", "major", 42.0)])
    assert (back.change, back.state) == ("escalated", "ACTIVE_ACK")  # not above what alice acknowledged
    [up] = await s.apply([alert(4000, "updated", "critical", 55.0)])
    assert (up.change, up.state) == ("escalated", "ACTIVE_UNACK")
    alarm = await s.get(KEY)
    assert alarm is not None and (alarm.acked_by, alarm.acked_severity) == ("alice", "major")


async def test_list_filters(client: aioredis.Redis) -> None:
    s = store(client)
    await s.apply([
        alert(1, "firing", "warning", 12.0, sensor="A", district="Nancheng"),
        alert(2, "firing", "critical", 60.0, sensor="B", district="Nancheng", kind="air"),
        alert(3, "firing", "major", 45.0, sensor="C", district="Songshan Lake"),
        alert(4, "firing", "minor", 30.0, sensor="D", district="Songshan Lake"),
        alert(5, "resolved", "minor", 20.0, sensor="D", district="Songshan Lake"),
    ])
    await s.acknowledge("C:gas_lel_high", "alice", T0)

    async def sensors(**filters: Any) -> list[str]:
        return [a.sensor_id for a in await s.list(**filters)]

    assert await sensors() == ["C", "B", "A", "D"]  # active newest first, then cleared
    assert await sensors(state="ACTIVE_UNACK") == ["B", "A"]
    assert await sensors(state="ACTIVE_ACK") == ["C"]
    assert await sensors(state="CLEARED_UNACK") == ["D"]
    assert await sensors(kind="air") == ["B"]
    assert await sensors(severity_at_least="major") == ["C", "B"]
    assert await sensors(severity_at_least="minor", district="Songshan Lake") == ["C", "D"]
    assert await sensors(limit=2) == ["C", "B"]


async def test_cleared_history_is_bounded(client: aioredis.Redis) -> None:
    s = store(client, history_length=2)
    for n, sensor in enumerate(["A", "B", "C"]):
        await s.apply([alert(10 * n, "firing", "major", 45.0, sensor=sensor),
                       alert(10 * n + 5, "resolved", "major", 30.0, sensor=sensor)])
    assert [a.sensor_id for a in await s.list()] == ["C", "B"]
    assert await s.get("A:gas_lel_high") is None
    gone = alarm_id(alert(0, "firing", "major", 45.0, sensor="A").alert_id)
    assert not await client.exists(f"cityops:t:alarmstore:alarm:{gone}")
    s.clock_ms = FakeClock(T0 + s.applied_retention_ms + 1)
    [old] = await s.apply([alert(0, "firing", "major", 45.0, sensor="A")])  # the forgotten one, replayed
    assert old.change == "stale" and await s.get("A:gas_lel_high") is None
    await s.apply([alert(1, "firing", "major", 45.0, sensor="D")])
    cleared = await s.clear("D:gas_lel_high", "carol", "test", E0)  # cleared "before" B and C: trimmed at once
    assert (cleared.sensor_id, cleared.state, cleared.cleared_at_ms) == ("D", "CLEARED_UNACK", E0)
    assert await s.get("D:gas_lel_high") is None and [a.sensor_id for a in await s.list()] == ["C", "B"]


async def test_a_bad_event_rejects_the_batch_before_any_write(client: aioredis.Redis) -> None:
    s = store(client)
    bad = msgspec.structs.replace(alert(2, "firing", "major", 45.0), severity="severe")
    with pytest.raises(AlarmStoreError, match="severe"):
        await s.apply([alert(1, "firing", "major", 45.0), bad])
    assert await snapshot(client, "t") == {}
