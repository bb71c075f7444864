"""The live alarm events of a window: from ``city.alerts``, or the JSONL alarm archive
when Kafka no longer holds the window's start."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

from sinks.base import Alert
from streams.replay.kafka_source import read_windows


async def live_alerts(bootstrap: str, topic: str, from_ms: int, to_ms: int,
                      jsonl_dir: Path | None) -> tuple[list[Alert], str]:
    """Events with event time in [from_ms, to_ms), each once, and where they came from.

    An alert is written after the reading it is about arrived, so its Kafka timestamp
    is at or after the reading's: seeking ``city.alerts`` to from_ms misses none."""
    window = (await read_windows(bootstrap, [topic], from_ms, None))[topic]
    if window.exists and (window.complete or jsonl_dir is None or not jsonl_dir.is_dir()):
        decoded = [_decode(m.value) for m in window.messages]
        return _unique(a for a in decoded if a is not None and from_ms <= a.event_time_ms < to_ms), topic
    if jsonl_dir is None or not jsonl_dir.is_dir():
        return [], "none"
    found: list[Alert] = []
    for path in sorted(jsonl_dir.glob("alerts-*.jsonl")):
        with path.open("rb") as lines:
            found.extend(a for a in map(_decode, lines) if a is not None and from_ms <= a.event_time_ms < to_ms)
    return _unique(found), str(jsonl_dir)


def _decode(value: bytes) -> Alert | None:
    try:
        return Alert.from_json(value.strip())
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # a torn last line, or not an alert


def _unique(alerts: Iterable[Alert]) -> list[Alert]:
    seen: dict[str, Alert] = {}
    for alert in alerts:
        seen.setdefault(alert.alert_id, alert)
    return list(seen.values())
