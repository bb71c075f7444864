"""sinks.outbox against a real redis-server (a private one per module) and a real
local HTTP receiver (aiohttp.web on 127.0.0.1) that can be told to fail."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from aiohttp import web

from sinks.outbox import AiohttpTransport, Backoff, Counters, Deliverer, Outbox, OutboxItem

REDIS_SERVER = "/usr/bin/redis-server"
T0 = 1_800_000_000_000  # the fake clock's start, epoch ms


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not self._pong():
            assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, f"redis-server on :{self.port} did not answer PING within 20 s"
            time.sleep(0.02)

    def _pong(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.fail(f"{REDIS_SERVER} is not installed: run `make test` (`cityops stack up` installs Redis)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.kill()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    conn = aioredis.Redis.from_url(redis_server.url)
    await conn.flushall()
    yield conn
    await conn.aclose()


class FakeClock:
    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class Receiver:
    """A webhook receiver on a fixed port. ``mode``: ok | fail (500) | hang | reject (400) | limit (429)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.mode = "ok"
        self.delay_s = 0.0
        self.received: list[tuple[str, bytes]] = []  # (Idempotency-Key, body), 2xx answers only
        self.requests = 0
        self.in_flight = self.max_in_flight = 0
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()  # ends the hung requests

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.read()
            if self.mode == "hang":
                await asyncio.wait_for(self._release.wait(), 30)
            await asyncio.sleep(self.delay_s)
            if self.mode == "fail":
                return web.Response(status=500)
            if self.mode == "reject":
                return web.Response(status=400)
            if self.mode == "limit":
                return web.Response(status=429, headers={"Retry-After": "30"})
            assert request.headers["Content-Type"] == "application/json"
            self.received.append((request.headers["Idempotency-Key"], body))
            return web.Response(status=200)
        finally:
            self.in_flight -= 1

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._release = asyncio.Event()

    async def down(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    await rec.up()
    yield rec
    await rec.down()


@pytest.fixture
async def transports() -> AsyncIterator[list[AiohttpTransport]]:
    made: list[AiohttpTransport] = []
    yield made
    for transport in made:
        await transport.close()


Factory = Callable[..., Deliverer]


@pytest.fixture
def make_deliverer(transports: list[AiohttpTransport], receiver: Receiver) -> Factory:
    def make(outbox: Outbox, **kwargs: object) -> Deliverer:
        transport = AiohttpTransport(receiver.url)
        transports.append(transport)
        options: dict[str, object] = {"rng": FixedRandom(0.5), "backoff": Backoff(base_s=1.0, cap_s=8.0),
                                      "timeout_s": 2.0, "poll_s": 0.01}
        options.update(kwargs)
        return Deliverer(outbox, transport, **options)  # type: ignore[arg-type]
    return make


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.01)


async def round_trip(deliverer: Deliverer) -> int:
    """One claim-and-deliver round, waited for to the end."""
    started = await deliverer.run_once()
    await deliverer.drain()
    return started


def item(n: int) -> OutboxItem:
    return OutboxItem(f"id-{n}", json.dumps({"n": n, "text": "浓度超标"}).encode(), (f"alert:a{n}",))


async def due_ms(client: aioredis.Redis, outbox: Outbox, item_id: str) -> int | None:
    score = await client.zscore(outbox.due_key, item_id)
    return None if score is None else int(score)


async def test_delivers_with_idempotency_key_and_removes(client: aioredis.Redis, receiver: Receiver,
                                                         make_deliverer: Factory) -> None:
    outbox = Outbox(client, "t", "hook", clock_ms=FakeClock())
    deliverer = make_deliverer(outbox)
    assert await outbox.enqueue([item(1)]) == 1
    assert await outbox.pending() == 1
    assert await round_trip(deliverer) == 1
    assert receiver.received == [("id-1", item(1).body)]
    assert await outbox.pending() == 0
    assert await client.hlen(outbox.items_key) == 0 and await client.hlen(outbox.attempts_key) == 0
    assert deliverer.counters.delivered == 1


