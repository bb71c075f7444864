"""Routing and noise control between alarm events and the HTTP receivers.

The ``city.alerts`` topic, the Redis board, the alarm store and the JSONL
archive get *every* alarm event. People get fewer: this module decides, per
event and per receiver (a webhook bridge, the emergency platform's CAP
endpoint), whether to notify, Alertmanager-style (docs/domain-reference.md §1.5).

Per event, in batch order:

1. **Mute.** An event is muted when an active silence (sinks/silences.py)
   matches its labels, or when an inhibition rule applies: a *live* alarm of
   the same site (the board's per-site hash, read after this batch was applied)
   matches the rule's source side, the event matches its target side, they
   agree on the rule's ``equal`` labels and are not the same alarm. Defaults in
   topology.yaml: a sensor's fault alarm (frozen, flagged) mutes its value
   alarms; a critical alarm mutes the minor/warning ones of its site.
2. **Hold.** A new alarm that a receiver would take but that is muted is *held*
   for it, not dropped: when the mute lifts while the alarm is still live (its
   silence expires, the inhibiting alarm clears) the receiver gets the alarm's
   latest event then, with the alarm's start (:meth:`Notifier.release`, run
   after every batch for the held alarms of its sites, and every few seconds for
   all, which is when expired silences are noticed). A held alarm that ends
   while muted is never sent. So muting delays what is still true when the mute
   ends; it never loses it.
3. **Route.** A receiver takes a *new* alarm (firing, or updated for an alarm
   it has not heard of) when the event's departments meet its ``departments``
   and the severity is at least its ``min_severity``. Once it has been told of
   an alarm (the alarm is *open* at that receiver) it gets every unmuted update
   whatever the severity, so a de-escalation is never hidden, and the resolution
   even when muted: a receiver that was told an alarm is firing is always told
   when it ends. A resolution of an alarm it never heard of is not sent.
4. **Repeat.** A receiver with ``repeat: true`` is re-sent an alarm of a
   ``repeat_severities`` severity every ``repeat_interval_s`` while the alarm
   store has it ``ACTIVE_UNACK`` and it is not muted (a muted round is skipped,
   not postponed). Acknowledging, clearing or de-escalating stops it.

Grouping is the receivers': a webhook notification carries the events of one
site in one batch (sinks/webhook.py); CAP is one document per event.

Keys (``N = cityops:<ns>:notify``):

- ``N:open:<receiver>``  hash  alarm_key -> the alarm's start (event ms) while the
  receiver knows it firing; webhook ``startsAt`` is that start, not the time of the
  latest change (an alarm first heard of through an update starts at the alarm
  store's ``first_seen_ms``)
- ``N:held:<receiver>``  hash  alarm_key -> "<start>|<site_id>" of an alarm muted while new
- ``N:repeat``           zset  "<receiver>|<alarm_key>" -> wall-clock ms of the next repeat

Crash safety, as in sinks/cap_sink.py: read the open sets, decide in memory,
enqueue into the receivers' outboxes (idempotent per alert id), then write the
open/repeat changes in one MULTI/EXEC. A retry after a crash before the MULTI
decides again from the same open sets (the outbox drops what it already has);
after it, the outbox has everything and nothing is sent twice. A repeat's
outbox id is derived from its due time, so two workers that both see it due
enqueue it once.

Silences and repeats use the wall clock (they are about people, not readings);
everything else is event-ordered, so a replay routes like the live run did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sinks.alarm_store import AlarmStore, wall_clock_ms
from sinks.base import Alert
from sinks.outbox import Outbox
from sinks.redis_board import RedisAlarmBoard
from sinks.noise import InhibitRule, Labels, alert_labels, mute_reason
from sinks.silences import Silence, SilenceCache
from streams.topology_spec import Severity

log = logging.getLogger(__name__)

_REPEAT_BATCH = 200


class ReceiverSink(Protocol):
    """What the notifier needs of a receiver's sink (WebhookSink, CapSink)."""

    async def write_batch(self, alerts: Sequence[Alert], starts: Mapping[str, int] | None = None) -> None: ...

    async def write_repeat(self, due: Sequence[tuple[Alert, int]], starts: Mapping[str, int] | None = None) -> None: ...

    def start(self, *, listen: bool = False) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Route:
    """One receiver and what it takes."""

    name: str
    sink: ReceiverSink
    departments: frozenset[str] | None = None  # None: every department
    min_severity: Severity = Severity.WARNING
    send_resolved: bool = True
    repeat: bool = False

    def takes_new(self, alert: Alert) -> bool:
        return (
            (self.departments is None or not self.departments.isdisjoint(alert.departments))
            and Severity.rank_of(alert.severity) >= self.min_severity.rank
        )


