"""The worker's hot path: one batch consumer per sensor kind, from the Kafka fetch to the sinks.

Each kind's readings topic is read by its own aiokafka consumer, in that kind's
consumer group (``Settings.consumer_group``: ``<app_id>.<kind>``). ``getmany`` hands over whatever the fetcher
holds, up to the kind's ``batch.max_messages``, as soon as anything is there: a
lone gas reading is processed at once, and under load batches grow by themselves
while the previous one is processed. A fetch becomes one ``RawBatch`` (bodies and
Kafka coordinates as columns) and goes to ``Runtime.handle``: no per-record Faust
event, stream or coroutine on the way (docs/architecture.md, "Hot path").

Crash safety is the order of ``Runtime``: a batch's outputs are durable before its
offsets count as done, and done offsets are committed at most
``COMMIT_INTERVAL_S`` later (and at once when the topic goes quiet, on a
revocation and at shutdown). A batch that cannot finish ends the process without
committing, so it is delivered again (same alert ids). A revocation waits for the
batch in flight, then commits; an assignment re-reads the kind's alarm levels and
detector state from Redis, where the previous owner checkpointed them before its
last commit (``Runtime.checkpoint``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streams.decode import RawBatch
from streams.kafka_clients import start_client
from streams.runtime import Runtime
from streams.settings import Settings

log = logging.getLogger(__name__)

WINDOW_SHARE_OF_BUDGET = 0.5  # a batch collects for at most this share of the budget, minus its p99 time
# ... in a process of its own kind (`--isolate hazmat`), where coalescing spares no other kind's
# turn on the loop, only this kind's CPU: a shorter wait, for a latency further inside the budget
ALONE_WINDOW_SHARE = 0.25
BUSY_GAP_S = 0.05  # records within this long of the previous batch: the topic is busy, so coalesce
QUIET_MS = 20  # ... until a poll this long brings nothing: the topic went quiet (a backlog's end), so go
DURATIONS_KEPT = 256  # batch times the p99 is taken over
SLICE_SHARE_OF_BUDGET = 0.25  # a batch may hold the event loop for this share of the tightest kind's budget
MIN_RECORDS = 16  # the fetch limit never goes below this, however slow a batch was
FIRST_RECORDS = 256  # the first fetch's limit, before a batch has been timed (a gateway array is 50 readings)
COMMIT_INTERVAL_S = 1.0  # as Faust's broker_commit_interval: a crash repeats at most this much work
# ... unless the checkpoint before a commit is slow (a large state, e.g. 100k sensors touched):
# then commits are spaced so that checkpoints take at most this share of the time, up to
# MAX_COMMIT_INTERVAL_S (a crash then repeats more work, with the same alert ids)
CHECKPOINT_SHARE = 0.1
MAX_COMMIT_INTERVAL_S = 30.0
IDLE_POLL_MS = 200  # how long getmany waits when nothing is fetched (then done offsets are committed)
SHUTDOWN_GRACE_S = 10.0  # a batch in flight at shutdown gets this long to finish
EXIT_BATCH_NOT_DONE = 70  # EX_SOFTWARE: a supervisor restarts the worker
SESSION_TIMEOUT_MS = 15_000  # a crashed worker's partitions move to a live one after this long
# Members learn that the group is rebalancing from a heartbeat's answer, and every join of a
# kind's consumer (four per worker) is a rebalance: at Kafka's usual 3 s a worker's start, or a
# second worker joining, took 9 s of rebalances before the first batch; at 0.5 s it takes ~1.5 s.
HEARTBEAT_INTERVAL_MS = 500

Records = Mapping[TopicPartition, Sequence[Any]]


def to_raw_batch(records: Records) -> RawBatch:
    """aiokafka's records of one fetch -> one RawBatch, partition by partition (each
    partition's records stay in offset order, which is all Kafka orders)."""
    values: list[bytes] = []
    keys: list[bytes | None] = []
    topics: list[str] = []
    partitions, offsets, stamps = [], [], []
    for tp, recs in records.items():
        n = len(recs)
        # a null value (tombstone) becomes b"": dead-lettered as `empty`, never a crash
        values += [r.value or b"" for r in recs]
        keys += [r.key for r in recs]
        topics += [tp.topic] * n
        partitions.append(np.full(n, tp.partition, np.int32))
        offsets.append(np.fromiter([r.offset for r in recs], np.int64, count=n))
        stamps.append(np.fromiter([r.timestamp for r in recs], np.int64, count=n))
    return RawBatch(values, keys, topics, _cat(partitions, np.int32), _cat(offsets, np.int64), _cat(stamps, np.int64))