async def test_enqueue_is_idempotent_before_and_after_delivery(client: aioredis.Redis, receiver: Receiver,
                                                               make_deliverer: Factory) -> None:
    outbox = Outbox(client, "t", "hook", clock_ms=FakeClock())
    assert await outbox.enqueue([item(1), item(2)]) == 2
    assert await outbox.enqueue([item(2), item(1), item(3)]) == 1  # a redelivered batch plus one new item
    assert await outbox.pending() == 3
    assert await outbox.seen(["alert:a1", "alert:a3", "alert:a9", "id-2"]) == {"alert:a1", "alert:a3", "id-2"}
    await round_trip(make_deliverer(outbox))
    assert await outbox.enqueue([item(1), item(2), item(3)]) == 0  # already delivered: still known
    assert await round_trip(make_deliverer(outbox)) == 0
    assert sorted(key for key, _ in receiver.received) == ["id-1", "id-2", "id-3"]


async def test_seen_entries_expire_after_the_retention(client: aioredis.Redis) -> None:
    clock = FakeClock()
    outbox = Outbox(client, "t", "hook", clock_ms=clock, seen_retention_ms=1000)
    await outbox.enqueue([item(1)])
    clock.now_ms += 1001
    await outbox.enqueue([item(2)])  # trims the seen set
    assert await outbox.seen(["id-1", "alert:a1", "id-2"]) == {"id-2"}
    assert await outbox.enqueue([item(1)]) == 0, "a still-pending item is never duplicated"
    assert await outbox.pending() == 2


async def test_retries_follow_capped_exponential_backoff_with_full_jitter(
        client: aioredis.Redis, receiver: Receiver, make_deliverer: Factory) -> None:
    clock = FakeClock()
    outbox = Outbox(client, "t", "hook", clock_ms=clock)
    deliverer = make_deliverer(outbox, max_attempts=10)  # rng 0.5, base 1 s, cap 8 s
    receiver.mode = "fail"
    await outbox.enqueue([item(1)])
    gaps = []
    for _ in range(5):
        assert await round_trip(deliverer) == 1
        next_ms = await due_ms(client, outbox, "id-1")
        assert next_ms is not None
        gaps.append(next_ms - clock.now_ms)
        clock.now_ms = next_ms - 1
        assert await round_trip(deliverer) == 0, "not due before its time"
        clock.now_ms = next_ms
    assert gaps == [500, 1000, 2000, 4000, 4000]  # 0.5 * min(8, 1 * 2**(n-1)) s
    assert await client.hget(outbox.errors_key, "id-1") == b"HTTP 500"
    assert await client.hget(outbox.attempts_key, "id-1") == b"5"
    assert deliverer.counters.retried == 5 and receiver.requests == 5
    receiver.mode = "ok"
    await round_trip(deliverer)
    assert [key for key, _ in receiver.received] == ["id-1"]


def test_full_jitter_spans_zero_to_the_capped_ceiling() -> None:
    backoff = Backoff(base_s=2.0, cap_s=60.0)
    assert backoff.delay_s(1, FixedRandom(0.0)) == 0.0
    assert backoff.delay_s(3, FixedRandom(0.999)) == pytest.approx(0.999 * 8.0)
    assert backoff.delay_s(40, FixedRandom(0.999)) == pytest.approx(0.999 * 60.0)
    rng = random.Random(7)
    delays = [backoff.delay_s(2, rng) for _ in range(2000)]
    assert 0.0 <= min(delays) < 0.1 and 3.9 < max(delays) < 4.0


