"""Which messages a replay runs, from where, and on what clock.

**Source.** Kafka while it still holds the window's start (``offsets_for_times``;
streams/replay/kafka_source.py), else the readings archive (streams/archive).

**Clock.** What the pipeline is told "now" is, per batch:

- ``kafka``: the batch's newest Kafka timestamp, i.e. when the live worker received
  it. Age limits, idle partitions and no_signal deadlines then judge each reading as
  the live worker did, so the live alarms come back exactly. This is the clock of
  data that arrived live; the window ``[from, to)`` is in Kafka time.
- ``event``: the newest reading time so far. For a *recording* (readings produced
  to Kafka long after they were taken, which the live worker dead-letters as
  ``ts_past``), the readings are judged as of when they were taken; the window is in
  reading time.

``auto`` (the default) takes ``kafka`` when the window holds messages by Kafka time,
else ``event``. Both clocks only move forward and depend on the messages alone, so
the result does not depend on the batch size.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from streams.archive.rows import archive_decoders
from streams.archive.store import READINGS
from streams.decode import KindDecoder, RawMessage
from streams.errors import CityOpsError
from streams.replay.kafka_source import TopicWindow, read_windows
from streams.replay.source import archived_messages
from streams.topology import Topology

Clock = Literal["kafka", "event"]
SourceChoice = Literal["auto", "kafka", "archive"]
ClockChoice = Literal["auto", "kafka", "event"]


@dataclass(slots=True)
class KindWindow:
    kind: str
    source: str  # kafka | archive | none
    clock: Clock
    messages: list[RawMessage] = field(default_factory=list)
    event_ms: list[int] = field(default_factory=list)  # per message: its newest reading time, -1 if none parsed
    arrival: dict[tuple[str, int], int] = field(default_factory=dict)  # (sensor, reading ms) -> Kafka ms
    notes: list[str] = field(default_factory=list)

    @property
    def n_messages(self) -> int:
        return len(self.messages)


def event_times(decoder: KindDecoder, window: KindWindow) -> None:
    """Per message, the newest event time among its readings (-1: none parsed); per
    reading, when it reached Kafka (reading time for a recording)."""
    messages = window.messages
    parsed = decoder.parse(messages, now_ms=0)  # an archive decoder: no age limits
    newest = [-1] * len(messages)
    arrival = window.arrival
    kafka_ms = parsed.source.timestamps_ms
    for i, sensor, ts in zip(parsed.message_row.tolist(), parsed.sensor_ids, parsed.event_ms.tolist(), strict=True):
        newest[i] = max(newest[i], ts)
        arrival.setdefault((sensor, ts), int(kafka_ms[i]) if window.clock == "kafka" and kafka_ms[i] >= 0 else ts)
    window.event_ms = newest


@dataclass(frozen=True, slots=True)
class Batching:
    """A fixed number of messages per batch, or (``size`` None) the worker's: a batch
    closes at ``max_messages`` or once it spans ``window_ms`` (Kafka or reading time),
    so a replay's notification times are those of the live worker, give or take."""

    size: int | None = None
    max_messages: int = 1000
    window_ms: float = 350.0


def _cuts(window: KindWindow, batching: Batching) -> Iterator[tuple[int, int]]:
    n = len(window.messages)
    if batching.size is not None:
        yield from ((start, min(n, start + batching.size)) for start in range(0, n, batching.size))
        return
    times = [m.timestamp_ms for m in window.messages] if window.clock == "kafka" else window.event_ms
    start = 0
    while start < n:
        end, opened = start + 1, times[start]
        while end < n and end - start < batching.max_messages and times[end] - opened <= batching.window_ms:
            end += 1
        yield start, end
        start = end


def batches(window: KindWindow, batching: Batching) -> Iterator[tuple[int, Sequence[RawMessage]]]:
    """(clock, batch) in order; the clock never goes back."""
    clock = -1
    for start, end in _cuts(window, batching):
        batch = window.messages[start:end]
        events = window.event_ms[start:end]
        if window.clock == "kafka":
            arrived = max((m.timestamp_ms for m in batch), default=-1)
            newest = arrived if arrived >= 0 else max(events, default=-1)  # no Kafka timestamp: reading time
        else:
            newest = max(events, default=-1)
        clock = max(clock, newest)
        yield clock, batch


