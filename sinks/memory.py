"""An in-memory sink for tests (like quix's ListSink)."""

from __future__ import annotations

from collections.abc import Sequence

from sinks.base import Alert


class MemorySink:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.closed = False

    async def write_batch(self, alerts: Sequence[Alert]) -> None:
        self.alerts.extend(alerts)

    async def close(self) -> None:
        self.closed = True
