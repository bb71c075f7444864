"""A persistent outbox in Redis for every HTTP sink, and the task that empties it.

``write_batch`` of an HTTP sink only calls :meth:`Outbox.enqueue` (one script
call: O(items) Redis writes, no network I/O to the receiver), so a slow or dead
receiver never stalls detection; a :class:`Deliverer` POSTs due items in the
background with bounded concurrency, a timeout, capped exponential backoff with
full jitter, and a dead-letter after ``max_attempts``.

Why a hash + a sorted set (and not a Redis Stream with a consumer group): a
retry must wait until its next-attempt time, which a sorted set scored by that
time gives directly (``ZRANGEBYSCORE due -inf now``); a Stream delivers in
append order, so backoff would need a second structure anyway. Idempotent
enqueue needs a lookup by item id, which a hash has and a Stream has not.
Crash recovery needs no consumer-group bookkeeping either: claiming an item
moves its score to ``now + lease``, so an item whose worker died mid-delivery
simply becomes due again when the lease runs out, and any deliverer (on any
worker) picks it up. Every state change is one Lua script, so it is atomic.

Keys, per namespace and sink (``P = cityops:<namespace>:outbox:<sink>``):

- ``P:items``    hash  id -> body (bytes, sent as-is)
- ``P:due``      zset  id -> next attempt, epoch ms (a lease while in flight)
- ``P:attempts`` hash  id -> attempts started so far
- ``P:errors``   hash  id -> last error text
- ``P:dead``     hash  id -> JSON {id, body, attempts, error, dead_at_ms}
- ``P:seen``     zset  id or dedup key -> enqueue time, epoch ms; trimmed after
  ``seen_retention_ms``, so a batch redelivered within that window (a crash
  before the Kafka offset commit) enqueues nothing twice, even once delivered.

Semantics: at-least-once. An item is removed only after a 2xx; a worker that
dies between the receiver's 2xx and the removal causes one more POST when the
lease expires. Every POST carries ``Idempotency-Key: <item id>`` so receivers
can de-duplicate. A clean :meth:`Deliverer.stop` waits for in-flight POSTs,
so a clean restart sends nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

DEFAULT_SEEN_RETENTION_MS = 24 * 3600 * 1000
_SEP = "\x1f"  # between the dedup keys of one item

_ENQUEUE = """
local now, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - keep)
local added = 0
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  if not redis.call('ZSCORE', KEYS[3], id) and redis.call('HSETNX', KEYS[1], id, ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[2], 'NX', now, id)
    added = added + 1
  end
  redis.call('ZADD', KEYS[3], now, id)
  for key in string.gmatch(ARGV[i + 2], '[^\\031]+') do redis.call('ZADD', KEYS[3], now, key) end
end
if added > 0 then redis.call('PUBLISH', KEYS[4], added) end  -- wake deliverers in other processes
return added
"""

# KEYS: items due attempts errors dead; ARGV: now lease_until limit max_attempts
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local body = redis.call('HGET', KEYS[1], id)
  local n = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  if not body then
    redis.call('ZREM', KEYS[2], id)
  elseif n >= tonumber(ARGV[4]) then
    local err = redis.call('HGET', KEYS[4], id) or 'lease expired: the worker died during the last attempt'
    redis.call('HSET', KEYS[5], id, cjson.encode({id = id, body = body, attempts = n, error = err,
      dead_at_ms = tonumber(ARGV[1])}))
    redis.call('HDEL', KEYS[1], id); redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id); redis.call('HDEL', KEYS[4], id)
  else
    n = redis.call('HINCRBY', KEYS[3], id, 1)
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    table.insert(out, id); table.insert(out, body); table.insert(out, n)
  end
end
return out
"""

# KEYS: items due attempts errors dead; ARGV: id lease_until next_ms error now bury
# Does nothing (returns 0) if the lease was lost: another deliverer owns the item.
_FAIL = """
local id = ARGV[1]
local score = redis.call('ZSCORE', KEYS[2], id)
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[6] == '1' then
  local body = redis.call('HGET', KEYS[1], id)
  local n = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  redis.call('HSET', KEYS[5], id, cjson.encode({id = id, body = body, attempts = n, error = ARGV[4],
    dead_at_ms = tonumber(ARGV[5])}))
  redis.call('HDEL', KEYS[1], id); redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id); redis.call('HDEL', KEYS[4], id)
  return 2
end
redis.call('ZADD', KEYS[2], ARGV[3], id)
redis.call('HSET', KEYS[4], id, ARGV[4])
return 1
"""