async def test_timeout_is_a_retryable_failure(client: aioredis.Redis, receiver: Receiver,
                                              make_deliverer: Factory) -> None:
    clock = FakeClock()
    outbox = Outbox(client, "t", "hook", clock_ms=clock)
    deliverer = make_deliverer(outbox, timeout_s=0.2)
    receiver.mode = "hang"
    await outbox.enqueue([item(1)])
    t = time.monotonic()
    await round_trip(deliverer)
    assert time.monotonic() - t < 5
    assert await due_ms(client, outbox, "id-1") == T0 + 500
    error = await client.hget(outbox.errors_key, "id-1")
    assert error is not None and b"Timeout" in error


async def test_retry_after_is_honoured(client: aioredis.Redis, receiver: Receiver, make_deliverer: Factory) -> None:
    outbox = Outbox(client, "t", "hook", clock_ms=FakeClock())
    deliverer = make_deliverer(outbox, backoff=Backoff(base_s=1.0, cap_s=300.0))
    receiver.mode = "limit"
    await outbox.enqueue([item(1)])
    await round_trip(deliverer)
    assert await due_ms(client, outbox, "id-1") == T0 + 30_000


async def test_dead_letter_after_max_attempts(client: aioredis.Redis, receiver: Receiver,
                                              make_deliverer: Factory) -> None:
    clock = FakeClock()
    outbox = Outbox(client, "t", "hook", clock_ms=clock)
    deliverer = make_deliverer(outbox, max_attempts=3)
    receiver.mode = "fail"
    await outbox.enqueue([item(1), item(2)])
    for _ in range(3):
        assert await round_trip(deliverer) == 2
        clock.now_ms += 60_000
    assert await round_trip(deliverer) == 0
    dead = await outbox.dead_letters()
    assert [(d.id, d.body, d.attempts, d.error) for d in dead] == [
        ("id-1", item(1).body, 3, "HTTP 500"), ("id-2", item(2).body, 3, "HTTP 500")]
    assert dead[0].dead_at_ms == T0 + 120_000
    assert await outbox.pending() == 0 and await client.hlen(outbox.items_key) == 0
    assert receiver.requests == 6 and deliverer.counters.dead == 2
    assert await outbox.enqueue([item(1)]) == 0, "a redelivered batch does not resurrect a dead item"


async def test_a_rejected_payload_is_dead_at_once(client: aioredis.Redis, receiver: Receiver,
                                                  make_deliverer: Factory) -> None:
    outbox = Outbox(client, "t", "hook", clock_ms=FakeClock())
    receiver.mode = "reject"
    await outbox.enqueue([item(1)])
    await round_trip(make_deliverer(outbox))
    assert [(d.id, d.attempts, d.error) for d in await outbox.dead_letters()] == [("id-1", 1, "HTTP 400")]


async def test_outage_then_recovery_delivers_every_item_exactly_once(
        client: aioredis.Redis, receiver: Receiver, make_deliverer: Factory) -> None:
    clock = FakeClock()
    outbox = Outbox(client, "t", "hook", clock_ms=clock)
    deliverer = make_deliverer(outbox, max_attempts=50, concurrency=4)
    await receiver.down()
    deliverer.start()
    try:
        for first in range(0, 40, 8):  # overlapping batches, as after a redelivery
            await outbox.enqueue([item(n) for n in range(max(0, first - 3), first + 8)])
            deliverer.wake()
        assert await outbox.pending() == 40

        async def all_failed_twice() -> bool:
            counts = await client.hvals(outbox.attempts_key)
            if len(counts) == 40 and all(int(c) >= 2 for c in counts):
                return True
            clock.now_ms += 1000  # let the retries come due
            return False

        await wait_until(all_failed_twice, "every item to fail twice while the receiver is down")
        assert receiver.received == []
        await receiver.up()
        clock.now_ms += 60_000

        async def all_delivered() -> bool:
            clock.now_ms += 1000
            return await outbox.pending() == 0

        await wait_until(all_delivered, "the backlog to drain after the receiver is back")
    finally:
        await deliverer.stop()
    assert Counter(key for key, _ in receiver.received) == Counter(f"id-{n}" for n in range(40))
    assert receiver.max_in_flight <= 4
    assert await outbox.dead_letters() == []


