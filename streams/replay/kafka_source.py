"""Read a window of a topic back from Kafka by timestamp, without a consumer group.

``offsets_for_times`` gives, per partition, the first offset whose Kafka timestamp is
at or after a time: the window's first and last offsets. Reading is by ``assign`` and
``seek`` (no group, no commits), so a replay never moves the live worker's offsets.

A window can only be trusted when Kafka still holds its start: when the log start of a
partition has moved (retention, ``delete-records``) and the window begins at it, the
readings before it are gone and the caller reads the archive instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.decode import RawMessage
from streams.errors import CityOpsError
from streams.kafka_clients import _release, start_client

_FETCH_TIMEOUT_MS = 1000
_STALL_MS = 30_000


@dataclass(slots=True)
class TopicWindow:
    """A topic's messages in a window, in (timestamp, partition, offset) order."""

    topic: str
    messages: list[RawMessage] = field(default_factory=list)
    exists: bool = True
    # False: some partition's retained log begins inside the window (its start is lost)
    complete: bool = True


async def read_windows(bootstrap: str, topics: Sequence[str], from_ms: int, to_ms: int | None) -> dict[str, TopicWindow]:
    """Messages with Kafka timestamp in [from_ms, to_ms) (to the current end when None)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="cityops-replay")
    await start_client(admin, bootstrap)
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await _release(admin)
    found = {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in described if t["error_code"] == 0}
    windows = {topic: TopicWindow(topic, exists=topic in found) for topic in topics}
    partitions = [TopicPartition(topic, p) for topic, numbers in found.items() for p in numbers]
    if not partitions:
        return windows
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                client_id="cityops-replay", max_partition_fetch_bytes=8 * 1024 * 1024)
    await start_client(consumer, bootstrap)
    try:
        if not partitions:
            return windows
        first = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times({tp: from_ms for tp in partitions})
        stops = await consumer.offsets_for_times({tp: to_ms for tp in partitions}) if to_ms is not None else {}
        bounds: dict[TopicPartition, tuple[int, int]] = {}
        for tp in partitions:
            start = starts[tp].offset if starts.get(tp) is not None else end[tp]
            stop = stops[tp].offset if stops.get(tp) is not None else end[tp]
            if first[tp] > 0 and start == first[tp]:
                windows[tp.topic].complete = False  # records before the log start were deleted
            if stop > start:
                bounds[tp] = (start, stop)
        await _read(consumer, bounds, windows)
    finally:
        await _release(consumer)
    for window in windows.values():
        window.messages.sort(key=lambda m: (m.timestamp_ms, m.partition, m.offset))
    return windows


async def _read(consumer: AIOKafkaConsumer, bounds: dict[TopicPartition, tuple[int, int]],
                windows: dict[str, TopicWindow]) -> None:
    if not bounds:
        return
    consumer.assign(list(bounds))
    for tp, (start, _) in bounds.items():
        consumer.seek(tp, start)
    pending = dict(bounds)
    stalled = 0
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=_FETCH_TIMEOUT_MS, max_records=50_000)
        stalled = 0 if batches else stalled + 1
        if stalled * _FETCH_TIMEOUT_MS >= _STALL_MS:
            where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in pending)
            msg = (f"reading the window from Kafka: no records from {where} for {_STALL_MS // 1000} s before the "
                   "window's last offset; is the broker healthy? (--source archive reads the readings archive)")
            raise CityOpsError(msg)
        for tp, records in batches.items():
            stop = bounds[tp][1]
            messages = windows[tp.topic].messages
            for r in records:
                if r.offset < stop:
                    messages.append(RawMessage(r.value or b"", r.key, r.topic, r.partition, r.offset, r.timestamp))
        for tp in list(pending):
            if await consumer.position(tp) >= bounds[tp][1]:
                consumer.pause(tp)
                del pending[tp]
