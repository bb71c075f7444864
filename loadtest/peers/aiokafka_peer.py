"""Bare aiokafka: ``getmany(max_records=...)`` + one msgspec decode per message body.
Fetch and decode only, no rule, no producer: the ceiling of the worker's own client."""

from __future__ import annotations

import argparse
import asyncio
from importlib import metadata

import msgspec
from aiokafka import AIOKafkaConsumer
from common import Meter, parse_args


class Reading(msgspec.Struct):
    sensor_id: str
    ts: str | int
    values: dict[str, float]
    flag: str = "N"


async def drain(a: argparse.Namespace) -> Meter:
    decoder = msgspec.json.Decoder(Reading | list[Reading])
    meter = Meter(a.expected, a.deadline_s)
    consumer = AIOKafkaConsumer(
        *a.topics.split(","), bootstrap_servers=a.bootstrap, group_id=a.group,
        auto_offset_reset="earliest", enable_auto_commit=True,
    )
    await consumer.start()
    try:
        while not meter.done and not meter.overdue():
            batch = await consumer.getmany(timeout_ms=100, max_records=a.max_records)
            if batch:
                meter.start()
            for records in batch.values():
                for rec in records:
                    value = decoder.decode(rec.value)
                    meter.add(len(value) if isinstance(value, list) else 1, 1, rec.topic)
    finally:
        await consumer.stop()
    return meter


def main() -> None:
    a = parse_args(__doc__.split("\n")[0])
    meter = asyncio.run(drain(a))
    meter.report({"aiokafka": metadata.version("aiokafka"), "msgspec": metadata.version("msgspec")},
                 max_records=a.max_records)


if __name__ == "__main__":
    main()