def _parse_held(raw: Mapping[bytes, bytes]) -> dict[str, tuple[int, str]]:
    out = {}
    for key, value in raw.items():
        start, _, site = value.decode().partition("|")
        out[key.decode()] = (int(start), site)
    return out


@dataclass
class NotifyCounters:
    """Plain counters; ``hook(outcome, receiver)`` per increment (wire Prometheus there).
    Outcomes: sent, repeated, muted_silence, muted_inhibit."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    hook: Callable[[str, str], None] | None = field(default=None, repr=False)

    def bump(self, outcome: str, receiver: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.counts[outcome, receiver] = self.counts.get((outcome, receiver), 0) + n
        if self.hook is not None:
            for _ in range(n):
                self.hook(outcome, receiver)


@dataclass(frozen=True, slots=True)
class _View:
    """What a batch's decisions read from Redis."""

    silences: list[Silence]
    live: dict[str, list[Labels]]  # site_id -> labels of its live alarms
    open_sets: dict[str, dict[str, int]]  # receiver -> alarm_key -> start, for the batch's keys
    held: dict[str, dict[str, tuple[int, str]]]  # receiver -> alarm_key -> (start, site_id)


@dataclass
class _Plan:
    selected: list[Alert] = field(default_factory=list)
    starts: dict[str, int] = field(default_factory=dict)  # alarm_key -> start of the alarm (event ms)
    opened: dict[str, int | None] = field(default_factory=dict)  # alarm_key -> start, or None: closed
    repeat_add: dict[str, int] = field(default_factory=dict)  # alarm_key -> due ms (only if none)
    repeat_drop: set[str] = field(default_factory=set)
    held_add: dict[str, str] = field(default_factory=dict)  # alarm_key -> "<start>|<site_id>"
    held_drop: set[str] = field(default_factory=set)


