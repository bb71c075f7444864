"""The batch consumer's pure parts: a fetch as columns, and the fetch cap it learns."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
import pytest
from aiokafka import TopicPartition

from streams.consumer import DURATIONS_KEPT, FIRST_RECORDS, MIN_RECORDS, KindConsumer, to_raw_batch
from streams.runtime import Runtime
from streams.settings import Settings
from streams.topology import load_topology

from tests.shared import REPO


@dataclass
class _Record:
    value: bytes | None
    key: bytes | None
    offset: int
    timestamp: int


def test_a_fetch_becomes_one_raw_batch_partition_by_partition() -> None:
    records = {
        TopicPartition("t", 2): [_Record(b"a", b"k1", 7, 1000), _Record(None, None, 8, 1001)],
        TopicPartition("t", 0): [_Record(b"c", b"k3", 3, 999)],
    }
    batch = to_raw_batch(records)
    assert batch.values == [b"a", b"", b"c"]  # a tombstone is an empty body (dead-lettered as `empty`)
    assert batch.keys == [b"k1", None, b"k3"]
    assert batch.partitions.tolist() == [2, 2, 0]
    assert batch.offsets.tolist() == [7, 8, 3]
    assert batch.timestamps_ms.tolist() == [1000, 1001, 999]
    message = batch.message(1)
    assert (message.topic, message.partition, message.offset, message.value) == ("t", 2, 8, b"")
    assert len(to_raw_batch({})) == 0


def test_fetch_limit_keeps_a_batch_within_its_slice_of_the_tightest_budget() -> None:
    topology = load_topology(REPO / "topology.yaml")
    consumer = KindConsumer.__new__(KindConsumer)  # no runtime needed for the arithmetic
    consumer.max_records = topology.kind("air").batch.max_messages
    consumer.slice_s = 0.025
    consumer.fetch_limit = consumer.max_records
    consumer._cost_per_record_s = 0.0
    consumer._learn_cost(100, 0.1)  # 1 ms per record: 25 records fit
    assert consumer.fetch_limit == 25
    for _ in range(50):  # cheap batches: the limit grows back to the topology's max
        consumer._learn_cost(1000, 0.001)
    assert consumer.fetch_limit == consumer.max_records
    for _ in range(50):  # very slow records: never below the floor
        consumer._learn_cost(10, 10.0)
    assert consumer.fetch_limit == MIN_RECORDS
    assert np.isfinite(consumer._cost_per_record_s)


def test_the_slice_is_a_quarter_of_the_tightest_budget() -> None:
    topology = load_topology(REPO / "topology.yaml")
    runtime = Runtime.__new__(Runtime)
    runtime.topology = topology
    runtime.kinds = list(topology.spec.kinds)
    tightest = min(k.batch.budget_ms for k in topology.spec.kinds.values())
    consumer = KindConsumer(runtime, "air", Settings())
    assert consumer.slice_s == tightest / 4000
    # the first fetch is small: a batch's cost is not known yet (a gateway array is 50 readings)
    assert consumer.fetch_limit == min(FIRST_RECORDS, topology.kind("air").batch.max_messages)


def _consumer(kind: str, alone: bool = False) -> KindConsumer:
    from prometheus_client import CollectorRegistry

    from streams.metrics import Metrics

    runtime = Runtime.__new__(Runtime)
    runtime.topology = load_topology(REPO / "topology.yaml")
    runtime.kinds = [kind] if alone else list(runtime.topology.spec.kinds)
    runtime.metrics = Metrics.create(CollectorRegistry())
    return KindConsumer(runtime, kind, Settings())


def test_the_window_is_half_the_budget_minus_the_p99_batch_time() -> None:
    consumer = _consumer("traffic")
    budget_s = consumer.runtime.topology.kind("traffic").batch.budget_ms / 1000
    assert consumer.window_s == budget_s / 2  # before any batch
    for _ in range(32):
        consumer._learn_duration(0.020)
    assert abs(consumer.window_s - (budget_s / 2 - 0.020)) < 1e-9
    for _ in range(DURATIONS_KEPT):  # batches slower than half the budget: no waiting at all
        consumer._learn_duration(budget_s)
    assert consumer.window_s == 0.0


def test_a_kind_alone_in_its_process_waits_a_quarter_of_its_budget_minus_the_p99() -> None:
    consumer = _consumer("hazmat", alone=True)
    budget_s = consumer.runtime.topology.kind("hazmat").batch.budget_ms / 1000
    assert consumer.window_s == budget_s / 4
    for _ in range(32):
        consumer._learn_duration(0.010)
    assert abs(consumer.window_s - (budget_s / 4 - 0.010)) < 1e-9
    assert _consumer("hazmat").window_s == budget_s / 2  # sharing the loop with the other kinds


class _ScriptedKafka:
    """getmany answers from a script of fetches; then nothing, after the timeout."""

    def __init__(self, fetches: list[dict[TopicPartition, list[_Record]]]) -> None:
        self.fetches = fetches
        self.calls: list[int] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[_Record]]:
        self.calls.append(max_records)
        if self.fetches:
            return self.fetches.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}


def _records(tp: TopicPartition, first: int, n: int) -> list[_Record]:
    return [_Record(b"{}", None, first + i, 0) for i in range(n)]


async def test_a_busy_batch_collects_until_the_fetch_limit() -> None:
    consumer = _consumer("hazmat")
    consumer.window_s, consumer.fetch_limit = 5.0, 10
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    kafka = _ScriptedKafka([{tp0: _records(tp0, 3, 4)}, {tp1: _records(tp1, 0, 2), tp0: _records(tp0, 7, 1)},
                            {tp0: _records(tp0, 8, 5)}])
    consumer._consumer = kafka  # type: ignore[assignment]
    got = await asyncio.wait_for(consumer._coalesce({tp0: _records(tp0, 0, 3)}), 2.0)  # long before the window ends
    assert [r.offset for r in got[tp0]] == list(range(8))  # in offset order, across fetches
    assert [r.offset for r in got[tp1]] == [0, 1]
    assert kafka.calls == [7, 3]  # each fetch asks only for what is left; none once the limit is met


class _SteadyKafka:
    """A busy topic: every poll brings one more record, 5 ms later."""

    def __init__(self, tp: TopicPartition) -> None:
        self.tp, self.next = tp, 1

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[_Record]]:
        await asyncio.sleep(0.005)
        self.next += 1
        return {self.tp: _records(self.tp, self.next - 1, 1)}


async def test_a_busy_batch_closes_when_its_window_ends() -> None:
    consumer = _consumer("hazmat")
    consumer.window_s, consumer.fetch_limit = 0.1, 1000
    tp0 = TopicPartition("t", 0)
    consumer._consumer = _SteadyKafka(tp0)  # type: ignore[assignment]
    t0 = time.monotonic()
    got = await consumer._coalesce({tp0: _records(tp0, 0, 1)})
    assert 0.09 <= time.monotonic() - t0 < 1.0
    assert [r.offset for r in got[tp0]] == list(range(len(got[tp0])))
    assert 5 <= len(got[tp0]) <= 21


async def test_a_batch_closes_when_its_topic_goes_quiet() -> None:
    consumer = _consumer("air")
    consumer.window_s, consumer.fetch_limit = 2.0, 1000
    tp0 = TopicPartition("t", 0)
    consumer._consumer = _ScriptedKafka([{tp0: _records(tp0, 1, 2)}])  # type: ignore[assignment]
    t0 = time.monotonic()
    got = await consumer._coalesce({tp0: _records(tp0, 0, 1)})
    assert time.monotonic() - t0 < 0.5  # not the 2 s window: the poll after the last records brought nothing
    assert [r.offset for r in got[tp0]] == [0, 1, 2]


async def test_a_restore_that_fails_after_an_assignment_ends_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka only logs a failing listener; the kind must not carry on with reset state."""
    import streams.consumer as consumer_module

    consumer = _consumer("hazmat")

    async def failing_reload(kind: str, partitions: set[int]) -> None:
        raise ConnectionError("redis down")

    died: list[str] = []
    monkeypatch.setattr(consumer.runtime, "reload_kind", failing_reload, raising=False)
    monkeypatch.setattr(consumer_module, "_die", died.append)
    await consumer.on_assigned({TopicPartition(consumer.topic, 0)})
    assert died and "hazmat" in died[0]


def test_commits_are_spaced_so_that_checkpoints_take_a_tenth_of_the_time() -> None:
    from streams.consumer import CHECKPOINT_SHARE, COMMIT_INTERVAL_S, MAX_COMMIT_INTERVAL_S

    consumer = _consumer("air")
    assert consumer.commit_interval_s == COMMIT_INTERVAL_S
    consumer._learn_checkpoint(0.01)  # a small state: every second, as Faust does
    assert consumer.commit_interval_s == COMMIT_INTERVAL_S
    consumer._learn_checkpoint(0.8)  # 100k sensors' records: 8 s apart
    assert consumer.commit_interval_s == pytest.approx(0.8 / CHECKPOINT_SHARE)
    consumer._learn_checkpoint(60.0)  # never more than the cap: a crash repeats at most this much
    assert consumer.commit_interval_s == MAX_COMMIT_INTERVAL_S
    consumer._learn_checkpoint(0.05)  # the state shrank again: back to every second
    assert consumer.commit_interval_s == COMMIT_INTERVAL_S
