"""Replaying from the readings archive reproduces the alarms of the run it recorded
(streams/replay): the simulated city with its scripted incidents is processed as the
live worker would (its batches, its clock = arrival time), archived, rebuilt from the
Parquet files and processed again in other batch sizes: the same alarm events."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from sinks.base import Alert
from streams.archive.consumer import Archiver
from streams.archive.store import ArchiveStore
from streams.decode import RawMessage
from streams.replay.engine import alert_ids, replay_kind
from streams.replay.source import archived_messages
from streams.sim.engine import SimOptions, generate
from streams.topology import Topology, key_partition, load_topology
from tests.unit.test_topology import REPO

START_MS = 1_798_732_800_000  # 2027-01-01T00:00:00+08:00
ARRIVAL_DELAY_MS = 150  # gateway + broker: Kafka's timestamp is a little after the event


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(REPO / "topology.yaml")


def _record(topology: Topology, partition_of: Callable[[bytes], int]) -> dict[str, list[RawMessage]]:
    """The simulated city for 40 simulated minutes (scripted incidents included), as Kafka would hold it."""
    opts = SimOptions(rate=None, duration_s=40.0, seed=11, start_ms=START_MS, speed=60.0)
    kinds = topology.input_topics()
    by_kind: dict[str, list[RawMessage]] = {}
    offsets: dict[tuple[str, int], int] = {}
    for tick in generate(topology, opts):
        for m in tick:
            partition = partition_of(m.key)
            offset = offsets.get((m.topic, partition), 0)
            offsets[(m.topic, partition)] = offset + 1
            by_kind.setdefault(kinds[m.topic], []).append(
                RawMessage(m.value, m.key, m.topic, partition, offset, m.event_ms + ARRIVAL_DELAY_MS))
    return by_kind


@pytest.fixture(scope="module")
def recorded(topology: Topology) -> dict[str, list[RawMessage]]:
    """Keyed by sensor with Kafka's default partitioner (Java, aiokafka: murmur2)."""
    return _record(topology, lambda key: key_partition(key, topology.spec.topics.partitions))


def _live(topology: Topology, kind: str, messages: Sequence[RawMessage]) -> list[Alert]:
    return replay_kind(topology, kind, messages, batch_size=500)


def test_a_replay_from_the_archive_gives_the_live_alarms_at_any_batch_size(
        topology: Topology, recorded: dict[str, list[RawMessage]], tmp_path: Path) -> None:
    archiver = Archiver(topology, ArchiveStore(tmp_path))
    for messages in recorded.values():
        for msg in messages:
            archiver.add(msg)
        archiver.flush()
    total_alerts = 0
    for kind, messages in sorted(recorded.items()):
        live = alert_ids(_live(topology, kind, messages))
        total_alerts += len(live)
        rebuilt = archived_messages(tmp_path, topology, kind)
        assert len(rebuilt) == len(messages)
        for batch_size in (37, 4096):
            assert alert_ids(replay_kind(topology, kind, rebuilt, batch_size)) == live, (kind, batch_size)
    assert total_alerts > 0  # the scenario's incidents alarm: the comparison is not of empty lists


def test_no_signal_is_the_same_for_long_batches_whatever_the_producers_partitioner(topology: Topology) -> None:
    """librdkafka's default partitioner (CRC32, many C/Go gateways) puts sensors elsewhere
    than Kafka's murmur2; a batch spanning 14+ minutes (a catch-up) used to judge a sensor
    on its murmur2 partition until its first reading and raised no_signal for it."""
    messages = _record(topology, lambda key: zlib.crc32(key) % topology.spec.topics.partitions)["air"]
    live = alert_ids(_live(topology, "air", messages))
    assert live
    for batch_size in (37, 1000, 4096):
        assert alert_ids(replay_kind(topology, "air", messages, batch_size)) == live, batch_size


def test_a_window_by_arrival_time_and_duplicated_rows(topology: Topology, recorded: dict[str, list[RawMessage]],
                                                      tmp_path: Path) -> None:
    messages = recorded["air"]
    archiver = Archiver(topology, ArchiveStore(tmp_path))
    for msg in [*messages, *messages[:50]]:  # an archiver crash re-archived the first 50
        archiver.add(msg)
    archiver.flush()
    assert len(archived_messages(tmp_path, topology, "air")) == len(messages)
    lo, hi = messages[100].timestamp_ms, messages[200].timestamp_ms
    window = archived_messages(tmp_path, topology, "air", lo, hi)
    assert window and all(lo <= m.timestamp_ms < hi for m in window)
    assert len(window) == sum(lo <= m.timestamp_ms < hi for m in messages)
