"""A naive Faust agent: a ``faust.Record`` per reading, ``async for`` over one stream of
the four input topics, and the gas rule (gas_lel >= 25 %LEL -> one alert JSON per reading
to the alerts topic). Single readings arrive as the model (``value_type=Reading``); a
gateway array arrives as JSON and becomes one model per element (``Reading.from_data``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from importlib import metadata
from typing import Any

import faust
from common import GAS_SETPOINT, Meter, gas_alert, parse_args


class Reading(faust.Record, serializer="json"):
    sensor_id: str
    ts: Any  # RFC 3339 text or epoch ms
    values: dict[str, float]
    flag: str = "N"


def build(a: argparse.Namespace, meter: Meter) -> faust.App:
    app = faust.App(
        a.group, broker=f"kafka://{a.bootstrap}", web_enabled=False, store="memory://",
        consumer_auto_offset_reset="earliest", topic_partitions=4, topic_replication_factor=1,
        datadir=os.environ.get("BENCH_PEER_DATA", "/tmp") + f"/{a.group}",
    )
    single = a.shape == "single"
    source = app.topic(*a.topics.split(","), key_type=bytes,
                       **({"value_type": Reading} if single else {"value_serializer": "json"}))
    alerts = app.topic(a.alerts, key_type=bytes, value_type=bytes, value_serializer="raw")

    @app.agent(source)
    async def readings(stream: Any) -> None:
        async for value in stream:
            meter.start()
            batch = [value] if single else [Reading.from_data(item) for item in value]
            for reading in batch:
                lel = reading.values.get("gas_lel")
                if lel is not None and lel >= GAS_SETPOINT:
                    meter.alerts += 1
                    await alerts.send(key=reading.sensor_id.encode(),
                                      value=json.dumps(gas_alert(reading.sensor_id, reading.ts, lel)).encode())
            if meter.add(len(batch), 1, stream.current_event.message.topic):
                finish()

    def finish() -> None:
        meter.report({"faust-streaming": metadata.version("faust-streaming"),
                      "aiokafka": metadata.version("aiokafka")})
        os.kill(os.getpid(), signal.SIGTERM)  # the Faust worker's own graceful stop

    @app.timer(5.0)  # type: ignore[untyped-decorator]
    async def watchdog() -> None:
        if meter.overdue() and not meter.done:
            meter.report({"faust-streaming": metadata.version("faust-streaming")})
            os.kill(os.getpid(), signal.SIGTERM)

    return app


def main() -> None:
    a = parse_args(__doc__.split("\n")[0])
    meter = Meter(a.expected, a.deadline_s)
    app = build(a, meter)
    sys.argv = [sys.argv[0]]  # the Faust worker parses argv itself
    logging.getLogger("faust").setLevel(logging.WARNING)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