def merged(windows: Sequence[KindWindow], batching: Mapping[str, Batching]
           ) -> Iterator[tuple[int, str, Sequence[RawMessage]]]:
    """Every kind's batches, merged by clock (kinds meet at a site through inhibition)."""
    streams = [_tagged(i, w, batching[w.kind]) for i, w in enumerate(windows)]
    for clock, _, kind, batch in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        yield clock, kind, batch


def _tagged(order: int, window: KindWindow, batching: Batching) -> Iterator[tuple[int, int, str, Sequence[RawMessage]]]:
    for clock, batch in batches(window, batching):
        yield clock, order, window.kind, batch


async def load_windows(
    bootstrap: str, archive_root: Path, topology: Topology, kinds: Sequence[str], from_ms: int, to_ms: int,
    source: SourceChoice = "auto", clock: ClockChoice = "auto",
) -> list[KindWindow]:
    if from_ms >= to_ms:
        raise CityOpsError("--from must be before --to")
    decoders = archive_decoders(topology)
    topics = {kind: topology.kind(kind).topic for kind in kinds}
    windows: dict[str, KindWindow] = {}
    if clock != "event":
        by_kafka = await _kafka(bootstrap, topics, from_ms, to_ms, source)
        for kind in kinds:
            found = _choose(archive_root, topology, kind, by_kafka.get(topics[kind]), from_ms, to_ms, source, "kafka")
            if found is not None and (found.messages or clock == "kafka"):
                windows[kind] = found
    rest = [kind for kind in kinds if kind not in windows]
    if rest:
        # a recording: its Kafka timestamps are after its readings, so from_ms is still a lower bound
        by_kafka = await _kafka(bootstrap, {k: topics[k] for k in rest}, from_ms, None, source)
        for kind in rest:
            found = _choose(archive_root, topology, kind, by_kafka.get(topics[kind]), from_ms, to_ms, source, "event")
            windows[kind] = found or KindWindow(kind, "none", "event")
    for window in windows.values():
        if not window.event_ms:
            event_times(decoders[window.kind], window)
        if window.source != "archive" and window.clock == "event":
            _keep_by_event_time(window, from_ms, to_ms)
    return [windows[kind] for kind in kinds]


async def _kafka(bootstrap: str, topics: dict[str, str], from_ms: int, to_ms: int | None,
                 source: SourceChoice) -> dict[str, TopicWindow]:
    if source == "archive" or not topics:
        return {}
    return await read_windows(bootstrap, sorted(set(topics.values())), from_ms, to_ms)


def _choose(root: Path, topology: Topology, kind: str, kafka: TopicWindow | None, from_ms: int, to_ms: int,
            source: SourceChoice, clock: Clock) -> KindWindow | None:
    in_archive = (root / READINGS / f"kind={kind}").is_dir()
    if kafka is not None and kafka.exists and (kafka.complete or source == "kafka" or not in_archive):
        window = KindWindow(kind, "kafka", clock, kafka.messages)
        if not kafka.complete:
            why = "--source kafka" if in_archive else "the readings archive has no data for this kind"
            window.notes.append(f"{kafka.topic}: Kafka no longer holds the start of the window (retention), and {why}: "
                                "the replay starts where Kafka does")
        return window
    if source == "kafka":
        return None
    if not in_archive:
        return None
    by = "kafka_time" if clock == "kafka" else "event_time"
    return KindWindow(kind, "archive", clock, archived_messages(root, topology, kind, from_ms, to_ms, by=by))


def _keep_by_event_time(window: KindWindow, from_ms: int, to_ms: int) -> None:
    keep = [i for i, ts in enumerate(window.event_ms) if from_ms <= ts < to_ms]
    window.messages = [window.messages[i] for i in keep]
    window.event_ms = [window.event_ms[i] for i in keep]