async def test_concurrency_is_bounded(client: aioredis.Redis, receiver: Receiver, make_deliverer: Factory) -> None:
    outbox = Outbox(client, "t", "hook", clock_ms=FakeClock())
    deliverer = make_deliverer(outbox, concurrency=2)
    receiver.delay_s = 0.05
    await outbox.enqueue([item(n) for n in range(8)])
    deliverer.start()
    try:
        await wait_until(lambda: _eq(len(receiver.received), 8), "8 deliveries")
    finally:
        await deliverer.stop()
    assert receiver.max_in_flight == 2


async def _eq(a: int, b: int) -> bool:
    return a == b


async def test_restart_picks_up_pending_items(redis_server: RedisServer, client: aioredis.Redis,
                                              receiver: Receiver, make_deliverer: Factory) -> None:
    first = aioredis.Redis.from_url(redis_server.url)
    await Outbox(first, "t", "hook", clock_ms=FakeClock()).enqueue([item(1), item(2)])
    await first.aclose()  # the worker goes away before delivering
    outbox = Outbox(client, "t", "hook", clock_ms=FakeClock())
    deliverer = make_deliverer(outbox)
    deliverer.start()
    try:
        await wait_until(lambda: _eq(len(receiver.received), 2), "the pending items after a restart")
    finally:
        await deliverer.stop()
    assert sorted(key for key, _ in receiver.received) == ["id-1", "id-2"]


async def test_an_item_in_flight_when_the_worker_died_is_retried_after_its_lease(
        client: aioredis.Redis, receiver: Receiver, make_deliverer: Factory) -> None:
    clock = FakeClock()
    outbox = Outbox(client, "t", "hook", clock_ms=clock)
    await outbox.enqueue([item(1)])
    [claimed] = await outbox.claim(10, lease_ms=25_000, max_attempts=8)  # ...and the worker dies
    assert claimed.attempt == 1
    deliverer = make_deliverer(outbox)
    clock.now_ms += 24_999
    assert await round_trip(deliverer) == 0, "still leased"
    clock.now_ms += 1
    assert await round_trip(deliverer) == 1
    assert receiver.received == [("id-1", item(1).body)]
    assert await client.hlen(outbox.attempts_key) == 0


async def test_a_worker_dying_on_the_last_attempt_dead_letters_the_item(client: aioredis.Redis) -> None:
    clock = FakeClock()
    outbox = Outbox(client, "t", "hook", clock_ms=clock)
    await outbox.enqueue([item(1)])
    assert len(await outbox.claim(10, lease_ms=1000, max_attempts=1)) == 1
    clock.now_ms += 1000
    assert await outbox.claim(10, lease_ms=1000, max_attempts=1) == []
    [dead] = await outbox.dead_letters()
    assert (dead.id, dead.attempts) == ("id-1", 1) and "lease expired" in dead.error


async def test_a_lost_lease_is_not_overwritten(client: aioredis.Redis) -> None:
    clock = FakeClock()
    outbox = Outbox(client, "t", "hook", clock_ms=clock)
    await outbox.enqueue([item(1)])
    [slow] = await outbox.claim(1, lease_ms=1000, max_attempts=8)
    clock.now_ms += 1000
    [fast] = await outbox.claim(1, lease_ms=1000, max_attempts=8)  # the lease ran out: another worker has it
    assert fast.attempt == 2
    assert not await outbox.reschedule(slow, clock.now_ms + 5, "late")
    assert not await outbox.bury(slow, "late")
    assert await due_ms(client, outbox, "id-1") == fast.lease_until_ms
    assert await outbox.reschedule(fast, clock.now_ms + 5, "HTTP 503")
    assert await due_ms(client, outbox, "id-1") == clock.now_ms + 5


