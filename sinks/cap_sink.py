"""CAP 1.2 output through the outbox: one document per alert (see sinks/cap.py).

``write_batch`` builds, per alert, the CAP document and enqueues it as its own
:class:`~sinks.outbox.OutboxItem` (id = the CAP identifier, so a redelivered
batch enqueues nothing twice); a :class:`~sinks.outbox.Deliverer` POSTs it with
``Content-Type: application/cap+xml``. Nothing here waits on the receiver.

Message types and references:

- ``firing``   -> Alert. Its reference ("sender,identifier,sent") becomes the
  *origin* of its ``alarm_key`` (replacing any earlier one: a new alarm).
- ``updated``  -> Update, ``references`` = the origin. With no origin known
  (the alarm fired before this sink existed, or its firing was rejected) it is
  sent as an **Alert** instead (same identifier: the alert's), which becomes the
  origin, so the receiver still learns of a live alarm and the later
  Update/Cancel can name it. Counted in ``counters.promoted``.
- ``resolved`` -> Cancel, ``references`` = the origin; the origin is then
  forgotten. With no origin known it is **skipped** (a Cancel must name what it
  cancels, and an AllClear for an alarm the receiver never heard of is noise).
  Counted in ``counters.orphan_resolved``.
- an alert CAP cannot carry (``alert_to_cap`` raises ValueError) is logged,
  counted in ``counters.rejected`` and skipped; it changes no origin. Raising
  instead would make the worker retry the batch forever.

Redis keys (besides the outbox's ``cityops:<ns>:outbox:<sink>:*``):

- ``cityops:<ns>:cap:<sink>:origin``  hash  alarm_key -> "sender,identifier,sent"

Crash safety. The outbox enqueue is a Lua script of sinks/outbox.py and has no
public way to join a transaction, so the origin writes cannot share its
MULTI/EXEC. The order is therefore: (1) read the origins of the batch's alarm
keys, (2) compute every document and the batch's net origin changes in memory,
in batch order, (3) enqueue the documents, (4) apply the origin changes (HSET
and HDEL) in one MULTI/EXEC. The runtime retries ``write_batch`` (and Kafka
redelivers the batch) until it has returned, so:

- crash/error before (4): Redis still holds the origins from *before* the
  batch; the retry recomputes exactly the same documents (all already in the
  outbox's ``seen`` set, so nothing is enqueued twice) and then applies (4);
- crash after (4): the retry reads the origins from *after* the batch; the
  documents it computes may differ, but their identifiers are already seen and
  nothing is enqueued; re-applying the changes of the redelivered alerts, in
  order, ends in the same state.

Writing an origin *before* the enqueue would not be safe: a batch
``[resolved(old alarm), firing(new alarm)]`` of one key would store the new
origin, and after a crash the retried Cancel would reference the new alarm.

Ordering: documents are enqueued in batch order (the pipeline sorts a batch by
event time) and consecutive batches in order, and the outbox claims by due
time, then identifier (``<org>_<event time>_<alert_id>``). With the default
``concurrency=1`` the happy path therefore POSTs in enqueue order; a retried
document (backoff with jitter) can be overtaken by a later one, so receivers
must order by ``sent``/``references`` as CAP intends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import redis.asyncio as aioredis

from sinks.base import Alert
from sinks.cap import CapConfig, CapReference, alert_to_cap, cap_identifier, cap_reference
from sinks.outbox import AiohttpTransport, Backoff, Deliverer, Outbox, OutboxItem

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cap+xml"


@dataclass
class CapCounters:
    """Plain counters; ``hook(event, sink)`` is called on each increment (wire Prometheus there)."""

    enqueued: int = 0  # documents new to the outbox
    promoted: int = 0  # updated without a known origin, sent as an Alert
    orphan_resolved: int = 0  # resolved without a known origin, skipped
    rejected: int = 0  # alerts CAP cannot carry, skipped
    hook: Callable[[str, str], None] | None = field(default=None, repr=False)

    def bump(self, event: str, sink: str, n: int = 1) -> None:
        setattr(self, event, getattr(self, event) + n)
        if self.hook is not None:
            for _ in range(n):
                self.hook(event, sink)


def origin_key(namespace: str, sink: str) -> str:
    return f"cityops:{namespace}:cap:{sink}:origin"


def alert_key(alert_id: str) -> str:
    """The outbox dedup key of one alert (as in sinks/webhook.py)."""
    return f"alert:{alert_id}"


def parse_reference(raw: bytes | str) -> CapReference:
    text = raw.decode() if isinstance(raw, bytes) else raw
    sender, identifier, sent = text.split(",")  # CapReference tokens hold no commas
    return CapReference(sender, identifier, sent)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one batch does: the documents to enqueue and the net origin changes
    (alarm_key -> new reference, or None to forget it)."""

    items: list[OutboxItem]
    origins: dict[str, CapReference | None]


