"""Consumer lag per input partition: how far the workers' consumer groups are behind.

``cityops_consumer_lag{kind, partition}`` = the partition's end offset minus the committed
offset of the kind's consumer group (all of the end offset while nothing is committed
yet), read every ``period_s`` with an admin client and an offset-only consumer, as lag
exporters do. Every worker exports the whole groups' lag, so boards take
``max by (kind, partition)``. A scrape reads the last copy; it never waits on Kafka.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.periodic import PeriodicRefresh


class ConsumerLag(PeriodicRefresh, Collector):
    errors = (KafkaError, OSError)  # the worker logs Kafka outages itself
    task_name = "cityops-consumer-lag"

    def __init__(self, bootstrap: str, group: str | Mapping[str, str], topics: Mapping[str, str],
                 period_s: float = 10.0) -> None:
        """``group``: one consumer group for every topic, or per kind (kind -> group)."""
        self.bootstrap, self.topics, self.period_s = bootstrap, dict(topics), period_s  # topic -> kind
        self.groups = {kind: group if isinstance(group, str) else group[kind] for kind in self.topics.values()}
        self.lag: dict[tuple[str, int], int] = {}  # (kind, partition) -> messages behind
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None

    async def refresh(self) -> None:
        if self._admin is None or self._offsets is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            self._offsets = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
            await self._admin.start()
            await self._offsets.start()
        described = await self._admin.describe_topics(list(self.topics))  # per refresh: partitions added are seen
        partitions = [TopicPartition(topic["topic"], p["partition"]) for topic in described
                      if topic["error_code"] == 0 for p in topic["partitions"]]
        if not partitions:
            return
        ends = await self._offsets.end_offsets(partitions)
        committed = {}
        for group in sorted(set(self.groups.values())):
            mine = [tp for tp in partitions if self.groups[self.topics[tp.topic]] == group]
            committed.update(await self._admin.list_consumer_group_offsets(group, partitions=mine))
        lag = {}
        for tp in partitions:
            done = committed.get(tp)
            position = done.offset if done is not None and done.offset >= 0 else 0
            lag[(self.topics[tp.topic], tp.partition)] = max(0, ends[tp] - position)
        self.lag = lag

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("cityops_consumer_lag", "Messages of an input partition not yet committed by the "
                                   "kind's consumer group (end offset - committed offset)", labels=["kind", "partition"])
        for (kind, partition), behind in sorted(self.lag.items()):
            family.add_metric([kind, str(partition)], float(behind))
        yield family

    async def close(self) -> None:
        await self.stop()
        with contextlib.suppress(KafkaError, OSError):
            if self._offsets is not None:
                await self._offsets.stop()
            if self._admin is not None:
                await self._admin.close()
        self._admin = self._offsets = None
