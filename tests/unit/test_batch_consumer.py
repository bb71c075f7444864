"""The batch consumer's pure parts: a fetch as columns, and the fetch cap it learns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from aiokafka import TopicPartition

from streams.consumer import MIN_RECORDS, KindConsumer, to_raw_batch
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
    tightest = min(k.batch.budget_ms for k in topology.spec.kinds.values())
    consumer = KindConsumer(runtime, "air", Settings())
    assert consumer.slice_s == tightest / 4000
    assert consumer.fetch_limit == topology.kind("air").batch.max_messages
