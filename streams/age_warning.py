"""One clear warning when most of a batch is dead-lettered for its event time.

Recorded data produced to a readings topic (a year-old incident, a station's
store-and-forward backlog) or a gateway whose clock is off is dead-lettered as
`ts_past` / `ts_future`, one record per reading: correct, but an operator
watching the log saw nothing. This says so once per topic and reason per
interval (not per batch), with the numbers and the fix.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streams.deadletter import DeadLetter, Reason
from streams.topology_spec import InputSpec

log = logging.getLogger(__name__)

AGE_REASONS = (Reason.TS_PAST.value, Reason.TS_FUTURE.value)
#: a batch warns when more than this share of its readings was dead-lettered for one age reason
MOST = 0.5
#: a topic and reason warns at most once per this many (wall-clock) seconds; the rest are counted
INTERVAL_S = 60.0


@dataclass
class _Quiet:
    last_s: float
    batches: int = 0
    readings: int = 0


class AgeRejectionWarner:
    def __init__(self, limits: InputSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._quiet: dict[tuple[str, str], _Quiet] = {}

    def observe(self, kind: str, n_readings: int, dead: Sequence[DeadLetter]) -> list[str]:
        """Warn for the batch if most of it was too old or too far ahead; the lines logged.

        ``n_readings`` are the batch's valid readings; with its dead letters (one per
        rejected reading or message) they are the batch's input."""
        by_topic_reason = Counter((d.topic, d.reason) for d in dead if d.reason in AGE_REASONS)
        if not by_topic_reason:
            return []
        total = n_readings + len(dead)
        lines = []
        now_s = self._clock()
        for (topic, reason), count in sorted(by_topic_reason.items()):
            if count <= MOST * total:
                continue
            quiet = self._quiet.get((topic, reason))
            if quiet is not None and now_s - quiet.last_s < INTERVAL_S:
                quiet.batches += 1
                quiet.readings += count
                continue
            since = (f" (and {quiet.readings} more in {quiet.batches} batches in the last {now_s - quiet.last_s:.0f} s)"
                     if quiet is not None and quiet.batches else "")
            self._quiet[(topic, reason)] = _Quiet(now_s)
            line = self._message(kind, topic, reason, count, total) + since
            log.warning("%s", line)
            lines.append(line)
        return lines

    def _message(self, kind: str, topic: str, reason: str, count: int, total: int) -> str:
        head = f"{topic}: {count} of {total} {kind} readings in a batch were dead-lettered as {reason}"
        if reason == Reason.TS_PAST.value:
            return (f"{head}: their event time is more than input.max_age_s = {self._limits.max_age_s:,.0f} s "
                    f"({self._limits.max_age_s / 86_400:g} days) before the worker's clock. Recorded data does not "
                    "belong on the live topics: replay it apart from the live system (docs/operations.md "
                    "\"Recorded data\"); if the gateway's clock is behind, fix its time sync")
        return (f"{head}: their event time is more than input.max_future_skew_s = "
                f"{self._limits.max_future_skew_s:g} s ahead of the worker's clock. The sender's clock is ahead: "
                "fix its time sync (NTP), or check that ts is in milliseconds since the epoch, UTC")
