"""sinks.notifier: routing, silences, inhibition and repeats, on a private Redis.

The receivers are recording fakes here (what the notifier hands them); the real
webhook/CAP sinks behind a real HTTP receiver are in
tests/integration/test_notifications.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
import pytest
import redis.asyncio as aioredis

from sinks.alarm_store import AlarmStore
from sinks.base import Alert
from sinks.noise import InhibitRule, alert_labels, mute_reason
from sinks.notifier import Notifier, NotifyCounters, Route
from sinks.outbox import Outbox
from sinks.redis_board import RedisAlarmBoard
from sinks.silences import Matcher, SilenceCache, SilenceStore
from sinks.webhook import WebhookSink
from streams.topology import load_topology
from streams.topology_spec import AlarmMatch, InhibitRuleSpec, Severity
from tests.unit.test_topology import REPO
from tests.unit.test_outbox import T0, FakeClock, client, redis_server  # noqa: F401  (fixtures)

NS = "t"
CATEGORIES = {"gas_lel_alarm": "value", "stuck_gas_lel": "fault", "no_signal_hazmat": "offline",
              "tank_level_limit": "value"}
FAULT_MUTES_VALUES = InhibitRule.from_spec(InhibitRuleSpec(
    name="fault_mutes_values", source=AlarmMatch(category=["fault"]), target=AlarmMatch(category=["value"]),
    equal=["sensor_id"]))
CRITICAL_MUTES_MINOR = InhibitRule.from_spec(InhibitRuleSpec(
    name="critical_mutes_minor", source=AlarmMatch(severity=[Severity.CRITICAL]),
    target=AlarmMatch(severity=[Severity.MINOR, Severity.WARNING]), equal=["site_id"]))
LEVEL = {"warning": "blue", "minor": "yellow", "major": "orange", "critical": "red"}

_seq = 0


def alert(status: str = "firing", *, severity: str = "major", rule: str = "gas_lel_alarm",
          sensor: str = "DG-GAS-0001", site: str = "SITE-A", departments: Sequence[str] = ("emergency",),
          t: int | None = None) -> Alert:
    global _seq
    _seq += 1
    return Alert(
        alert_id=f"a{_seq}", alarm_key=f"{sensor}:{rule}", status=status, severity=severity,  # type: ignore[arg-type]
        level=LEVEL[severity], rule=rule, kind="hazmat", sensor_id=sensor, site_id=site, district="Songshan Lake",
        lat=22.9, lon=113.9, quantity="gas_lel", value=30.0, threshold=25.0, score=1.0,
        event_ts="2026-11-26T08:00:00+08:00", event_time_ms=T0 + (t if t is not None else _seq),
        detected_at="2026-11-26T08:00:00.050+08:00", departments=list(departments), summary="gas",
    )


class FakeSink:
    def __init__(self) -> None:
        self.batches: list[list[Alert]] = []
        self.repeats: list[list[tuple[Alert, int]]] = []
        self.starts: dict[str, list[int]] = {}  # alarm_key -> the start given with each event

    @property
    def sent(self) -> list[tuple[str, str]]:
        return [(a.alarm_key, a.status) for batch in self.batches for a in batch]

    async def write_batch(self, alerts: Sequence[Alert], starts: Mapping[str, int] | None = None) -> None:
        self.batches.append(list(alerts))
        for a in alerts:
            self.starts.setdefault(a.alarm_key, []).append((starts or {})[a.alarm_key])

    async def write_repeat(self, due: Sequence[tuple[Alert, int]], starts: Mapping[str, int] | None = None) -> None:
        self.repeats.append(list(due))
        for a, _ in due:
            self.starts.setdefault(a.alarm_key, []).append((starts or {})[a.alarm_key])

    def start(self, *, listen: bool = False) -> None:
        pass

    async def close(self) -> None:
        pass


class Harness:
    def __init__(self, client: aioredis.Redis, routes: list[Route], rules: list[InhibitRule]) -> None:
        self.clock = FakeClock()
        self.board = RedisAlarmBoard(client, NS)
        self.store = AlarmStore(client, NS, clock_ms=self.clock)
        self.silences = SilenceStore(client, NS, clock_ms=self.clock)
        self.counters = NotifyCounters()
        self.notifier = Notifier(client, NS, self.board, self.store, SilenceCache(self.silences), routes, rules,
                                 CATEGORIES, repeat_interval_ms=60_000, clock_ms=self.clock, counters=self.counters)

    async def batch(self, *alerts: Alert) -> None:
        """What the runtime does per batch: board, store, then the notifier."""
        await self.board.write_batch(alerts)
        await self.store.apply(alerts)
        await self.notifier.notify(alerts)


def route(name: str = "duty", **options: object) -> tuple[Route, FakeSink]:
    sink = FakeSink()
    return Route(name=name, sink=sink, **options), sink  # type: ignore[arg-type]


async def test_a_receiver_gets_new_alarms_of_its_departments_at_or_above_its_severity(
    client: aioredis.Redis,
) -> None:
    safety, safety_sink = route("safety", departments=frozenset({"emergency"}), min_severity=Severity.MAJOR)
    energy, energy_sink = route("energy", departments=frozenset({"energy"}))
    h = Harness(client, [safety, energy], [])
    major = alert(severity="major")
    minor = alert(severity="minor", sensor="DG-GAS-0002")
    other_dept = alert(severity="critical", sensor="DG-GAS-0003", departments=["fire"])
    await h.batch(major, minor, other_dept)
    assert safety_sink.sent == [(major.alarm_key, "firing")]
    assert energy_sink.sent == []


async def test_an_open_alarm_is_followed_below_min_severity_and_its_resolution_is_sent(
    client: aioredis.Redis,
) -> None:
    r, sink = route(min_severity=Severity.MAJOR)
    h = Harness(client, [r], [])
    await h.batch(alert(severity="critical"))
    await h.batch(alert("updated", severity="minor"))  # de-escalation: the receiver must hear of it
    await h.batch(alert("resolved", severity="minor"))
    key = "DG-GAS-0001:gas_lel_alarm"
    assert sink.sent == [(key, "firing"), (key, "updated"), (key, "resolved")]


async def test_a_resolution_of_an_alarm_the_receiver_never_heard_of_is_not_sent(client: aioredis.Redis) -> None:
    r, sink = route(min_severity=Severity.CRITICAL)
    h = Harness(client, [r], [])
    await h.batch(alert(severity="major"))
    await h.batch(alert("resolved", severity="major"))
    assert sink.sent == []


async def test_an_updated_alarm_the_receiver_missed_is_sent_once_it_qualifies(client: aioredis.Redis) -> None:
    r, sink = route(min_severity=Severity.CRITICAL)
    h = Harness(client, [r], [])
    await h.batch(alert(severity="major"))
    await h.batch(alert("updated", severity="critical"))
    await h.batch(alert("resolved", severity="critical"))
    assert [s for _, s in sink.sent] == ["updated", "resolved"]


async def test_a_silence_mutes_what_it_matches_and_nothing_else(client: aioredis.Redis) -> None:
    r, sink = route()
    h = Harness(client, [r], [])
    silence = await h.silences.create([Matcher(name="site_id", value="SITE-A")], starts_at_ms=T0,
                                      ends_at_ms=T0 + 3_600_000, created_by="alice", comment="maintenance", at_ms=T0)
    await h.batch(alert(site="SITE-A"), alert(site="SITE-B", sensor="DG-GAS-0009"))
    assert sink.sent == [("DG-GAS-0009:gas_lel_alarm", "firing")]
    assert h.counters.counts[("muted_silence", "all")] == 1
    await h.silences.expire(silence.id, "alice", T0 + 1)  # seen at once: the cache follows the version
    h.clock.now_ms = T0 + 2
    await h.batch(alert("updated", site="SITE-A", severity="critical"))
    assert sink.sent[-1] == ("DG-GAS-0001:gas_lel_alarm", "updated")


async def test_a_pending_silence_starts_muting_on_time(client: aioredis.Redis) -> None:
    r, sink = route()
    h = Harness(client, [r], [])
    await h.silences.create([Matcher(name="rule", value="gas_lel_alarm")], starts_at_ms=T0 + 1000,
                            ends_at_ms=T0 + 5000, created_by="bob", comment="test window", at_ms=T0)
    await h.batch(alert(sensor="S1"))
    h.clock.now_ms = T0 + 1000
    await h.batch(alert(sensor="S2"))
    assert [k for k, _ in sink.sent] == ["S1:gas_lel_alarm"]


async def test_a_sensor_fault_mutes_its_value_alarms_only_and_they_follow_when_it_ends(
    client: aioredis.Redis,
) -> None:
    r, sink = route()
    h = Harness(client, [r], [FAULT_MUTES_VALUES])
    await h.batch(alert(rule="stuck_gas_lel", severity="minor", sensor="S1"))
    await h.batch(alert(sensor="S1", t=10), alert(sensor="S2"))
    assert sink.sent == [("S1:stuck_gas_lel", "firing"), ("S2:gas_lel_alarm", "firing")]
    assert h.counters.counts[("muted_inhibit", "all")] == 1
    await h.batch(alert("resolved", rule="stuck_gas_lel", severity="minor", sensor="S1"))
    # the fault is gone and S1's gas alarm is still live: it is sent now, with its own start
    assert sink.sent[-2:] == [("S1:stuck_gas_lel", "resolved"), ("S1:gas_lel_alarm", "firing")]
    assert sink.starts["S1:gas_lel_alarm"] == [T0 + 10]
    assert h.counters.counts[("released", "duty")] == 1
    await h.batch(alert("updated", sensor="S1", severity="critical"))
    assert sink.sent[-1] == ("S1:gas_lel_alarm", "updated")


async def test_a_critical_alarm_mutes_minor_ones_of_its_site_but_not_of_other_sites(client: aioredis.Redis) -> None:
    r, sink = route()
    h = Harness(client, [r], [CRITICAL_MUTES_MINOR])
    await h.batch(alert(severity="critical", sensor="S1", site="SITE-A"))
    await h.batch(
        alert(rule="tank_level_limit", severity="minor", sensor="T1", site="SITE-A"),
        alert(rule="tank_level_limit", severity="minor", sensor="T2", site="SITE-B"),
        alert(rule="tank_level_limit", severity="major", sensor="T3", site="SITE-A"),
    )
    assert sink.sent == [("S1:gas_lel_alarm", "firing"), ("T2:tank_level_limit", "firing"),
                         ("T3:tank_level_limit", "firing")]


def test_an_alarm_never_inhibits_itself() -> None:
    critical_minor_both = InhibitRule.from_spec(InhibitRuleSpec(
        name="x", source=AlarmMatch(kind=["hazmat"]), target=AlarmMatch(kind=["hazmat"]), equal=["site_id"]))
    labels = alert_labels(alert(), CATEGORIES)
    assert mute_reason(labels, [labels], [], [critical_minor_both]) is None
    other = alert_labels(alert(sensor="S9"), CATEGORIES)
    assert mute_reason(labels, [other], [], [critical_minor_both]) == "inhibit:x"


async def test_a_muted_open_alarm_still_reports_its_end(client: aioredis.Redis) -> None:
    r, sink = route()
    h = Harness(client, [r], [FAULT_MUTES_VALUES])
    await h.batch(alert(sensor="S1"))
    await h.batch(alert(rule="stuck_gas_lel", severity="minor", sensor="S1"))
    await h.batch(alert("updated", sensor="S1", severity="critical"))  # muted: the sensor is frozen
    await h.batch(alert("resolved", sensor="S1", severity="critical"))
    assert [(k.split(":")[1], s) for k, s in sink.sent] == [
        ("gas_lel_alarm", "firing"), ("stuck_gas_lel", "firing"), ("gas_lel_alarm", "resolved")]


async def test_a_silenced_alarm_is_sent_when_the_silence_ends_while_it_is_live(client: aioredis.Redis) -> None:
    r, sink = route()
    h = Harness(client, [r], [])
    silence = await h.silences.create([Matcher(name="sensor_id", value="S1")], starts_at_ms=T0,
                                      ends_at_ms=T0 + 60_000, created_by="alice", comment="works", at_ms=T0)
    await h.batch(alert(sensor="S1", t=5), alert(sensor="S2", t=6))
    await h.batch(alert(sensor="S3", t=7))  # held S1 stays held: its silence is on
    assert await h.notifier.release() == 0
    await h.silences.expire(silence.id, "alice", T0 + 1000)
    h.clock.now_ms = T0 + 1000
    assert await h.notifier.release() == 1
    assert [k for k, _ in sink.sent] == ["S2:gas_lel_alarm", "S3:gas_lel_alarm", "S1:gas_lel_alarm"]
    assert sink.starts["S1:gas_lel_alarm"] == [T0 + 5]
    assert await h.notifier.release() == 0  # sent once
    await h.batch(alert("resolved", sensor="S1"))
    assert sink.sent[-1] == ("S1:gas_lel_alarm", "resolved")


async def test_a_held_alarm_that_ends_while_muted_is_never_sent(client: aioredis.Redis) -> None:
    r, sink = route()
    h = Harness(client, [r], [CRITICAL_MUTES_MINOR])
    await h.batch(alert(severity="critical", sensor="S1"))
    await h.batch(alert(rule="tank_level_limit", severity="minor", sensor="T1"))
    await h.batch(alert("resolved", rule="tank_level_limit", severity="minor", sensor="T1"))
    await h.batch(alert("resolved", severity="critical", sensor="S1"))
    assert sink.sent == [("S1:gas_lel_alarm", "firing"), ("S1:gas_lel_alarm", "resolved")]
    assert await client.hlen(h.notifier.held_key("duty")) == 0


async def test_minor_alarms_muted_by_a_critical_one_follow_when_it_clears(client: aioredis.Redis) -> None:
    r, sink = route()
    h = Harness(client, [r], [CRITICAL_MUTES_MINOR])
    await h.batch(alert(severity="critical", sensor="S1"))
    await h.batch(alert(rule="tank_level_limit", severity="minor", sensor="T1"))
    await h.batch(alert("resolved", severity="critical", sensor="S1"))
    assert sink.sent == [("S1:gas_lel_alarm", "firing"), ("S1:gas_lel_alarm", "resolved"),
                         ("T1:tank_level_limit", "firing")]


async def test_an_offline_sensor_does_not_mute_the_alarm_it_raises_when_it_is_back(client: aioredis.Redis) -> None:
    shipped = load_topology(REPO / "topology.yaml")
    rules = [InhibitRule.from_spec(spec) for spec in shipped.spec.notifications.inhibit]
    r, sink = route()
    h = Harness(client, [r], rules)
    h.notifier.categories = shipped.rule_categories()
    await h.batch(alert(rule="no_signal_hazmat", severity="minor", sensor="S1"))
    await h.batch(alert(sensor="S1", severity="critical"))  # its first reading back is 55 %LEL
    assert sink.sent[-1] == ("S1:gas_lel_alarm", "firing")


async def test_a_redelivered_batch_enqueues_nothing_twice_into_a_real_outbox(client: aioredis.Redis) -> None:
    outbox = Outbox(client, NS, "duty")
    webhook = WebhookSink(outbox, receiver="duty", external_url="http://x")
    r = Route(name="duty", sink=webhook)
    h = Harness(client, [r], [])
    first = [alert(sensor="S1"), alert(sensor="S2", site="SITE-B")]
    await h.batch(*first)
    assert await outbox.pending() == 2  # one notification per site
    await h.batch(*first)  # Kafka redelivers it after a crash
    await h.notifier.notify(first)
    assert await outbox.pending() == 2
    await h.batch(alert("resolved", sensor="S1"))
    assert await outbox.pending() == 3


async def test_an_unacknowledged_critical_alarm_is_repeated_until_acknowledged(client: aioredis.Redis) -> None:
    r, sink = route(repeat=True)
    h = Harness(client, [r], [])
    await h.batch(alert(severity="critical", sensor="S1"), alert(severity="major", sensor="S2"))
    assert await h.notifier.repeat_due() == 0  # not yet due
    h.clock.now_ms = T0 + 60_000
    assert await h.notifier.repeat_due() == 1
    assert [(a.alarm_key, due) for a, due in sink.repeats[0]] == [("S1:gas_lel_alarm", T0 + 60_000)]
    assert await h.notifier.repeat_due() == 0  # rescheduled, not sent twice
    h.clock.now_ms = T0 + 120_000
    assert await h.notifier.repeat_due() == 1
    await h.store.acknowledge("S1:gas_lel_alarm", "alice", T0 + 120_001)
    h.clock.now_ms = T0 + 180_000
    assert await h.notifier.repeat_due() == 0
    assert await client.zcard(h.notifier.repeat_key) == 0


async def test_de_escalation_or_resolution_stops_repeats_and_muted_rounds_are_skipped(client: aioredis.Redis) -> None:
    r, sink = route(repeat=True)
    h = Harness(client, [r], [])
    await h.batch(alert(severity="critical", sensor="S1"), alert(severity="critical", sensor="S2"))
    await h.batch(alert("updated", severity="major", sensor="S1"))
    await h.silences.create([Matcher(name="sensor_id", value="S2")], starts_at_ms=T0, ends_at_ms=T0 + 90_000,
                            created_by="alice", comment="crew on site", at_ms=T0)
    h.clock.now_ms = T0 + 60_000
    assert await h.notifier.repeat_due() == 0  # S1 de-escalated, S2 silenced
    h.clock.now_ms = T0 + 120_000
    assert await h.notifier.repeat_due() == 1  # the silence ended
    await h.batch(alert("resolved", severity="critical", sensor="S2"))
    assert await client.zcard(h.notifier.repeat_key) == 0


async def test_repeats_are_enqueued_once_however_many_workers_see_them_due(client: aioredis.Redis) -> None:
    outbox = Outbox(client, NS, "duty")
    h = Harness(client, [Route(name="duty", sink=WebhookSink(outbox, receiver="duty", external_url="http://x"),
                               repeat=True)], [])
    await h.batch(alert(severity="critical", sensor="S1"))
    assert await outbox.pending() == 1
    other = Notifier(client, NS, h.board, h.store, SilenceCache(h.silences), h.notifier.routes, [], CATEGORIES,
                     repeat_interval_ms=60_000, clock_ms=lambda: T0 + 60_500)
    h.clock.now_ms = T0 + 60_000
    await h.notifier.repeat_due()
    await client.zadd(h.notifier.repeat_key, {"duty|S1:gas_lel_alarm": T0 + 60_000})  # as if read before the move
    await other.repeat_due()
    assert await outbox.pending() == 2


@pytest.mark.parametrize("status", ["firing", "updated"])
def test_labels_carry_the_rule_category(status: str) -> None:
    labels = alert_labels(msgspec.structs.replace(alert(rule="stuck_gas_lel"), status=status), CATEGORIES)
    assert labels["category"] == "fault" and labels["sensor_id"] == "DG-GAS-0001"


async def test_every_notification_of_an_alarm_carries_the_alarm_start(client: aioredis.Redis) -> None:
    early, late = route("early"), route("late", min_severity=Severity.CRITICAL)
    h = Harness(client, [early[0], late[0]], [])
    await h.batch(alert(severity="major", t=1000))
    await h.batch(alert("updated", severity="critical", t=2000))
    await h.batch(alert("resolved", severity="critical", t=3000))
    key = "DG-GAS-0001:gas_lel_alarm"
    assert early[1].starts[key] == [T0 + 1000] * 3
    # heard of it only at the escalation: still the alarm's start, from the alarm store
    assert late[1].starts[key] == [T0 + 1000] * 2


async def test_a_repeat_carries_the_alarm_start(client: aioredis.Redis) -> None:
    r, sink = route(repeat=True)
    h = Harness(client, [r], [])
    await h.batch(alert(severity="critical", sensor="S1", t=500))
    h.clock.now_ms = T0 + 60_000
    assert await h.notifier.repeat_due() == 1
    assert sink.starts["S1:gas_lel_alarm"] == [T0 + 500, T0 + 500]