class CapSink:
    """AlertSink: ``write_batch`` returns once the CAP documents are durable in
    the outbox; the deliverer (started by :meth:`start`) POSTs them."""

    def __init__(
        self, client: aioredis.Redis, outbox: Outbox, config: CapConfig, *, namespace: str,
        deliverer: Deliverer | None = None, counters: CapCounters | None = None,
    ) -> None:
        self.redis, self.outbox, self.config, self.deliverer = client, outbox, config, deliverer
        self.origin_key = origin_key(namespace, outbox.sink)
        self.counters = counters or CapCounters()
        self._lock = asyncio.Lock()  # batches of one sink apply their origin changes one at a time

    @classmethod
    def create(
        cls, client: aioredis.Redis, namespace: str, name: str, url: str, config: CapConfig, *,
        timeout_s: float = 10.0, max_attempts: int = 8, backoff: Backoff = Backoff(), concurrency: int = 1,
        poll_s: float = 1.0, headers: Mapping[str, str] | None = None,
    ) -> CapSink:
        outbox = Outbox(client, namespace, name)
        deliverer = Deliverer(outbox, AiohttpTransport(url), timeout_s=timeout_s, max_attempts=max_attempts,
                              backoff=backoff, concurrency=concurrency, poll_s=poll_s,
                              headers={**(headers or {}), "Content-Type": CONTENT_TYPE})
        return cls(client, outbox, config, namespace=namespace, deliverer=deliverer)

    def start(self, *, listen: bool = False) -> None:
        if self.deliverer is not None:
            self.deliverer.start(listen=listen)

    async def origin(self, alarm_key: str) -> CapReference | None:
        raw = await self.redis.hget(self.origin_key, alarm_key)
        return None if raw is None else parse_reference(raw)

    async def origins(self, alarm_keys: Sequence[str]) -> dict[str, CapReference | None]:
        """The stored origin of each of ``alarm_keys`` (None: unknown)."""
        if not alarm_keys:
            return {}
        raw = await self.redis.hmget(self.origin_key, list(alarm_keys))
        return {key: None if value is None else parse_reference(value)
                for key, value in zip(alarm_keys, raw, strict=True)}

    def plan(self, alerts: Sequence[Alert], origins: dict[str, CapReference | None], seen: set[str]) -> Plan:
        """The documents of the alerts not in ``seen`` and the origin changes of
        all of them, given the stored ``origins``; counts promotions and skips."""
        view = dict(origins)
        changes: dict[str, CapReference | None] = {}
        items: list[OutboxItem] = []
        queued: set[str] = set()
        sink = self.outbox.sink
        for alert in alerts:
            key = alert_key(alert.alert_id)
            fresh = key not in seen and key not in queued
            origin = view.get(alert.alarm_key)
            try:
                if alert.status == "resolved" and origin is None:
                    if fresh:
                        self.counters.bump("orphan_resolved", sink)
                        log.warning("cap %s: %s resolved with no known CAP Alert; no Cancel sent",
                                    sink, alert.alarm_key)
                    continue
                if alert.status == "firing" or origin is None:  # an updated with no origin: a new Alert
                    promoted = alert.status != "firing"
                    source = msgspec.structs.replace(alert, status="firing") if promoted else alert
                    reference = cap_reference(source, self.config)
                    document = alert_to_cap(source, self.config) if fresh else b""
                    if promoted and fresh:
                        self.counters.bump("promoted", sink)
                    view[alert.alarm_key] = changes[alert.alarm_key] = reference
                else:
                    document = alert_to_cap(alert, self.config, references=[origin]) if fresh else b""
                    if alert.status == "resolved":
                        view[alert.alarm_key] = changes[alert.alarm_key] = None
                identifier = cap_identifier(alert, self.config)
            except ValueError as exc:
                if fresh:
                    self.counters.bump("rejected", sink)
                    log.error("cap %s: alert %s cannot be sent as CAP: %s", sink, alert.alert_id, exc)
                continue
            if fresh:
                queued.add(key)
                items.append(OutboxItem(identifier, document, (key,)))
        return Plan(items, changes)

    async def write_batch(self, alerts: Sequence[Alert], starts: Mapping[str, int] | None = None) -> None:
        """Enqueue one CAP document per alert not enqueued before, then record the
        alarms' origins (the module docstring says why in this order). ``starts`` (the
        alarms' start times, for webhooks) is not used: CAP's onset is each reading's time."""
        if not alerts:
            return
        async with self._lock:
            alarm_keys = list(dict.fromkeys(alert.alarm_key for alert in alerts))
            dedup_keys = [alert_key(alert.alert_id) for alert in alerts]
            # (1) in one round trip: the origins and which alerts the outbox already has
            pipe = self.redis.pipeline(transaction=False)
            pipe.hmget(self.origin_key, alarm_keys)
            pipe.zmscore(self.outbox.seen_key, dedup_keys)
            raw_origins, scores = await pipe.execute()
            origins = {key: None if raw is None else parse_reference(raw)
                       for key, raw in zip(alarm_keys, raw_origins, strict=True)}
            seen = {key for key, score in zip(dedup_keys, scores, strict=True) if score is not None}
            plan = self.plan(alerts, origins, seen)
            if plan.items:
                added = await self.outbox.enqueue(plan.items)
                if added:
                    self.counters.bump("enqueued", self.outbox.sink, added)
                    if self.deliverer is not None:
                        self.deliverer.wake()
            await self.record_origins(plan.origins)

    async def record_origins(self, changes: dict[str, CapReference | None]) -> None:
        """Set (a reference) or forget (None) the origins, in one MULTI/EXEC."""
        if not changes:
            return
        pipe = self.redis.pipeline(transaction=True)
        gone = [key for key, ref in changes.items() if ref is None]
        kept = {key: str(ref) for key, ref in changes.items() if ref is not None}
        if kept:
            pipe.hset(self.origin_key, mapping=kept)  # type: ignore[arg-type]
        if gone:
            pipe.hdel(self.origin_key, *gone)
        await pipe.execute()

    async def write_repeat(self, due: Sequence[tuple[Alert, int]], starts: Mapping[str, int] | None = None) -> None:
        """CAP has no "reminder" message (a repeated Alert would be a new alarm):
        repeats go to webhook receivers only; topology.yaml refuses ``repeat`` here."""
        if due:
            log.warning("cap %s: %d repeat(s) ignored: CAP receivers take no repeats", self.outbox.sink, len(due))

    async def close(self) -> None:
        if self.deliverer is not None:
            await self.deliverer.close()
