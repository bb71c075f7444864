"""sinks.cap_sink: CAP 1.2 documents through the outbox, against a real private
redis-server and a real local HTTP receiver (the fixtures of test_outbox.py),
every delivered document validated against the OASIS schema in ../shared."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import msgspec
import pytest
import redis.asyncio as aioredis
import xmlschema
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError

from sinks.base import Alert
from sinks.cap import CAP_NS, CapConfig, alert_to_cap, cap_identifier, cap_reference
from sinks.cap_sink import CONTENT_TYPE, CapSink, origin_key
from sinks.outbox import Backoff, Outbox
from tests.shared import shared_dir
from tests.unit.test_outbox import Receiver, RedisServer, client, redis_server  # noqa: F401  (fixtures)

SCHEMA_PATH = shared_dir() / "schemas" / "cap" / "CAP-v1.2.xsd"
NS = {"cap": CAP_NS}
CONFIG = CapConfig(sender="cityops@dg.gov.cn", sender_name="东莞市城市运行管理中心", org_code="44190000000000")
FAST_BACKOFF = Backoff(base_s=0.05, cap_s=0.2)


class CapReceiver(Receiver):
    """test_outbox's receiver, accepting CAP instead of JSON; records the Content-Type too."""

    def __init__(self) -> None:
        super().__init__()
        self.content_types: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if self.mode == "fail":
            return web.Response(status=500)
        self.content_types.append(request.headers.get("Content-Type", ""))
        self.received.append((request.headers["Idempotency-Key"], body))
        return web.Response(status=200)


@pytest.fixture
async def receiver() -> AsyncIterator[CapReceiver]:
    rec = CapReceiver()
    await rec.up()
    yield rec
    await rec.down()


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    assert SCHEMA_PATH.is_file(), f"the OASIS CAP schema is missing at {SCHEMA_PATH}"
    return xmlschema.XMLSchema(str(SCHEMA_PATH))


@pytest.fixture
async def sinks() -> AsyncIterator[list[CapSink]]:
    made: list[CapSink] = []
    yield made
    for sink in made:
        await sink.close()


def make_alert(alert_id: str, status: str = "firing", *, sensor: str = "dg-air-001", minute: int = 0,
               **changes: Any) -> Alert:
    base = Alert(
        alert_id=alert_id, alarm_key=f"{sensor}:pm25_high", status=status,  # type: ignore[arg-type]
        severity="critical", level="red", rule="pm25_high", kind="air", sensor_id=sensor, site_id="南城站",
        district="南城街道", lat=23.0205, lon=113.7518, quantity="pm25", value=312.5, threshold=250.0, score=312.5,
        event_ts=f"2026-11-26T08:{minute:02d}:00.123+08:00", event_time_ms=1_795_651_200_123 + 60_000 * minute,
        detected_at=f"2026-11-26T08:{minute:02d}:01.456+08:00", departments=["environment"],
        summary="[critical] PM2.5 high at 南城站",
    )
    return msgspec.structs.replace(base, **changes)


def lifecycle(prefix: str, sensor: str = "dg-air-001") -> tuple[Alert, Alert, Alert]:
    """firing (red) -> updated (orange) -> resolved, one alarm."""
    return (make_alert(f"{prefix}-f", "firing", sensor=sensor, minute=0),
            make_alert(f"{prefix}-u", "updated", sensor=sensor, minute=5, severity="major", level="orange"),
            make_alert(f"{prefix}-r", "resolved", sensor=sensor, minute=30, severity="major", level="orange"))


def ident(alert: Alert) -> str:
    return cap_identifier(alert, CONFIG)


def fields(doc: bytes) -> tuple[str | None, str | None, str | None]:
    """(identifier, msgType, references) of a CAP document."""
    root = ET.fromstring(doc)
    return (root.findtext("cap:identifier", namespaces=NS), root.findtext("cap:msgType", namespaces=NS),
            root.findtext("cap:references", namespaces=NS))


async def stored(client: aioredis.Redis, sink: CapSink) -> dict[str, bytes]:  # noqa: F811
    raw = cast(dict[bytes, bytes], await client.hgetall(sink.outbox.items_key))
    return {k.decode(): v for k, v in raw.items()}


