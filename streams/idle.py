"""Which input partitions are idle: assigned to this worker but silent for a while.

A partition's event-time clock moves only with its own records (detectors/no_signal.py),
so a partition that delivers nothing at all (its producer or gateway is down) would
never have its sensors judged silent. As with Flink's ``withIdleness``, a partition
that delivered nothing for ``idle_after_s`` of wall time while the worker owns it is
*idle*, and its clock may follow the others'. This is the one place where wall time
enters silence detection; it only matters while a whole partition is quiet. A
partition that is merely behind (a backlog being caught up) keeps delivering, so it is
never idle and keeps its own clock.
"""

from __future__ import annotations

from collections.abc import Iterable

IDLE_AFTER_MIN_S = 30.0
IDLE_AFTER_PERIODS = 3.0


def idle_after_s(expected_period_s: float) -> float:
    """Wall time without a record after which a partition of a kind counts as idle."""
    return max(IDLE_AFTER_MIN_S, IDLE_AFTER_PERIODS * expected_period_s)


class IdlePartitions:
    """Wall time of each owned partition's latest delivery; the idle ones at a given time."""

    def __init__(self, idle_after_s: float) -> None:
        self.idle_after_ms = round(idle_after_s * 1000)
        self._last_ms: dict[int, int] = {}

    def assign(self, partitions: Iterable[int], now_ms: int) -> None:
        """This worker owns exactly ``partitions`` from now on (each counts as just heard)."""
        self._last_ms = {p: self._last_ms.get(p, now_ms) for p in partitions}

    def delivered(self, partitions: Iterable[int], now_ms: int) -> None:
        for p in partitions:
            self._last_ms[p] = now_ms

    def idle(self, now_ms: int) -> tuple[int, ...]:
        return tuple(sorted(p for p, t in self._last_ms.items() if now_ms - t >= self.idle_after_ms))
