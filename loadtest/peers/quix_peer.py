"""Quix Streams: one StreamingDataFrame per input topic with the gas rule (filter
gas_lel >= 25 %LEL -> an alert JSON to the alerts topic); a gateway array is exploded
into one row per reading with ``sdf.apply(..., expand=True)``. Runs in its own venv
(loadtest/peers/quix-requirements.txt)."""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable
from importlib import metadata
from typing import Any

import confluent_kafka
from common import GAS_SETPOINT, Meter, gas_alert, parse_args
from quixstreams import Application


def build(a: argparse.Namespace, meter: Meter) -> Application:
    app = Application(
        broker_address=a.bootstrap, consumer_group=a.group, auto_offset_reset="earliest",
        state_dir=os.environ.get("BENCH_PEER_DATA", "/tmp") + f"/{a.group}", loglevel="WARNING",
        use_changelog_topics=False,
    )
    alerts = app.topic(a.alerts, value_serializer="json")

    def arrived(_message: Any) -> None:
        meter.start()
        meter.messages += 1

    def counter(topic: str) -> Callable[[dict[str, Any]], None]:
        def count(_reading: dict[str, Any]) -> None:
            if meter.add(1, 0, topic):
                app.stop()  # leaves app.run() after this row
        return count

    def is_gas_alarm(reading: dict[str, Any]) -> bool:
        return bool(reading["values"].get("gas_lel", 0.0) >= GAS_SETPOINT)

    def to_alert(reading: dict[str, Any]) -> dict[str, Any]:
        meter.alerts += 1
        return gas_alert(reading["sensor_id"], reading["ts"], reading["values"]["gas_lel"])

    for name in a.topics.split(","):
        sdf = app.dataframe(app.topic(name, value_deserializer="json"))
        sdf = sdf.update(arrived)
        if a.shape == "gateway":
            sdf = sdf.apply(lambda readings: readings, expand=True)
        sdf = sdf.update(counter(name))
        sdf = sdf.filter(is_gas_alarm).apply(to_alert)
        sdf.to_topic(alerts)
    return app


def main() -> None:
    a = parse_args(__doc__.split("\n")[0])
    meter = Meter(a.expected, a.deadline_s)
    app = build(a, meter)
    watchdog = threading.Timer(a.deadline_s, app.stop)
    watchdog.daemon = True
    watchdog.start()
    app.run()
    meter.report({"quixstreams": metadata.version("quixstreams"),
                  "confluent-kafka": metadata.version("confluent-kafka"),
                  "librdkafka": confluent_kafka.libversion()[0]})


if __name__ == "__main__":
    main()
