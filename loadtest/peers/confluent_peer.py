"""Bare confluent-kafka: ``Consumer.consume(num_messages=...)`` in a plain loop + one
msgspec decode per message body. Fetch and decode only, no rule, no producer."""

from __future__ import annotations

import argparse
from importlib import metadata

import confluent_kafka
import msgspec
from common import Meter, parse_args


class Reading(msgspec.Struct):
    sensor_id: str
    ts: str | int
    values: dict[str, float]
    flag: str = "N"


def drain(a: argparse.Namespace) -> Meter:
    decoder = msgspec.json.Decoder(Reading | list[Reading])
    meter = Meter(a.expected, a.deadline_s)
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": a.bootstrap, "group.id": a.group,
        "auto.offset.reset": "earliest", "enable.auto.commit": True,
    })
    consumer.subscribe(a.topics.split(","))
    try:
        while not meter.done and not meter.overdue():
            msgs = consumer.consume(num_messages=a.max_records, timeout=0.1)
            if msgs:
                meter.start()
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                        continue
                    raise confluent_kafka.KafkaException(err)
                value = decoder.decode(msg.value() or b"")
                meter.add(len(value) if isinstance(value, list) else 1, 1, msg.topic() or "")
    finally:
        consumer.close()
    return meter


def main() -> None:
    a = parse_args(__doc__.split("\n")[0])
    meter = drain(a)
    meter.report({"confluent-kafka": metadata.version("confluent-kafka"),
                  "librdkafka": confluent_kafka.libversion()[0], "msgspec": metadata.version("msgspec")},
                 max_records=a.max_records)


if __name__ == "__main__":
    main()
