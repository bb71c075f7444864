"""Messages -> alarms through the worker's own pipeline, with the replay's clock.

The clock of a batch is its newest Kafka timestamp (when the live worker received it,
give or take its batching), not the wall clock: age limits, idle partitions and
everything else that asks "what time is it" see the time of the recording, so data a
year old is judged as it was then.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sinks.base import Alert
from streams.decode import RawMessage
from streams.pipeline import KindPipeline
from streams.topology import Topology


def replay_clock(batch: Sequence[RawMessage]) -> int:
    return max((m.timestamp_ms for m in batch), default=-1)


def replay_kind(topology: Topology, kind: str, messages: Sequence[RawMessage], batch_size: int = 1000) -> list[Alert]:
    """Every alarm event of ``messages`` (in Kafka order) from a fresh pipeline."""
    pipeline = KindPipeline(topology, kind)
    alerts: list[Alert] = []
    for start in range(0, len(messages), batch_size):
        batch = messages[start:start + batch_size]
        alerts.extend(pipeline.process(batch, replay_clock(batch)).alerts)
    return alerts


def alert_ids(alerts: Iterable[Alert]) -> list[tuple[str, str, int]]:
    return [(a.alert_id, a.status, a.event_time_ms) for a in alerts]
