"""Kafka writers: alerts to `city.alerts`, dead letters to `city.deadletter`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from sinks.base import Alert


class KafkaWriter:
    """An idempotent producer whose `send_all` returns once the broker has
    acknowledged every record (acks=all), so offsets may be committed after it."""

    def __init__(self, bootstrap: str, client_id: str = "cityops") -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Create and connect the producer (aiokafka needs the running loop)."""
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                acks="all",
                enable_idempotence=True,
                linger_ms=1,
                max_request_size=4 * 1024 * 1024,
            )
            await producer.start()
            self._producer = producer

    async def send_all(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        if not records:
            return
        await self.start()
        assert self._producer is not None
        futures = [await self._producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class KafkaAlertSink:
    """AlertSink onto the alerts topic, keyed by alarm_key (one alarm's events stay ordered)."""

    def __init__(self, writer: KafkaWriter, topic: str) -> None:
        self._writer = writer
        self.topic = topic

    async def write_batch(self, alerts: Sequence[Alert]) -> None:
        await self._writer.send_all(self.topic, [(a.alarm_key.encode(), a.to_json()) for a in alerts])

    async def close(self) -> None:
        await self._writer.close()