# KEYS: items due attempts errors dead wake; ARGV: now, ids... (none: every dead letter)
_REQUEUE = """
local ids = {}
if #ARGV > 1 then for i = 2, #ARGV do table.insert(ids, ARGV[i]) end else ids = redis.call('HKEYS', KEYS[5]) end
local n = 0
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', KEYS[5], id)
  if raw then
    redis.call('HSET', KEYS[1], id, cjson.decode(raw).body)
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    redis.call('HDEL', KEYS[3], id); redis.call('HDEL', KEYS[4], id); redis.call('HDEL', KEYS[5], id)
    n = n + 1
  end
end
if n > 0 then redis.call('PUBLISH', KEYS[6], n) end
return n
"""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message to deliver. ``id`` is deterministic (derived from the alert
    ids and the sink name); ``dedup_keys`` are finer-grained keys (one per
    alert) that :meth:`Outbox.seen` reports once this item is enqueued."""

    id: str
    body: bytes
    dedup_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    body: bytes
    attempt: int  # 1 for the first try
    lease_until_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    body: bytes
    attempts: int
    error: str
    dead_at_ms: int


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Outbox:
    """The Redis side: enqueue, claim, acknowledge, reschedule, bury."""

    def __init__(
        self, client: aioredis.Redis, namespace: str, sink: str, *,
        seen_retention_ms: int = DEFAULT_SEEN_RETENTION_MS, clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._redis = client
        self.sink = sink
        self.prefix = f"cityops:{namespace}:outbox:{sink}"
        self.items_key, self.due_key = f"{self.prefix}:items", f"{self.prefix}:due"
        self.attempts_key, self.errors_key = f"{self.prefix}:attempts", f"{self.prefix}:errors"
        self.dead_key, self.seen_key = f"{self.prefix}:dead", f"{self.prefix}:seen"
        self.wake_channel = f"{self.prefix}:wake"  # pub/sub: "items were enqueued"
        self.seen_retention_ms = seen_retention_ms
        self.clock_ms = clock_ms
        self._enqueue = client.register_script(_ENQUEUE)
        self._claim = client.register_script(_CLAIM)
        self._fail = client.register_script(_FAIL)
        self._requeue = client.register_script(_REQUEUE)

    @property
    def _state_keys(self) -> list[str]:
        return [self.items_key, self.due_key, self.attempts_key, self.errors_key, self.dead_key]

    async def enqueue(self, items: Sequence[OutboxItem]) -> int:
        """Make ``items`` durable and due now; returns how many were new. An id
        already pending, delivered (within the retention) or dead is skipped."""
        if not items:
            return 0
        args: list[Any] = [self.clock_ms(), self.seen_retention_ms]
        for item in items:
            args += [item.id, item.body, _SEP.join(item.dedup_keys)]
        return int(await self._enqueue(keys=[self.items_key, self.due_key, self.seen_key, self.wake_channel],
                                       args=args))

    def pubsub(self) -> Any:
        """A pub/sub connection of this outbox's client (for :meth:`Deliverer.start` with ``listen``)."""
        return self._redis.pubsub(ignore_subscribe_messages=True)

    async def seen(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` (item ids or dedup keys) were enqueued within the retention."""
        if not keys:
            return set()
        scores = await self._redis.zmscore(self.seen_key, list(keys))
        return {key for key, score in zip(keys, scores, strict=True) if score is not None}

    async def claim(self, limit: int, lease_ms: int, max_attempts: int) -> list[Claimed]:
        """Take up to ``limit`` due items, leasing each for ``lease_ms``. An item
        with ``max_attempts`` used up (its worker died on the last one) is buried."""
        now = self.clock_ms()
        lease_until = now + lease_ms
        flat = await self._claim(keys=self._state_keys, args=[now, lease_until, limit, max_attempts])
        return [Claimed(flat[i].decode(), flat[i + 1], int(flat[i + 2]), lease_until) for i in range(0, len(flat), 3)]

    async def ack(self, item_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(self.items_key, item_id)
        pipe.zrem(self.due_key, item_id)
        pipe.hdel(self.attempts_key, item_id)
        pipe.hdel(self.errors_key, item_id)
        await pipe.execute()

    async def reschedule(self, item: Claimed, next_ms: int, error: str) -> bool:
        """Retry at ``next_ms``; False if the lease was lost (someone else has it)."""
        args: list[str | int] = [item.id, item.lease_until_ms, next_ms, error, self.clock_ms(), 0]
        return int(await self._fail(keys=self._state_keys, args=args)) == 1

    async def bury(self, item: Claimed, error: str) -> bool:
        """Move to the dead letters; False if the lease was lost."""
        args: list[str | int] = [item.id, item.lease_until_ms, 0, error, self.clock_ms(), 1]
        return int(await self._fail(keys=self._state_keys, args=args)) == 2

    async def pending(self) -> int:
        return int(await self._redis.zcard(self.due_key))

    async def next_due_ms(self) -> int | None:
        first = await self._redis.zrange(self.due_key, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def dead_count(self) -> int:
        return int(await self._redis.hlen(self.dead_key))

    async def requeue(self, ids: Sequence[str] = ()) -> int:
        """Put dead letters (``ids``, or all) back in line, due now with fresh attempts
        (after the receiver was fixed); returns how many. Unknown ids are skipped."""
        return int(await self._requeue(keys=[*self._state_keys, self.wake_channel], args=[self.clock_ms(), *ids]))

    async def dead_letters(self) -> list[DeadLetter]:
        raw = cast(dict[bytes, bytes], await self._redis.hgetall(self.dead_key))
        out = []
        for value in raw.values():
            rec = json.loads(value)
            out.append(DeadLetter(rec["id"], rec["body"].encode(), int(rec["attempts"]), rec["error"], int(rec["dead_at_ms"])))
        return sorted(out, key=lambda d: (d.dead_at_ms, d.id))


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter: uniform(0, min(cap, base * 2**(attempt-1)))."""

    base_s: float = 1.0
    cap_s: float = 300.0

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        ceiling_s = min(self.cap_s, self.base_s * float(2 ** min(attempt - 1, 62)))
        return rng.random() * ceiling_s


class Transport(Protocol):
    """POSTs one body; returns (HTTP status, Retry-After seconds or None). Raises on I/O errors."""

    async def __call__(self, body: bytes, headers: Mapping[str, str], timeout_s: float) -> tuple[int, float | None]: ...


class AiohttpTransport:
    def __init__(self, url: str) -> None:
        self.url = url
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, body: bytes, headers: Mapping[str, str], timeout_s: float) -> tuple[int, float | None]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self._session.post(self.url, data=body, headers=dict(headers), timeout=timeout) as resp:
            await resp.read()
            return resp.status, _retry_after_s(resp.headers.get("Retry-After"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _retry_after_s(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: ignore it, our own backoff applies


RETRYABLE_STATUS = frozenset({408, 425, 429}) | frozenset(range(500, 600))
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


@dataclass
class Counters:
    """Plain counters; ``hook(event, sink)`` is called on each increment (wire Prometheus there)."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    redis_errors: int = 0
    hook: Callable[[str, str], None] | None = field(default=None, repr=False)

    def bump(self, event: str, sink: str) -> None:
        setattr(self, event, getattr(self, event) + 1)
        if self.hook is not None:
            self.hook(event, sink)


class Deliverer:
    """The background task: claims due items, POSTs them, records the outcome.

    A 2xx removes the item; 408/425/429/5xx, timeouts and connection errors
    retry after ``backoff`` (at least Retry-After, capped); any other status is
    permanent and buries the item at once; so does the ``max_attempts``-th failure.
    """

    def __init__(
        self, outbox: Outbox, transport: Transport, *, timeout_s: float = 10.0, max_attempts: int = 8,
        backoff: Backoff = Backoff(), concurrency: int = 8, lease_s: float | None = None, poll_s: float = 1.0,
        headers: Mapping[str, str] | None = None, rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, counters: Counters | None = None,
    ) -> None:
        if max_attempts < 1 or concurrency < 1:
            msg = f"outbox {outbox.sink}: max_attempts and concurrency must be >= 1"
            raise ValueError(msg)
        self.outbox, self.transport = outbox, transport
        self.timeout_s, self.max_attempts, self.backoff = timeout_s, max_attempts, backoff
        self.concurrency, self.poll_s = concurrency, poll_s
        self.lease_ms = int(1000 * (lease_s if lease_s is not None else 2 * timeout_s + 5))
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.rng = rng or random.Random()
        self._sleep = sleep
        self.counters = counters or Counters()
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        """New items were enqueued: look now instead of at the next poll."""
        self._wake.set()

    def start(self, *, listen: bool = False) -> None:
        """Start delivering. ``listen``: also wake on the outbox's pub/sub channel, for a
        deliverer in another process than the enqueuers (`cityops deliver`); without it,
        items enqueued elsewhere wait for the next poll (``poll_s``)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"outbox-{self.outbox.sink}")
        if listen and self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name=f"outbox-{self.outbox.sink}-wake")

    async def _listen(self) -> None:
        while not self._stopping:
            pubsub = self.outbox.pubsub()
            try:
                await pubsub.subscribe(self.outbox.wake_channel)
                self._wake.set()  # anything enqueued before the subscription
                while not self._stopping:
                    if await pubsub.get_message(timeout=1.0) is not None:
                        self._wake.set()
            except (RedisError, OSError) as exc:
                log.warning("outbox %s: wake-up channel lost (%r); polling every %.1f s meanwhile",
                            self.outbox.sink, exc, self.poll_s)
                await asyncio.sleep(1.0)
            finally:
                await pubsub.aclose()

    async def stop(self) -> None:
        """Stop claiming, wait for the POSTs in flight (each bounded by the timeout)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self.drain()

    async def close(self) -> None:
        """``stop``, then release the transport's connections if it holds any."""
        await self.stop()
        if isinstance(self.transport, AiohttpTransport):
            await self.transport.close()

    async def drain(self) -> None:
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def run_once(self) -> int:
        """Claim what is due (up to the free slots), start delivering it; returns how many."""
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        claimed = await self.outbox.claim(free, self.lease_ms, self.max_attempts)
        for item in claimed:
            task = asyncio.create_task(self._deliver(item))
            self._inflight.add(task)
            task.add_done_callback(self._done)
        return len(claimed)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("outbox %s: delivery task crashed", self.outbox.sink, exc_info=task.exception())

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                started = await self.run_once()
            except (RedisError, OSError) as exc:
                self.counters.bump("redis_errors", self.outbox.sink)
                log.warning("outbox %s: claiming failed (%r); retrying in %.1f s", self.outbox.sink, exc, self.poll_s)
                started = 0
            if started and len(self._inflight) < self.concurrency:
                continue  # there may be more due right now
            await self._wait(self.poll_s)

    async def _wait(self, timeout_s: float) -> None:
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._sleep(timeout_s))}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _deliver(self, item: Claimed) -> None:
        headers = {**self.headers, "Idempotency-Key": item.id}
        retry_after: float | None = None
        try:
            status, retry_after = await self.transport(item.body, headers, self.timeout_s)
            error = "" if 200 <= status < 300 else f"HTTP {status}"
            permanent = bool(error) and status not in RETRYABLE_STATUS
        except TRANSPORT_ERRORS as exc:
            error, permanent = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, False
        try:
            await self._record(item, error, permanent, retry_after)
        except (RedisError, OSError) as exc:  # the lease expires and the item is retried
            self.counters.bump("redis_errors", self.outbox.sink)
            log.warning("outbox %s: recording the outcome of %s failed (%r)", self.outbox.sink, item.id, exc)

    async def _record(self, item: Claimed, error: str, permanent: bool, retry_after: float | None) -> None:
        sink = self.outbox.sink
        if not error:
            await self.outbox.ack(item.id)
            self.counters.bump("delivered", sink)
        elif permanent or item.attempt >= self.max_attempts:
            if await self.outbox.bury(item, error):
                self.counters.bump("dead", sink)
                log.error("outbox %s: %s dead after %d attempts: %s", sink, item.id, item.attempt, error)
        else:
            delay_s = self.backoff.delay_s(item.attempt, self.rng)
            if retry_after is not None:
                delay_s = min(max(delay_s, retry_after), self.backoff.cap_s)
            if await self.outbox.reschedule(item, self.outbox.clock_ms() + int(delay_s * 1000), error):
                self.counters.bump("retried", sink)
