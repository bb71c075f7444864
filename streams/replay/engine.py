"""Messages -> alarm events through a fresh pipeline alone (no Redis): the replay's
clock and batches (streams/replay/window.py) without its alarm store and notifier, for
checking that a recording gives the live alarm events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sinks.base import Alert
from streams.archive.rows import archive_decoders
from streams.decode import RawMessage
from streams.pipeline import KindPipeline
from streams.replay.window import Batching, KindWindow, batches, event_times
from streams.topology import Topology


def replay_kind(topology: Topology, kind: str, messages: Sequence[RawMessage], batch_size: int = 1000) -> list[Alert]:
    """Every alarm event of ``messages`` (in Kafka order), on the Kafka clock."""
    window = KindWindow(kind, "kafka", "kafka", list(messages))
    event_times(archive_decoders(topology)[kind], window)
    pipeline = KindPipeline(topology, kind)
    alerts: list[Alert] = []
    for clock, batch in batches(window, Batching(batch_size)):
        alerts.extend(pipeline.process(batch, clock).alerts)
    return alerts


def alert_ids(alerts: Iterable[Alert]) -> list[tuple[str, str, int]]:
    return [(a.alert_id, a.status, a.event_time_ms) for a in alerts]
