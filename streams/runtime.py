"""What a worker holds while it runs: per-kind pipelines, sinks and metrics.

Order per micro-batch is what makes a crash safe: alerts and dead letters are
acknowledged by Kafka, the alerts are in the JSONL archive, then the alarm
board is updated in Redis, then the alarm store (sinks/alarm_store.py:
lifecycle, operator states) applies the batch's alerts (idempotently, so
re-applying a re-delivered batch is harmless), then the notifier
(sinks/notifier.py) puts what the receivers should get into their outboxes,
and only then is the batch done (streams/consumer.py). Before the consumer
commits done offsets, ``checkpoint`` writes the detector and route state of
the sensors touched since the last commit, so Redis holds the state as of the
committed offsets. HTTP delivery runs in the background: a slow or down
receiver never holds a batch. A crash anywhere re-delivers the batches after
the last commit; re-processing them from the checkpointed state emits the same
alert ids (deterministic), so consumers de-duplicate, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import numpy as np
import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from detectors.base import IntArray
from sinks.alarm_store import AlarmStore
from sinks.base import Alert, AlertSink
from sinks.kafka import KafkaAlertSink, KafkaWriter
from sinks.notifier import NotifyCounters
from sinks.outbox import Counters
from sinks.redis_board import RedisAlarmBoard
from streams.age_warning import AgeRejectionWarner
from streams.checkpoint import KindCheckpoint
from streams.deadletter import Reason
from streams.decode import RawBatch, RawMessage
from streams.latest import LatestCollector
from streams.lag import ConsumerLag
from streams.live_alarms import LiveAlarms
from streams.metrics import Metrics
from streams.notifications import build_archive, build_notifier
from streams.pipeline import BatchResult, KindPipeline, wall_clock_ms
from streams.settings import Settings, owned_kinds
from streams.topology import Topology

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
DELIVERY_ERRORS = (KafkaError, RedisError, OSError)


def _bind(sink: AlertSink, alerts: Sequence[Alert]) -> Callable[[], Awaitable[None]]:
    return lambda: sink.write_batch(alerts)


class Runtime:
    def __init__(self, settings: Settings, topology: Topology, metrics: Metrics) -> None:
        self.settings = settings
        self.topology = topology
        self.metrics = metrics
        self.age_warner = AgeRejectionWarner(topology.spec.input)  # one log line when most of a batch is too old
        # only the kinds this worker consumes (`cityops worker --kinds`, e.g. hazmat in a process of its own)
        self.kinds = owned_kinds(settings, topology.spec.kinds)
        self.pipelines = {kind: KindPipeline(topology, kind) for kind in self.kinds}
        self.checkpoints = {kind: self._checkpoint(kind) for kind in self.pipelines}
        metrics.registry.register(LatestCollector(lambda: {kind: p.latest for kind, p in self.pipelines.items()}))
        self.writer = KafkaWriter(settings.bootstrap, client_id=f"{settings.app_id}-sinks")
        # one Redis client (connection pool) for the board, the alarm store and the operator API
        self.redis = aioredis.Redis.from_url(settings.redis_url)
        self.board = RedisAlarmBoard(self.redis, settings.namespace)
        self.live_alarms = LiveAlarms(self.board)  # cityops_live_alarm for the boards (streams/live_alarms.py)
        metrics.registry.register(self.live_alarms)
        self.lag = ConsumerLag(settings.bootstrap, {kind: settings.consumer_group(kind) for kind in self.kinds},
                               {t: k for t, k in topology.input_topics().items() if k in self.pipelines})  # cityops_consumer_lag
        metrics.registry.register(self.lag)
        self.archive = build_archive(topology, settings.data_dir)
        self.sinks: list[AlertSink] = [KafkaAlertSink(self.writer, topology.spec.topics.alerts)]
        if self.archive is not None:
            self.sinks.append(self.archive)
        # the alarm lifecycle (operator states, audit), after the board: idempotent, so a crash
        # between the two re-delivers the batch and re-applying it changes nothing twice
        self.alarms = AlarmStore(self.redis, settings.namespace)
        # routing, silences, inhibition, repeats -> the HTTP receivers' outboxes (last: it reads
        # the board and the store as this batch left them)
        self.notifier = build_notifier(
            topology, self.redis, settings.namespace, self.board, self.alarms,
            counters=NotifyCounters(hook=lambda outcome, receiver: metrics.notifications.labels(receiver, outcome).inc()),
            outbox_counters=Counters(hook=lambda event, sink: metrics.outbox_events.labels(sink, event).inc()),
            on_outbox_depth=metrics.set_outbox_depth,
        )
        self._zero_series()
        self._started = asyncio.Event()
        self._lock = asyncio.Lock()
        # a kind's batch and a reload of its alarm levels must not interleave:
        # a reload in the middle of a batch would re-arm levels the batch is changing
        self._kind_locks = {kind: asyncio.Lock() for kind in self.pipelines}
        # per kind, the sensors whose state moved since the last checkpoint (one array per batch)
        self._dirty: dict[str, list[IntArray]] = {kind: [] for kind in self.pipelines}

    def _zero_series(self) -> None:
        """Create the labelled series the boards and alert rules read, at 0, so a query
        over a quiet worker returns 0 rather than "No data"."""
        m = self.metrics
        steps = ["deadletter", *(type(sink).__name__ for sink in self.sinks), "RedisAlarmBoard", "AlarmStore", "Notifier",
                 "checkpoint"]
        for kind, pipeline in self.pipelines.items():
            m.budget_overruns.labels(kind)
            for kind_route in pipeline.routes:
                m.alarm_budget_overruns.labels(kind, kind_route.evaluator.spec.rule)
            m.active_alarms.labels(kind)
            for reason in Reason:
                m.deadletters.labels(kind, reason.value)
            for step in steps:
                m.sink_retries.labels(kind, step)
        for route in self.notifier.routes:
            for outcome in ("sent", "released", "repeated"):
                m.notifications.labels(route.name, outcome)
            for event in ("delivered", "retried", "dead", "redis_errors"):
                m.outbox_events.labels(route.name, event)
            if self.settings.delivery == "worker":  # else `cityops deliver` exports the depth
                m.set_outbox_depth(route.name, 0, 0)
        for outcome in ("muted_silence", "muted_inhibit"):
            m.notifications.labels("all", outcome)

    def _checkpoint(self, kind: str) -> KindCheckpoint:
        pipeline = self.pipelines[kind]
        return KindCheckpoint(self.settings.namespace, kind, pipeline.stateful_parts(), pipeline.index)

    async def start(self) -> None:
        """Connect sinks and re-arm alarm levels from Redis (once, lazily: every agent awaits it)."""
        async with self._lock:
            if self._started.is_set():
                return
            await self.writer.start()
            await self._restore(self.pipelines)
            if self.settings.delivery == "worker":  # else `cityops deliver` POSTs the outboxes
                self.notifier.start()
            self.live_alarms.start()
            self.lag.start()
            self._started.set()

    async def reload_kind(self, kind: str, partitions: set[int]) -> None:
        """After a rebalance of ``kind``'s consumer: its alarm levels and detector state
        from Redis (the previous owner checkpointed them with every batch), and the
        partitions it owns now."""
        async with self._lock:
            await self._restore([kind])
            self._assign(kind, partitions)

    def _assign(self, kind: str, partitions: set[int]) -> None:
        self.pipelines[kind].partitions.assign(sorted(partitions), wall_clock_ms())

    async def _restore(self, kinds: Iterable[str]) -> None:
        """One read of the board, applied while no batch of these kinds is in flight."""
        kinds = [k for k in self.pipelines if k in set(kinds)]  # always in the same order: no deadlock
        async with contextlib.AsyncExitStack() as held:
            for kind in kinds:
                await held.enter_async_context(self._kind_locks[kind])
            active = await self.board.active()
            for kind in kinds:
                pipeline = self.pipelines[kind]
                pipeline.reset_state()  # another worker may have moved these sensors on
                self._dirty[kind] = []  # what Redis holds is the state now
                self.checkpoints[kind] = checkpoint = self._checkpoint(kind)
                restored = pipeline.restore(active)
                # in a thread: ~1 s per 100,000 sensors of CPU that would stop the loop, and with it
                # the consumers' heartbeats (a long enough stall expires the session: another
                # rebalance, another restore)
                n_state = await asyncio.to_thread(checkpoint.load, await self.board.state(checkpoint.key))
                self.metrics.active_alarms.labels(kind).set(restored)
                log.info("restored %d live %s alarms and the state of %d sensors from Redis", restored, kind, n_state)

    async def handle(self, kind: str, messages: RawBatch | Sequence[RawMessage]) -> BatchResult:
        await self.start()
        raw = RawBatch.of(messages)
        async with self._kind_locks[kind]:
            result = await self._handle(kind, raw)
        self._observe(kind, result)
        self.age_warner.observe(kind, result.n_readings, result.dead)
        self._observe_latency(kind, result, raw, wall_clock_ms())
        return result

    def _observe_latency(self, kind: str, result: BatchResult, messages: RawBatch | Sequence[RawMessage],
                         now_ms: int) -> None:
        """Arrival (Kafka timestamp of the batch's oldest message) to durable outputs."""
        raw = RawBatch.of(messages)
        stamps = raw.timestamps_ms[raw.timestamps_ms >= 0]
        if not len(stamps):
            return
        seconds = max(0.0, (now_ms - int(stamps.min())) / 1000)
        self.metrics.batch_latency.labels(kind).observe(seconds)
        alarm_latency = self.metrics.alarm_latency.labels(kind)
        late = seconds > self.topology.kind(kind).batch.budget_ms / 1000
        for alert in result.alerts:
            alarm_latency.observe(seconds)
            if late:
                self.metrics.alarm_budget_overruns.labels(kind, alert.rule).inc()

    async def _handle(self, kind: str, messages: RawBatch) -> BatchResult:
        # on the loop, not in a thread: tried (2026-12-07), batches in threads fought the loop for
        # the GIL, the fetch cap learned from their inflated times shrank every batch, and a
        # backlog drained 7x slower (docs/benchmarks.md, "Hazmat in its own process")
        result = self.pipelines[kind].process(messages, wall_clock_ms())
        t0 = time.perf_counter()
        await self._deliver(kind, result)
        result.stage_seconds["sink"] = time.perf_counter() - t0
        return result

    async def _deliver(self, kind: str, result: BatchResult) -> None:
        """Dead letters, then alerts to every sink in order (Kafka, then the Redis
        state, then the alarm store's lifecycle records). An outage delays the
        batch, never drops it: each step is retried with capped exponential
        backoff until it succeeds, and a step that has succeeded is not repeated."""
        dead = [(d.key, d.to_json(wall_clock_ms())) for d in result.dead]
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("deadletter", lambda: self.writer.send_all(self.topology.spec.topics.deadletter, dead)),
            *[(type(sink).__name__, _bind(sink, result.alerts)) for sink in self.sinks],
            # the live board, then the alarm store; the detector state follows with the next checkpoint
            ("RedisAlarmBoard", lambda: self.board.write_batch(result.alerts)),
            # idempotent (duplicate alert ids and stale events change nothing): safe to repeat
            ("AlarmStore", lambda: self._apply_alarms(result.alerts)),
            # into the receivers' outboxes (idempotent per alert id); delivery happens in the background
            ("Notifier", lambda: self.notifier.notify(result.alerts)),
        ]
        for name, step in steps:
            await self._until_done(kind, name, step)
        self._dirty[kind].append(result.touched)

    async def _until_done(self, kind: str, name: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` until it succeeds, with capped exponential backoff between tries."""
        delay_s = RETRY_FIRST_S
        t0 = time.perf_counter()
        while True:
            try:
                await step()
                break
            except DELIVERY_ERRORS as exc:
                self.metrics.sink_retries.labels(kind, name).inc()
                log.warning("%s: delivering a %s batch failed (%r); retrying in %.1f s", name, kind, exc, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_S)
        # which step holds a batch up (the "sink" stage is the sum of a batch's steps)
        self.metrics.stage_seconds.labels(kind, f"sink:{name}").observe(time.perf_counter() - t0)

    async def checkpoint(self, kind: str) -> None:
        """Write the detector and route state of every sensor the kind's batches touched
        since the last checkpoint, as it is after the last batch. The batch consumer calls
        this right before it commits offsets, so Redis always holds the state as of the
        committed offsets: a restarted worker (or the next owner of a partition) restores
        it and re-processes the batches after them, which emits the same alert ids again
        (the board, the alarm store and the notifier are idempotent per id). One write per
        commit, not per batch: a hazmat sensor's state is ~9 kB, and a 10-reading batch
        wrote 90 kB to Redis (and its AOF)."""
        async with self._kind_locks[kind]:
            touched = self._dirty[kind]
            if not touched:
                return
            sensors = np.unique(np.concatenate(touched))
            checkpoint = self.checkpoints[kind]
            records = await asyncio.to_thread(checkpoint.encode, sensors)  # the kind's lock is held: no batch moves it
            await self._until_done(kind, "checkpoint", lambda: self.board.write_state(checkpoint.key, records))
            self._dirty[kind] = []

    async def _apply_alarms(self, alerts: Sequence[Alert]) -> None:
        await self.alarms.apply(alerts)

    def _observe(self, kind: str, result: BatchResult) -> None:
        m = self.metrics
        m.messages.labels(kind).inc(result.n_messages)
        m.readings.labels(kind).inc(result.n_readings)
        m.unknown_sensor_readings.labels(kind).inc(result.n_unknown_sensors)
        m.batch_size.labels(kind).observe(result.n_messages)
        for dead in result.dead:
            m.deadletters.labels(kind, dead.reason).inc()
        for rule, count in result.late_by_rule.items():
            m.late_readings.labels(kind, rule).inc(count)
        for alert in result.alerts:
            m.alerts.labels(kind, alert.rule, alert.severity, alert.status).inc()
            m.alarms_by_district.labels(kind, alert.district, alert.severity, alert.status).inc()
            for department in alert.departments:
                m.alarms_by_department.labels(department, alert.severity, alert.status).inc()
            m.active_alarms.labels(kind).inc(-1 if alert.status == "resolved" else (1 if alert.status == "firing" else 0))
        for stage, seconds in result.stage_seconds.items():
            m.stage_seconds.labels(kind, stage).observe(seconds)
        for detector, seconds in result.detector_seconds.items():
            m.detector_seconds.labels(kind, detector).observe(seconds)
        index = self.pipelines[kind].index
        m.sensors_tracked.labels(kind, "yes").set(index.n_known)
        m.sensors_tracked.labels(kind, "no").set(len(index) - index.n_known)
        m.state_bytes.labels(kind).set(self.checkpoints[kind].dtype.itemsize * len(index))
        budget_s = self.topology.kind(kind).batch.budget_ms / 1000
        if sum(result.stage_seconds.values()) > budget_s:
            m.budget_overruns.labels(kind).inc()

    async def close(self) -> None:
        await self.live_alarms.close()
        await self.lag.close()
        await self.notifier.close()
        if self.archive is not None:
            await self.archive.close()
        await self.writer.close()
        await self.redis.aclose()  # the board's and the alarm store's (AlarmStore.close) client
