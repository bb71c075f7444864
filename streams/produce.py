"""`cityops produce`: publish a JSONL file, one line = one message, bytes unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaProducer
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


def read_lines(path: Path) -> Iterator[bytes]:
    """Each line without its line terminator; blank lines are skipped."""
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield line


async def produce_file(bootstrap: str, topic: str, path: Path) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=5, max_request_size=4 * 1024 * 1024)
    await start_client(producer, bootstrap)
    try:
        count = 0
        for line in read_lines(path):
            await producer.send(topic, value=line, key=message_key(line))
            count += 1
        await producer.flush()
        return count
    finally:
        await producer.stop()
