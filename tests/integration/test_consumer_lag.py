"""streams/lag.py against the real Kafka: end offset minus the group's committed offset."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from streams import stack
from streams.lag import ConsumerLag
from tests.integration.conftest import produce

pytestmark = pytest.mark.integration


async def refreshed(lag: ConsumerLag, deadline_s: float = 30.0) -> None:
    """``lag.refresh()``, once the broker has a group coordinator: on a broker started
    moments ago (a fresh CI stack) __consumer_offsets is created by the first request."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            await lag.refresh()
            return
        except GroupCoordinatorNotAvailableError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.5)  # poll period


async def test_lag_is_what_the_group_has_not_committed(stack_cfg: stack.StackConfig) -> None:
    topic, group = f"city.lagtest.{uuid.uuid4().hex[:8]}", f"lag-{uuid.uuid4().hex[:8]}"
    stack.ensure_topics(stack_cfg.bootstrap, [(topic, 2)])
    await produce(stack_cfg.bootstrap, topic, [(b"k", b"%d" % i) for i in range(7)])  # one key: one partition
    lag = ConsumerLag(stack_cfg.bootstrap, group, {topic: "hazmat"})
    registry = CollectorRegistry()
    registry.register(lag)
    try:
        await refreshed(lag)
        values = {p: registry.get_sample_value("cityops_consumer_lag", {"kind": "hazmat", "partition": str(p)})
                  for p in (0, 1)}
        assert sorted(values.values()) == [0.0, 7.0], values  # nothing committed yet: all 7 behind
        busy = next(p for p, v in values.items() if v == 7.0)
        committer = AIOKafkaConsumer(bootstrap_servers=stack_cfg.bootstrap, group_id=group, enable_auto_commit=False)
        await committer.start()
        committer.assign([TopicPartition(topic, busy)])
        try:
            await committer.commit({TopicPartition(topic, busy): OffsetAndMetadata(5, "")})
        finally:
            await committer.stop()
        await refreshed(lag)
        assert registry.get_sample_value("cityops_consumer_lag", {"kind": "hazmat", "partition": str(busy)}) == 2.0
    finally:
        await lag.close()
