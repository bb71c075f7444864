"""`cityops produce`: publish a JSONL file, one line = one message, bytes unchanged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from streams.kafka_clients import start_client


class _Keyed(msgspec.Struct):
    sensor_id: str


_KEY = msgspec.json.Decoder(_Keyed | list[_Keyed])


def message_key(line: bytes) -> bytes | None:
    """The sensor_id of a reading (or of a gateway array's first reading), so a
    sensor's readings land on one partition in order; None for lines that are
    not readings (they are published anyway and dead-lettered by the worker)."""
    try:
        item = _KEY.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _lenient_key(line)
    first: _Keyed | None = (item[0] if item else None) if isinstance(item, list) else item
    return first.sensor_id.encode() if first is not None else None


def _lenient_key(line: bytes) -> bytes | None:
    """The stdlib parser accepts NaN/Infinity: such a reading still has a sensor."""
    try:
        item = json.loads(line)
    except (ValueError, RecursionError):
        return None
    first = (item[0] if item else None) if isinstance(item, list) else item
    sensor = first.get("sensor_id") if isinstance(first, dict) else None
    return sensor.encode() if isinstance(sensor, str) and sensor else None


def enumerate_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line without its terminator); blank lines are skipped."""
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield line_no, line


#: sends awaited together: bounds the futures held in memory for a large file
WINDOW = 10_000
#: refusals reported line by line; past that only counted
MAX_DETAILED = 20
#: the broker's message.max.bytes default, for a topic the broker does not know yet
BROKER_DEFAULT_MAX_BYTES = 1_048_588


@dataclass
class ProduceResult:
    """What the broker acknowledged, and the lines it (or the client) refused, with why."""

    published: int = 0
    refused: int = 0
    details: list[tuple[int, str]] = field(default_factory=list)

    def refuse(self, line_no: int, error: BaseException) -> None:
        self.refused += 1
        if len(self.details) < MAX_DETAILED:
            self.details.append((line_no, _reason(error)))


def _reason(error: BaseException) -> str:
    name = type(error).__name__
    if isinstance(error, MessageSizeTooLargeError):
        return (f"{name}: the message is larger than the topic accepts ({error}); split the line "
                "(a gateway array into several) or raise max.message.bytes on the topic")
    return f"{name}: {error}" if str(error) else name


async def topic_max_message_bytes(bootstrap: str, topic: str) -> int:
    """The topic's max.message.bytes (the broker default if the topic does not exist yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await start_client(admin, bootstrap)
    try:
        response = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    error_code, _, _, _, entries = response[0].resources[0][:5]
    if error_code == 0:
        for name, value, *_ in entries:
            if name == "max.message.bytes":
                return int(value)
    return BROKER_DEFAULT_MAX_BYTES


async def produce_file(bootstrap: str, topic: str, path: Path) -> ProduceResult:
    """Sends every line of ``path``; a line counts as published only once the broker acknowledged it.

    A line over the topic's size limit is refused by the client before it is sent: a refusal
    from the broker would break the idempotent producer's sequence and fail every later line.
    """
    limit = await topic_max_message_bytes(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=5, max_request_size=limit,
                                # a batch of small lines must not exceed the topic's limit either
                                max_batch_size=min(16_384, limit))
    await start_client(producer, bootstrap)
    result = ProduceResult()
    try:
        pending: list[tuple[int, asyncio.Future[object]]] = []
        for line_no, line in enumerate_lines(path):
            try:
                pending.append((line_no, await producer.send(topic, value=line, key=message_key(line))))
            except KafkaError as error:  # refused before it was sent: over the topic's limit
                result.refuse(line_no, error)
            if len(pending) >= WINDOW:
                await _settle(pending, result)
        await _settle(pending, result)
        return result
    finally:
        await producer.stop()


async def _settle(pending: list[tuple[int, asyncio.Future[object]]], result: ProduceResult) -> None:
    outcomes = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
    for (line_no, _), outcome in zip(pending, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            result.refuse(line_no, outcome)
        else:
            result.published += 1
    pending.clear()