async def test_a_clean_stop_finishes_deliveries_in_flight(client: aioredis.Redis, receiver: Receiver,
                                                          make_deliverer: Factory) -> None:
    outbox = Outbox(client, "t", "hook", clock_ms=FakeClock())
    receiver.delay_s = 0.3
    deliverer = make_deliverer(outbox)
    deliverer.start()
    await outbox.enqueue([item(1)])
    deliverer.wake()
    await wait_until(lambda: _eq(receiver.in_flight, 1), "the POST to start")
    await deliverer.stop()
    assert await outbox.pending() == 0 and len(receiver.received) == 1
    assert await round_trip(make_deliverer(outbox)) == 0  # the next process sends nothing twice
    assert len(receiver.received) == 1


async def test_a_redis_outage_does_not_kill_the_deliverer(tmp_path: Path, receiver: Receiver,
                                                          make_deliverer: Factory) -> None:
    own = RedisServer(tmp_path)
    conn = aioredis.Redis.from_url(own.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        counters = Counters()
        deliverer = make_deliverer(Outbox(conn, "t", "hook"), counters=counters)
        deliverer.start()
        own.kill()

        async def errors_counted() -> bool:
            return counters.redis_errors >= 2

        await wait_until(errors_counted, "claim errors to be counted")
        assert deliverer._task is not None and not deliverer._task.done()
        await deliverer.stop()
    finally:
        own.kill()
        await conn.aclose()



@pytest.mark.parametrize("listen", [True, False])
async def test_a_listening_deliverer_wakes_on_enqueues_from_another_process(
    redis_server: RedisServer, client: aioredis.Redis, receiver: Receiver, make_deliverer: Factory, listen: bool,
) -> None:
    deliverer = make_deliverer(Outbox(client, "t", "hook"), poll_s=30.0)  # only a wake-up can make it look
    deliverer.start(listen=listen)
    try:
        await wait_until(lambda: _subscribed(client, "cityops:t:outbox:hook:wake", listen), "the subscription")
        other = aioredis.Redis.from_url(redis_server.url)  # the enqueuing worker: its own client, no wake()
        try:
            assert await Outbox(other, "t", "hook").enqueue([item(1)]) == 1
        finally:
            await other.aclose()
        if listen:
            await wait_until(lambda: _received(receiver, 1), "the POST after the pub/sub wake-up", 5.0)
        else:  # the control: without listening it waits for its 30 s poll
            await asyncio.sleep(0.5)
            assert receiver.received == []
    finally:
        await deliverer.close()


async def _subscribed(client: aioredis.Redis, channel: str, expected: bool) -> bool:
    counts = dict(await client.pubsub_numsub(channel))
    return (counts.get(channel.encode(), 0) > 0) == expected


async def _received(receiver: Receiver, n: int) -> bool:
    return len(receiver.received) >= n


async def test_dead_letters_can_be_requeued_after_the_receiver_is_fixed(
    client: aioredis.Redis, receiver: Receiver, make_deliverer: Factory,
) -> None:
    outbox = Outbox(client, "t", "hook", clock_ms=FakeClock())
    deliverer = make_deliverer(outbox)
    await outbox.enqueue([item(1), item(2)])
    receiver.mode = "reject"  # 400: permanent, buried at once
    await round_trip(deliverer)
    assert await outbox.dead_count() == 2 and await outbox.pending() == 0
    receiver.mode = "ok"
    assert await outbox.requeue(["id-2", "no-such-id"]) == 1
    await round_trip(deliverer)
    assert receiver.received == [("id-2", item(2).body)]
    assert await outbox.requeue() == 1  # the rest
    await round_trip(deliverer)
    assert [key for key, _ in receiver.received] == ["id-2", "id-1"]
    assert await outbox.dead_count() == 0 and await outbox.pending() == 0
    assert await client.hlen(outbox.attempts_key) == 0