def _cat(parts: list[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


class KindConsumer:
    """One kind's readings topic -> Runtime.handle, one fetch at a time."""

    def __init__(self, runtime: Runtime, kind: str, settings: Settings) -> None:
        self.runtime = runtime
        self.kind = kind
        spec = runtime.topology.kind(kind)
        self.topic = spec.topic
        self.max_records = spec.batch.max_messages
        # Processing a batch (decode, detect, alarm) is CPU work that holds the event loop, and
        # so every other kind's batches: each fetch is capped so that one batch takes at most a
        # quarter of the tightest budget (hazmat's 100 ms -> 25 ms), from the measured cost per
        # record. A hazmat reading then never waits behind a long air or traffic batch.
        tightest_ms = min(k.batch.budget_ms for k in runtime.topology.spec.kinds.values())
        self.slice_s = SLICE_SHARE_OF_BUDGET * tightest_ms / 1000
        self.fetch_limit = min(self.max_records, FIRST_RECORDS)
        self._cost_per_record_s = 0.0  # EWMA of a batch's CPU stage time per record
        # Coalescing: each batch costs a fixed ~3-5 ms (35 detectors' passes, the sinks' round
        # trips) whatever its size, so on a busy topic a batch waits for more records, for the
        # kind's budget/2 minus the p99 time a batch takes. A reading then waits at most the
        # window, one batch in flight and its own batch: budget/2 + p99, within the budget
        # while batches stay under half of it. A reading on a quiet topic goes at once.
        self.budget_s = spec.batch.budget_ms / 1000
        self.window_share = ALONE_WINDOW_SHARE if list(runtime.kinds) == [kind] else WINDOW_SHARE_OF_BUDGET
        self.window_s = self.window_share * self.budget_s
        self._durations = np.zeros(DURATIONS_KEPT)
        self._n_batches = 0
        self._last_batch_end = 0.0
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None  # made in start(): aiokafka wants a running loop
        self._batch_lock = asyncio.Lock()  # held while a batch is processed: a revocation waits for it
        self._done: dict[TopicPartition, int] = {}  # next offset per partition, outputs durable, not committed
        self._last_commit = time.monotonic()
        self.commit_interval_s = COMMIT_INTERVAL_S
        # one commit at a time: a revocation's commit must not return while the loop's is in flight
        self._commit_lock = asyncio.Lock()
        self._stopping = False
        self._fetching = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self._settings
        self._consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap,
            group_id=settings.consumer_group(self.kind),
            client_id=f"{settings.app_id}-{self.kind}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        )
        consumer.subscribe([self.topic], listener=_Rebalance(self))
        await start_client(consumer, settings.bootstrap)
        self._task = asyncio.create_task(self._run(), name=f"cityops.{self.kind}")

    async def stop(self) -> None:
        """Finish the batch in flight (up to the grace period), commit, leave the group."""
        self._stopping = True
        task = self._task
        if task is not None:
            if self._fetching:  # not inside a batch: nothing to wait for
                task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_GRACE_S)
            except asyncio.CancelledError:
                pass
            except TimeoutError:
                _die(f"shutdown: a {self.kind} batch could not finish within {SHUTDOWN_GRACE_S:g} s")
        if self._consumer is not None:
            await self._commit(force=True)
            await self._consumer.stop()

    async def _run(self) -> None:
        consumer = self._started()
        while not self._stopping:
            self._fetching = True
            try:
                records = await consumer.getmany(timeout_ms=IDLE_POLL_MS, max_records=self.fetch_limit)
            finally:
                self._fetching = False
            if records:
                if time.monotonic() - self._last_batch_end < BUSY_GAP_S:
                    records = await self._coalesce(dict(records))
                t0 = time.monotonic()
                await self._process(records)
                self._learn_duration(time.monotonic() - t0)
                await self._commit(force=False)
                self._last_batch_end = time.monotonic()
            else:
                await self._commit(force=True)  # quiet: make the done offsets visible now

    async def _process(self, records: Records) -> None:
        async with self._batch_lock:
            # a rebalance may have taken partitions away since the fetch: their records are another worker's now
            owned = self._started().assignment()
            mine = {tp: recs for tp, recs in records.items() if tp in owned and recs}
            if not mine:
                return
            try:
                result = await self.runtime.handle(self.kind, to_raw_batch(mine))
            except Exception:
                log.exception("processing a %s batch failed", self.kind)
                _die(f"a {self.kind} batch failed")
            self._learn_cost(result.n_messages, sum(v for k, v in result.stage_seconds.items() if k != "sink"))
            for tp, recs in mine.items():
                self._done[tp] = recs[-1].offset + 1

    async def _coalesce(self, records: dict[TopicPartition, list[Any]]) -> Records:
        """More records for the same batch, until the window closes, the fetch limit is met, or
        the topic goes quiet (without that, the last batch of a drained backlog waited out
        the whole window: up to a second for air)."""
        deadline = time.monotonic() + self.window_s
        n = sum(map(len, records.values()))
        consumer = self._started()
        while n < self.fetch_limit and not self._stopping:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            more = await consumer.getmany(timeout_ms=min(left_ms, QUIET_MS), max_records=self.fetch_limit - n)
            if not more:
                break
            for tp, recs in more.items():
                records[tp] = [*records.get(tp, ()), *recs]
                n += len(recs)
        return records

    def _learn_duration(self, seconds: float) -> None:
        """The window from the p99 of recent batch times (processing + sinks)."""
        self._durations[self._n_batches % DURATIONS_KEPT] = seconds
        self._n_batches += 1
        if self._n_batches % 16 == 0:
            p99 = float(np.percentile(self._durations[: min(self._n_batches, DURATIONS_KEPT)], 99))
            self.window_s = max(0.0, self.window_share * self.budget_s - p99)
            metrics = self.runtime.metrics
            metrics.batch_window.labels(self.kind).set(self.window_s)
            metrics.fetch_limit.labels(self.kind).set(self.fetch_limit)

    def _learn_cost(self, n_records: int, cpu_s: float) -> None:
        """Cap the next fetch so that its batch stays within the slice."""
        if n_records <= 0:
            return
        per_record = cpu_s / n_records
        cost = self._cost_per_record_s
        self._cost_per_record_s = per_record if cost == 0 else 0.8 * cost + 0.2 * per_record
        fits = int(self.slice_s / self._cost_per_record_s) if self._cost_per_record_s > 0 else self.max_records
        self.fetch_limit = max(MIN_RECORDS, min(self.max_records, fits))

    async def _commit(self, *, force: bool) -> None:
        async with self._commit_lock:
            if not self._done or (not force and time.monotonic() - self._last_commit < self.commit_interval_s):
                return
            # the state as of these offsets first: a restart restores it and resumes after them
            t0 = time.monotonic()
            await self.runtime.checkpoint(self.kind)
            self._learn_checkpoint(time.monotonic() - t0)
            done, self._done = self._done, {}
            consumer = self._started()
            owned = consumer.assignment()
            offsets = {tp: offset for tp, offset in done.items() if tp in owned}
            try:
                if offsets:
                    await consumer.commit(offsets)
            except KafkaError as exc:
                # the batches are durable; the next owner (or this worker) repeats them: same alert ids
                log.warning("committing %s offsets failed (%r); they will be delivered again", self.kind, exc)
            self._last_commit = time.monotonic()

    def _learn_checkpoint(self, seconds: float) -> None:
        """Space commits so that checkpoints take at most CHECKPOINT_SHARE of the time. From
        ~100k sensors a checkpoint writes hundreds of MB a second at one commit per second,
        and took 66-71 % of a drain (docs/benchmarks.md, "How cost grows")."""
        wanted = seconds / CHECKPOINT_SHARE
        self.commit_interval_s = min(MAX_COMMIT_INTERVAL_S, max(COMMIT_INTERVAL_S, wanted))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._batch_lock:  # the batch in flight first
            await self._commit(force=True)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self.runtime.reload_kind(self.kind, {tp.partition for tp in assigned if tp.topic == self.topic})
        except Exception:
            # aiokafka would only log a listener's failure, and the kind would carry on with the
            # state reset and nothing restored: restart instead, and restore on the next start
            log.exception("restoring the %s state after a partition assignment failed", self.kind)
            _die(f"the {self.kind} state could not be restored after an assignment")

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            msg = f"the {self.kind} consumer is not started"
            raise RuntimeError(msg)
        return self._consumer


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KindConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner.on_assigned(assigned)


def _die(why: str) -> None:
    log.critical("%s: exiting without committing it, so it is delivered again", why)
    logging.shutdown()
    os._exit(EXIT_BATCH_NOT_DONE)