async def origin_table(client: aioredis.Redis, sink: CapSink) -> dict[str, str]:  # noqa: F811
    raw = cast(dict[bytes, bytes], await client.hgetall(sink.origin_key))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def wait_until(condition: Callable[[], Awaitable[bool] | bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if await result if isinstance(result, Awaitable) else result:
            return
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.01)


def fast(client: aioredis.Redis, receiver: Receiver, *, max_attempts: int = 8) -> CapSink:  # noqa: F811
    """The sink as the runtime would make it, with short timeouts, backoff and poll interval."""
    return CapSink.create(client, "t", "cap-feed", receiver.url, CONFIG, timeout_s=2.0, max_attempts=max_attempts,
                          backoff=FAST_BACKOFF, poll_s=0.02)


def bare(client: aioredis.Redis, name: str = "cap") -> CapSink:  # noqa: F811
    """A sink without a deliverer: what it enqueues stays in the outbox to be inspected."""
    return CapSink(client, Outbox(client, "t", name), CONFIG, namespace="t")


@pytest.mark.parametrize("one_batch", [False, True], ids=["three-batches", "one-batch"])
async def test_firing_updated_resolved_arrive_in_order_as_valid_alert_update_cancel(
        client: aioredis.Redis, receiver: CapReceiver, schema: xmlschema.XMLSchema,  # noqa: F811
        sinks: list[CapSink], one_batch: bool) -> None:
    sink = fast(client, receiver)
    sinks.append(sink)
    sink.start()
    firing, updated, resolved = lifecycle("a1")
    batches = [[firing, updated, resolved]] if one_batch else [[firing], [updated], [resolved]]
    for batch in batches:
        await sink.write_batch(batch)
    await wait_until(lambda: len(receiver.received) >= 3, "three CAP documents at the receiver")
    await sink.close()

    original = str(cap_reference(firing, CONFIG))
    assert original == f"{CONFIG.sender},{ident(firing)},2026-11-26T08:00:01+08:00"
    assert [key for key, _ in receiver.received] == [ident(firing), ident(updated), ident(resolved)]
    assert receiver.content_types == [CONTENT_TYPE] * 3
    for _, body in receiver.received:
        schema.validate(body.decode("utf-8"))
    got = [fields(body) for _, body in receiver.received]
    assert got == [(ident(firing), "Alert", None), (ident(updated), "Update", original),
                   (ident(resolved), "Cancel", original)]
    assert receiver.received[1][1] == alert_to_cap(updated, CONFIG, references=[cap_reference(firing, CONFIG)])
    assert await sink.outbox.pending() == 0 and await sink.outbox.dead_letters() == []
    assert await origin_table(client, sink) == {}, "the Cancel forgets the alarm's origin"
    assert sink.counters.enqueued == 3


async def test_origin_is_recorded_on_firing_and_removed_after_the_cancel(client: aioredis.Redis) -> None:  # noqa: F811
    sink = bare(client)
    assert sink.origin_key == origin_key("t", "cap") == "cityops:t:cap:cap:origin"
    firing, updated, resolved = lifecycle("a1")
    await sink.write_batch([firing])
    assert await origin_table(client, sink) == {firing.alarm_key: str(cap_reference(firing, CONFIG))}
    await sink.write_batch([updated])
    assert await origin_table(client, sink) == {firing.alarm_key: str(cap_reference(firing, CONFIG))}
    await sink.write_batch([resolved])
    assert await origin_table(client, sink) == {}
    assert set(await stored(client, sink)) == {ident(firing), ident(updated), ident(resolved)}


async def test_a_redelivered_batch_adds_nothing(client: aioredis.Redis) -> None:  # noqa: F811
    sink = bare(client)
    firing, updated, resolved = lifecycle("a1")
    other = lifecycle("b1", sensor="dg-air-002")
    await sink.write_batch([firing, updated, other[0]])
    before = await stored(client, sink)
    assert len(before) == 3
    await sink.write_batch([firing, updated, other[0]])  # the same batch again
    await sink.write_batch([updated, other[0]])  # other boundaries
    assert await stored(client, sink) == before
    assert sink.counters.enqueued == 3 and sink.counters.promoted == 0
    await sink.write_batch([updated, resolved])  # a redelivered alert, then a new one
    after = await stored(client, sink)
    assert set(after) - set(before) == {ident(resolved)}
    assert fields(after[ident(resolved)])[2] == str(cap_reference(firing, CONFIG))
    assert await origin_table(client, sink) == {other[0].alarm_key: str(cap_reference(other[0], CONFIG))}


async def test_a_redelivered_batch_after_delivery_adds_nothing(
        client: aioredis.Redis, receiver: CapReceiver, sinks: list[CapSink]) -> None:  # noqa: F811
    sink = fast(client, receiver)
    sinks.append(sink)
    sink.start()
    batch = list(lifecycle("a1"))
    await sink.write_batch(batch)
    await wait_until(lambda: len(receiver.received) == 3, "three CAP documents at the receiver")
    await sink.write_batch(batch)
    assert await sink.outbox.pending() == 0, "a redelivered batch was enqueued again"
    assert sink.counters.enqueued == 3 and sink.counters.orphan_resolved == 0


async def test_a_crash_between_enqueue_and_origin_write_is_repaired_by_the_redelivery(
        redis_server: RedisServer, client: aioredis.Redis) -> None:  # noqa: F811
    sink = bare(client)
    first, _, resolved = lifecycle("a1")
    await sink.write_batch([first])
    refire = make_alert("a2-f", "firing", minute=40)
    batch = [resolved, refire]  # the alarm clears and fires again within one batch
    # the first attempt enqueues, then dies before recording the origins
    plan = sink.plan(batch, await sink.origins([first.alarm_key]), set())
    assert await sink.outbox.enqueue(plan.items) == 2
    assert await origin_table(client, sink) == {first.alarm_key: str(cap_reference(first, CONFIG))}
    other = aioredis.Redis.from_url(redis_server.url)  # the restarted worker, redelivered the batch
    try:
        await bare(other).write_batch(batch)
    finally:
        await other.aclose()
    docs = await stored(client, sink)
    assert set(docs) == {ident(first), ident(resolved), ident(refire)}
    assert fields(docs[ident(resolved)]) == (ident(resolved), "Cancel", str(cap_reference(first, CONFIG)))
    assert fields(docs[ident(refire)]) == (ident(refire), "Alert", None)
    assert await origin_table(client, sink) == {first.alarm_key: str(cap_reference(refire, CONFIG))}


@pytest.mark.parametrize("failing", ["enqueue", "record_origins"])
async def test_a_redis_error_mid_batch_then_the_retry_gives_the_right_references(
        client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:  # noqa: F811
    """The runtime retries write_batch after a RedisError: whichever write failed,
    the retried batch enqueues each document once, with the right references."""
    sink = bare(client)
    first, _, resolved = lifecycle("a1")
    await sink.write_batch([first])
    refire = make_alert("a2-f", "firing", minute=40)
    batch = [resolved, refire]
    target: Any = sink.outbox if failing == "enqueue" else sink
    real = getattr(target, failing)
    calls = 0

    async def fail_once(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RedisConnectionError("connection lost")
        return await real(*args)

    monkeypatch.setattr(target, failing, fail_once)
    with pytest.raises(RedisConnectionError):
        await sink.write_batch(batch)
    await sink.write_batch(batch)
    assert calls == 2
    docs = await stored(client, sink)
    assert set(docs) == {ident(first), ident(resolved), ident(refire)}
    assert fields(docs[ident(resolved)]) == (ident(resolved), "Cancel", str(cap_reference(first, CONFIG)))
    assert fields(docs[ident(refire)]) == (ident(refire), "Alert", None)
    assert await origin_table(client, sink) == {first.alarm_key: str(cap_reference(refire, CONFIG))}
    assert sink.counters.enqueued == 3


async def test_the_origin_survives_a_new_sink_instance(redis_server: RedisServer, client: aioredis.Redis,  # noqa: F811
                                                      receiver: CapReceiver, sinks: list[CapSink],
                                                      schema: xmlschema.XMLSchema) -> None:
    firing, updated, resolved = lifecycle("a1")
    before = aioredis.Redis.from_url(redis_server.url)
    first = fast(before, receiver)
    await first.write_batch([firing])  # never started: the worker goes away before delivering
    await first.close()
    await before.aclose()

    sink = fast(client, receiver)
    sinks.append(sink)
    assert await sink.origin(firing.alarm_key) == cap_reference(firing, CONFIG)
    sink.start()
    await sink.write_batch([updated])
    await sink.write_batch([resolved])
    await wait_until(lambda: len(receiver.received) == 3, "the pending Alert and the new Update and Cancel")
    original = str(cap_reference(firing, CONFIG))
    assert [fields(body) for _, body in receiver.received] == [
        (ident(firing), "Alert", None), (ident(updated), "Update", original), (ident(resolved), "Cancel", original)]
    for _, body in receiver.received:
        schema.validate(body.decode("utf-8"))
    assert sink.counters.promoted == 0


async def test_resolved_with_unknown_origin_is_skipped_and_counted(client: aioredis.Redis) -> None:  # noqa: F811
    events: list[tuple[str, str]] = []
    sink = bare(client)
    sink.counters.hook = lambda event, name: events.append((event, name))
    _, _, resolved = lifecycle("a1")
    other = make_alert("b1-f", sensor="dg-air-002")
    await sink.write_batch([resolved, other])
    assert set(await stored(client, sink)) == {ident(other)}, "a Cancel naming nothing was enqueued"
    assert sink.counters.orphan_resolved == 1 and sink.counters.enqueued == 1
    assert events == [("orphan_resolved", "cap"), ("enqueued", "cap")]
    assert await origin_table(client, sink) == {other.alarm_key: str(cap_reference(other, CONFIG))}


async def test_updated_with_unknown_origin_is_sent_as_a_new_alert_and_becomes_the_origin(
        client: aioredis.Redis, schema: xmlschema.XMLSchema, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    sink = bare(client)
    _, updated, resolved = lifecycle("a1")

    async def lost(changes: object) -> None:
        raise RedisConnectionError("connection lost")

    with monkeypatch.context() as patch:  # enqueued, but the origin not recorded: the runtime retries
        patch.setattr(sink, "record_origins", lost)
        with pytest.raises(RedisConnectionError):
            await sink.write_batch([updated])
    assert await sink.origin(updated.alarm_key) is None
    await sink.write_batch([updated])
    assert sink.counters.promoted == 1, "the retry counted the promotion twice"
    docs = await stored(client, sink)
    assert list(docs) == [ident(updated)]
    schema.validate(docs[ident(updated)].decode("utf-8"))
    promoted = msgspec.structs.replace(updated, status="firing")
    assert fields(docs[ident(updated)]) == (ident(updated), "Alert", None)
    assert docs[ident(updated)] == alert_to_cap(promoted, CONFIG)
    assert sink.counters.promoted == 1
    await sink.write_batch([updated])  # redelivered: neither enqueued nor counted again
    assert sink.counters.promoted == 1 and len(await stored(client, sink)) == 1
    await sink.write_batch([resolved])
    cancel = (await stored(client, sink))[ident(resolved)]
    schema.validate(cancel.decode("utf-8"))
    assert fields(cancel) == (ident(resolved), "Cancel", str(cap_reference(promoted, CONFIG)))
    assert await origin_table(client, sink) == {}


async def test_an_alert_cap_cannot_carry_is_skipped_and_counted(client: aioredis.Redis) -> None:  # noqa: F811
    sink = bare(client)
    bad = make_alert("a1-f", value=float("nan"))
    good = make_alert("b1-f", sensor="dg-air-002")
    await sink.write_batch([bad, good])
    assert set(await stored(client, sink)) == {ident(good)}
    assert sink.counters.rejected == 1
    assert await sink.origin(bad.alarm_key) is None, "a rejected firing opened an alarm"


async def test_receiver_down_then_back_every_document_arrives_once(
        client: aioredis.Redis, receiver: CapReceiver, sinks: list[CapSink],  # noqa: F811
        schema: xmlschema.XMLSchema) -> None:
    sink = fast(client, receiver, max_attempts=1000)
    sinks.append(sink)
    deliverer = sink.deliverer
    assert deliverer is not None
    await receiver.down()
    sink.start()
    alarms = [lifecycle(f"s{n}", sensor=f"dg-air-00{n}") for n in range(4)]
    for step in range(3):
        await sink.write_batch([alarm[step] for alarm in alarms])
    expected = {ident(alert) for alarm in alarms for alert in alarm}
    assert len(expected) == 12 and await sink.outbox.pending() == 12

    async def all_failed() -> bool:
        attempts = await client.hgetall(sink.outbox.attempts_key)
        return len(attempts) == 12 and all(int(n) >= 2 for n in attempts.values())

    await wait_until(all_failed, "every document to fail twice while the receiver is down")
    assert receiver.received == []
    await receiver.up()
    await wait_until(lambda: len(receiver.received) >= 12, "the backlog to arrive once the receiver is back")
    await sink.close()
    assert Counter(key for key, _ in receiver.received) == Counter(expected)
    for _, body in receiver.received:
        schema.validate(body.decode("utf-8"))
    by_id = {key: fields(body) for key, body in receiver.received}
    for firing, updated, resolved in alarms:
        original = str(cap_reference(firing, CONFIG))
        assert by_id[ident(updated)][1:] == ("Update", original)
        assert by_id[ident(resolved)][1:] == ("Cancel", original)
    assert await sink.outbox.pending() == 0 and await sink.outbox.dead_letters() == []
    assert deliverer.counters.delivered == 12 and deliverer.counters.retried >= 24
