"""`cityops archive run`: the readings topics and the dead-letter topic into Parquet.

Its own consumer group (``<app_id>-archive``), so the worker's batches never wait for a
file to be written. Messages are buffered and written as files every ``flush_s`` or
``max_messages``; offsets are committed only after the files are on disk (and before a
partition is handed to another archiver). A crash between the two re-archives that
stretch: rows are unique by (topic, partition, offset, reading_index), and the replay
reader de-duplicates on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from streams.archive.rows import archive_decoders, deadletters_table, readings_table
from streams.archive.store import DEADLETTERS, READINGS, ArchiveStore
from streams.decode import RawMessage
from streams.kafka_clients import start_client
from streams.settings import Settings
from streams.topology import Topology

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 3600.0


@dataclass
class FlushStats:
    readings: int = 0
    deadletters: int = 0
    files: int = 0
    foreign: int = 0  # messages on the dead-letter topic that are not dead-letter records


def archive_root(settings: Settings, topology: Topology) -> Path:
    return settings.data_dir / topology.spec.readings_archive.directory


class Archiver:
    """Buffers messages and writes them to the store; knows nothing of Kafka."""

    def __init__(self, topology: Topology, store: ArchiveStore) -> None:
        self.topology = topology
        self.store = store
        self._kinds = topology.input_topics()  # topic -> kind
        self._deadletter_topic = topology.spec.topics.deadletter
        self._decoders = archive_decoders(topology)
        self._buffer: dict[str, list[RawMessage]] = {}
        self.buffered = 0

    def add(self, msg: RawMessage) -> None:
        self._buffer.setdefault(msg.topic, []).append(msg)
        self.buffered += 1

    def flush(self) -> FlushStats:
        stats = FlushStats()
        for topic, messages in sorted(self._buffer.items()):
            if topic == self._deadletter_topic:
                table, foreign = deadletters_table(messages)
                stats.foreign += len(foreign)
                stats.files += len(self.store.write(DEADLETTERS, table, "received_at", sort_by=("received_at",)))
                stats.deadletters += table.num_rows
                continue
            kind = self._kinds[topic]
            parsed = self._decoders[kind].parse(messages, now_ms=0)  # no age limits: now does not matter
            table = readings_table(parsed, self.topology.quantities(kind))
            stats.files += len(self.store.write(READINGS, table, "event_time", kind=kind,
                                                sort_by=("sensor_id", "event_time")))
            stats.readings += table.num_rows
        self._buffer.clear()
        self.buffered = 0
        return stats


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, flush: Callable[[], Awaitable[None]]) -> None:
        self._flush = flush

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._flush()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass


async def run_archiver(settings: Settings, topology: Topology, stop: asyncio.Event | None = None,
                       clock: Callable[[], float] = time.monotonic) -> None:
    spec = topology.spec.readings_archive
    store = ArchiveStore(archive_root(settings, topology), spec.zstd_level, spec.retention_days)
    if removed := store.remove_partial():
        log.info("removed %d partial files a crash left", removed)
    archiver = Archiver(topology, store)
    topics = [*topology.input_topics(), topology.spec.topics.deadletter]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=f"{settings.app_id}-archive",
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                client_id=f"{settings.app_id}-archive")

    async def flush_and_commit() -> None:
        if archiver.buffered:
            stats = archiver.flush()
            log.info("archived %d readings and %d dead letters in %d files%s", stats.readings, stats.deadletters,
                     stats.files, f" ({stats.foreign} records on the dead-letter topic were not dead letters)"
                     if stats.foreign else "")
        if consumer.assignment():
            await consumer.commit()

    consumer.subscribe(topics, listener=_FlushOnRevoke(flush_and_commit))
    await start_client(consumer, settings.bootstrap)
    stop = stop or _stop_on_signals()
    log.info("archiving %s into %s (every %g s, %d days kept)", ", ".join(topics), store.root, spec.flush_s,
             spec.retention_days)
    first_buffered_s: float | None = None
    expired_s = -EXPIRE_EVERY_S
    try:
        while not stop.is_set():
            if clock() - expired_s >= EXPIRE_EVERY_S:
                if expired := store.expire(datetime.now(UTC)):
                    log.info("retention: removed %d files written more than %d days ago", len(expired),
                             spec.retention_days)
                expired_s = clock()
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for records in batch.values():
                for r in records:
                    archiver.add(RawMessage(r.value or b"", r.key, r.topic, r.partition, r.offset, r.timestamp))
            if archiver.buffered and first_buffered_s is None:
                first_buffered_s = clock()
            due = first_buffered_s is not None and clock() - first_buffered_s >= spec.flush_s
            if archiver.buffered >= spec.max_messages or due:
                await flush_and_commit()
                first_buffered_s = None
        await flush_and_commit()
    finally:
        await consumer.stop()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop
