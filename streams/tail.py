"""`cityops alerts tail`: follow the alerts topic as a readable, coloured table."""

from __future__ import annotations

import asyncio
import sys

from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.text import Text

from sinks.base import Alert
from streams.kafka_clients import start_client

_STYLE = {"red": "bold white on red", "orange": "bold black on dark_orange", "yellow": "black on yellow", "blue": "white on blue"}
_STATUS = {"firing": "FIRING", "updated": "UPDATE", "resolved": "CLEAR "}
_COLUMNS = f"{'time':<12} {'level':<8} {'status':<6} {'kind':<7} {'rule':<22} {'district':<11} {'sensor':<12} {'value':>9}  summary"


def render(alert: Alert) -> Text:
    """One alert as one table row, coloured by China's warning level."""
    row = Text()
    row.append(f"{alert.event_ts[11:23]:<12} ")
    row.append(f" {alert.level.upper():<6} ", style=_STYLE.get(alert.level, ""))
    row.append(f" {_STATUS[alert.status]:<6} ", style="dim" if alert.status == "resolved" else "bold")
    row.append(f"{alert.kind:<7} {alert.rule:<22.22} {alert.district:<11.11} {alert.sensor_id:<12.12} {alert.value:>9.1f}  ")
    row.append(alert.summary, style="dim" if alert.status == "resolved" else "")
    return row


async def tail_alerts(
    bootstrap: str, topic: str, as_json: bool, from_beginning: bool, max_alerts: int | None, idle_timeout_s: float | None
) -> int:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest" if from_beginning else "latest")
    console = Console(highlight=False)
    seen = 0
    await start_client(consumer, bootstrap)
    try:
        if not as_json:
            console.print(Text(_COLUMNS, style="bold underline"), soft_wrap=True)
        while max_alerts is None or seen < max_alerts:
            batch = await consumer.getmany(timeout_ms=int((idle_timeout_s or 3600) * 1000), max_records=500)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    seen += 1
                    _show(console, record.value, as_json)
                    if max_alerts is not None and seen >= max_alerts:
                        break
    except asyncio.CancelledError:
        pass
    finally:
        await consumer.stop()
    return seen


def _show(console: Console, value: bytes | None, as_json: bool) -> None:
    if value is None:
        return
    if as_json:
        sys.stdout.write(value.decode("utf-8", "replace") + "\n")
        sys.stdout.flush()
        return
    console.print(render(Alert.from_json(value)), soft_wrap=True)