class Notifier:
    """See the module docstring."""

    def __init__(
        self, client: aioredis.Redis, namespace: str, board: RedisAlarmBoard, store: AlarmStore,
        silences: SilenceCache, routes: Sequence[Route], rules: Sequence[InhibitRule],
        categories: Mapping[str, str], *, repeat_interval_ms: int = 900_000,
        repeat_severities: Sequence[Severity] = (Severity.CRITICAL,), clock_ms: Callable[[], int] = wall_clock_ms,
        counters: NotifyCounters | None = None, on_outbox_depth: Callable[[str, int, int], None] | None = None,
    ) -> None:
        if repeat_interval_ms <= 0:
            msg = "repeat_interval_ms must be > 0"
            raise ValueError(msg)
        self.redis, self.board, self.store, self.silences = client, board, store, silences
        self.routes, self.rules, self.categories = list(routes), list(rules), dict(categories)
        self.repeat_interval_ms = repeat_interval_ms
        self.repeat_ranks = frozenset(s.rank for s in repeat_severities)
        self.clock_ms = clock_ms
        self.counters = counters or NotifyCounters()
        self.prefix = f"cityops:{namespace}:notify"
        self.namespace = namespace
        self.on_outbox_depth = on_outbox_depth  # (receiver, waiting, dead) on every tick, for gauges
        self.repeat_key = f"{self.prefix}:repeat"
        self._lock = asyncio.Lock()  # one batch's read-decide-write at a time per worker
        self._repeat_task: asyncio.Task[None] | None = None

    def open_key(self, receiver: str) -> str:
        return f"{self.prefix}:open:{receiver}"

    def held_key(self, receiver: str) -> str:
        return f"{self.prefix}:held:{receiver}"

    # -- per batch ---------------------------------------------------------------

    async def notify(self, alerts: Sequence[Alert]) -> None:
        """Route the batch's events to the receivers; returns once they are in the outboxes."""
        if not alerts or not self.routes:
            return
        async with self._lock:
            now = self.clock_ms()
            keys = list(dict.fromkeys(alert.alarm_key for alert in alerts))
            view = await self._read(alerts, keys, now)
            muted = self._mute(alerts, view)
            first_seen = await self._first_seen(alerts, view.open_sets)
            plans = {route.name: self._plan(route, alerts, muted, view.open_sets[route.name], first_seen, now)
                     for route in self.routes}
            # the receivers' outboxes are independent: enqueue into all of them at once
            await asyncio.gather(*[
                route.sink.write_batch(plans[route.name].selected, plans[route.name].starts)
                for route in self.routes if plans[route.name].selected
            ])
            await self._record(plans)
            for route in self.routes:
                self.counters.bump("sent", route.name, len(plans[route.name].selected))
            # alarms held back at this batch's sites may have lost what muted them
            sites = {alert.site_id for alert in alerts}
            await self._release({
                name: {key: entry for key, entry in held.items() if entry[1] in sites and key not in keys}
                for name, held in view.held.items()
            }, now)

    async def mute_reasons(self, alerts: Sequence[Alert], now_ms: int) -> list[str | None]:
        """Per event: why it is muted now, or None."""
        return self._mute(alerts, await self._read(alerts, [], now_ms))

    async def _read(self, alerts: Sequence[Alert], keys: Sequence[str], now_ms: int) -> _View:
        """Everything a batch's decisions need, in one pipelined round trip: the silences'
        version, the live alarms of the batch's sites (for inhibition) and the open sets."""
        sites = list(dict.fromkeys(alert.site_id for alert in alerts)) if self.rules else []
        routes = self.routes if keys else []
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.silences.store.version_key)
        for site in sites:
            pipe.hvals(self.board.site_key(site))
        for route in routes:
            pipe.hmget(self.open_key(route.name), list(keys))
        for route in routes:
            pipe.hgetall(self.held_key(route.name))
        version, *rows = await pipe.execute()
        live = {site: [alert_labels(Alert.from_json(raw), self.categories) for raw in items]
                for site, items in zip(sites, rows[:len(sites)], strict=True)}
        n_open = len(sites) + len(routes)
        open_sets = {
            route.name: {key: int(start) for key, start in zip(keys, row, strict=True) if start is not None}
            for route, row in zip(routes, rows[len(sites):n_open], strict=True)
        }
        held = {route.name: _parse_held(row) for route, row in zip(routes, rows[n_open:], strict=True)}
        silences = await self.silences.at_version(int(version or 0), now_ms)
        return _View(silences, live, open_sets, held)

    def _mute(self, alerts: Sequence[Alert], view: _View, *, count: bool = True) -> list[str | None]:
        reasons = [
            mute_reason(alert_labels(alert, self.categories), view.live.get(alert.site_id, ()), view.silences,
                        self.rules)
            for alert in alerts
        ]
        for reason in reasons if count else ():
            if reason is not None:
                outcome = "muted_silence" if reason.startswith("silence:") else "muted_inhibit"
                self.counters.bump(outcome, "all")
        return reasons

    async def _first_seen(self, alerts: Sequence[Alert], open_sets: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
        """The alarm store's start of the alarms some receiver may first hear of through an
        update (one round trip, and none when no receiver would take such an update new)."""
        keys = list(dict.fromkeys(
            a.alarm_key for a in alerts
            if a.status == "updated" and any(a.alarm_key not in open_sets.get(route.name, {}) and route.takes_new(a)
                                             for route in self.routes)))
        alarms = await self.store.get_many(keys)
        return {key: alarm.first_seen_ms for key, alarm in zip(keys, alarms, strict=True) if alarm is not None}

    def _plan(
        self, route: Route, alerts: Sequence[Alert], muted: Sequence[str | None], open_now: Mapping[str, int],
        first_seen: Mapping[str, int], now_ms: int,
    ) -> _Plan:
        plan = _Plan()
        view = dict(open_now)
        for alert, reason in zip(alerts, muted, strict=True):
            key = alert.alarm_key
            known = key in view
            if alert.status == "resolved":
                if known:
                    if route.send_resolved:
                        plan.selected.append(alert)
                        plan.starts[key] = view[key]
                    del view[key]
                    plan.opened[key] = None
                plan.repeat_drop.add(key)
                plan.repeat_add.pop(key, None)
                plan.held_drop.add(key)
                plan.held_add.pop(key, None)
                continue
            start = alert.event_time_ms if alert.status == "firing" else first_seen.get(key, alert.event_time_ms)
            if not known and route.takes_new(alert) and reason is not None:
                # muted while new: held back, and sent if the mute lifts while it is live (_release)
                plan.held_add[key] = f"{start}|{alert.site_id}"
                plan.held_drop.discard(key)
                continue
            if reason is not None or not (known or route.takes_new(alert)):
                if reason is None:  # unmuted, but no longer what this receiver takes
                    plan.held_drop.add(key)
                    plan.held_add.pop(key, None)
                continue
            plan.selected.append(alert)
            plan.held_drop.add(key)
            plan.held_add.pop(key, None)
            if not known:
                view[key] = plan.opened[key] = start
            plan.starts[key] = view[key]
            if route.repeat and Severity.rank_of(alert.severity) in self.repeat_ranks:
                plan.repeat_drop.discard(key)
                plan.repeat_add.setdefault(key, now_ms + self.repeat_interval_ms)
            elif route.repeat:
                plan.repeat_add.pop(key, None)
                plan.repeat_drop.add(key)
        return plan

    async def _record(self, plans: Mapping[str, _Plan]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        queued = False
        for name, plan in plans.items():
            opened = {key: start for key, start in plan.opened.items() if start is not None}
            closed = [key for key, start in plan.opened.items() if start is None]
            if opened:
                pipe.hset(self.open_key(name), mapping=opened)  # type: ignore[arg-type]  # redis-py's invariant Mapping
            if closed:
                pipe.hdel(self.open_key(name), *closed)
            if plan.repeat_drop:
                pipe.zrem(self.repeat_key, *[f"{name}|{key}" for key in plan.repeat_drop])
            if plan.repeat_add:
                pipe.zadd(self.repeat_key, {f"{name}|{key}": due for key, due in plan.repeat_add.items()}, nx=True)
            if plan.held_drop:
                pipe.hdel(self.held_key(name), *plan.held_drop)
            if plan.held_add:
                pipe.hset(self.held_key(name), mapping=plan.held_add)  # type: ignore[arg-type]  # redis-py's invariant Mapping
            queued = queued or bool(opened or closed or plan.repeat_drop or plan.repeat_add or plan.held_drop
                                    or plan.held_add)
        if queued:
            await pipe.execute()

    # -- held alarms ---------------------------------------------------------------

    async def release(self) -> int:
        """Send every held alarm that is still live and no longer muted; returns how many."""
        if not self.routes:
            return 0
        async with self._lock:
            pipe = self.redis.pipeline(transaction=False)
            for route in self.routes:
                pipe.hgetall(self.held_key(route.name))
            rows = await pipe.execute()
            held = {route.name: _parse_held(row) for route, row in zip(self.routes, rows, strict=True)}
            return await self._release(held, self.clock_ms())

    async def _release(self, held: Mapping[str, Mapping[str, tuple[int, str]]], now_ms: int) -> int:
        """Of ``held`` (receiver -> alarm_key -> (start, site)): send the live, unmuted ones the
        receiver still takes (as the alarm's latest event), forget the gone ones. Caller holds the lock."""
        keys = list(dict.fromkeys(key for entries in held.values() for key in entries))
        if not keys:
            return 0
        live = await self.board.live(keys)
        alerts = list(live.values())
        reasons = dict(zip(live, self._mute(alerts, await self._read(alerts, [], now_ms), count=False), strict=True))
        plans: dict[str, _Plan] = {}
        for route in self.routes:
            plan = plans[route.name] = _Plan()
            for key, (start, _) in held.get(route.name, {}).items():
                alert = live.get(key)
                if alert is not None and reasons[key] is not None:
                    continue  # still muted: keep holding it
                plan.held_drop.add(key)
                if alert is None or not route.takes_new(alert):
                    continue  # it ended (or fell below what this receiver takes) while held
                plan.selected.append(alert)
                plan.starts[key] = plan.opened[key] = start
                if route.repeat and Severity.rank_of(alert.severity) in self.repeat_ranks:
                    plan.repeat_add[key] = now_ms + self.repeat_interval_ms
        await asyncio.gather(*[
            route.sink.write_batch(plans[route.name].selected, plans[route.name].starts)
            for route in self.routes if plans[route.name].selected
        ])
        await self._record(plans)
        released = 0
        for route in self.routes:
            self.counters.bump("released", route.name, len(plans[route.name].selected))
            released += len(plans[route.name].selected)
        return released

    # -- repeats -----------------------------------------------------------------

    async def repeat_due(self) -> int:
        """Send the repeats that are due; returns how many were enqueued."""
        now = self.clock_ms()
        raw = await self.redis.zrangebyscore(self.repeat_key, "-inf", now, start=0, num=_REPEAT_BATCH, withscores=True)
        if not raw:
            return 0
        pairs = cast(list[tuple[bytes, float]], raw)
        by_member = {member.decode(): int(at) for member, at in pairs}
        keys = list(dict.fromkeys(member.partition("|")[2] for member in by_member))
        live = await self.board.live(keys)
        alarms = dict(zip(keys, await self.store.get_many(keys), strict=True))
        routes = {route.name: route for route in self.routes}
        stale, send = [], []
        for member, at in by_member.items():
            receiver, _, key = member.partition("|")
            alarm, alert = alarms.get(key), live.get(key)
            route = routes.get(receiver)
            if (route is None or alert is None or alarm is None or alarm.state != "ACTIVE_UNACK"
                    or Severity.rank_of(alarm.severity) not in self.repeat_ranks):
                stale.append(member)
            else:
                send.append((route, alert, at, member))
        muted = await self.mute_reasons([alert for _, alert, _, _ in send], now) if send else []
        sent = 0
        for route in self.routes:
            batch = [(alert, at) for (r, alert, at, _), why in zip(send, muted, strict=True)
                     if r is route and why is None]
            if batch:
                starts = {a.alarm_key: alarm.first_seen_ms for a, _ in batch if (alarm := alarms.get(a.alarm_key))}
                await route.sink.write_repeat(batch, starts)
                self.counters.bump("repeated", route.name, len(batch))
                sent += len(batch)
        pipe = self.redis.pipeline(transaction=True)
        if stale:
            pipe.zrem(self.repeat_key, *stale)
        moved = {member: now + self.repeat_interval_ms for _, _, _, member in send}
        if moved:
            pipe.zadd(self.repeat_key, moved, xx=True, gt=True)
        await pipe.execute()
        return sent

    async def _tick_loop(self, period_s: float) -> None:
        """Repeats, and held alarms whose silence ended without any new event at their site."""
        while True:
            try:
                await self.repeat_due()
                await self.release()
                await self._report_depth()
            except (RedisError, OSError) as exc:
                log.warning("repeat / held notifications: %r; trying again in %.0f s", exc, period_s)
            await asyncio.sleep(period_s)

    async def _report_depth(self) -> None:
        if self.on_outbox_depth is None:
            return
        for route in self.routes:
            outbox = Outbox(self.redis, self.namespace, route.name)
            self.on_outbox_depth(route.name, await outbox.pending(), await outbox.dead_count())

    def start(self, tick_s: float = 5.0, *, listen: bool = False) -> None:
        """Start the receivers' deliverers and the loop of repeats and held alarms
        (``listen``: the deliverers also wake on enqueues by other processes)."""
        for route in self.routes:
            route.sink.start(listen=listen)
        if self._repeat_task is None and self.routes:
            period_s = min(tick_s, self.repeat_interval_ms / 4000)
            self._repeat_task = asyncio.create_task(self._tick_loop(period_s), name="cityops-notify-tick")

    async def close(self) -> None:
        if self._repeat_task is not None:
            self._repeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repeat_task
            self._repeat_task = None
        for route in self.routes:
            await route.sink.close()
