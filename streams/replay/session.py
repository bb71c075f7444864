"""One replay's alarm side: the live worker's steps in a namespace of its own.

Per batch, as in streams/runtime.py: the kind's pipeline (decoder, detectors, routes),
then the alarm board, the alarm store and the notifier, all in Redis under
``cityops:<replay namespace>:*``, so inhibition, "new vs. known to a receiver" and
the alarm lifecycle behave as they did live, and no live key is read or written.
The receivers are replaced by :class:`RecordingReceiver`: what each would have been
sent, and when (on the replay's clock), is kept in memory; nothing leaves the process.

Not replayed: silences and acknowledgements (people's actions, in the live
namespace) and repeats, which depend on when people acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis

from sinks.alarm_store import AlarmChange, AlarmStore
from sinks.base import Alert
from sinks.noise import InhibitRule
from sinks.notifier import Notifier, Route
from sinks.redis_board import RedisAlarmBoard, delete_namespace
from sinks.silences import SilenceCache, SilenceStore
from streams.decode import RawMessage
from streams.pipeline import BatchResult, KindPipeline
from streams.topology import Topology


@dataclass(frozen=True, slots=True)
class Notification:
    """What a receiver would have been sent."""

    receiver: str
    alert_id: str
    alarm_key: str
    status: str
    severity: str
    sensor_id: str
    site_id: str
    departments: tuple[str, ...]
    at_ms: int  # when the reading that raised it reached Kafka (RecordingReceiver)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "departments": list(self.departments)}


class RecordingReceiver:
    """A receiver's sink that records instead of sending (the notifier's ReceiverSink).

    A notification's time is when the reading that raised it reached Kafka (for a
    recording: the reading's time); the live worker put it in the outbox within the
    kind's latency budget after that. An alarm raised by no reading (no_signal) is
    timed at its event time. So the times do not depend on how the replay batches."""

    def __init__(self, name: str, when: Callable[[Alert], int], into: list[Notification]) -> None:
        self.name, self._when, self._into = name, when, into

    async def write_batch(self, alerts: Sequence[Alert], starts: Mapping[str, int] | None = None) -> None:
        self._into.extend(
            Notification(self.name, a.alert_id, a.alarm_key, a.status, a.severity, a.sensor_id, a.site_id,
                         tuple(a.departments), self._when(a))
            for a in alerts)

    async def write_repeat(self, due: Sequence[tuple[Alert, int]], starts: Mapping[str, int] | None = None) -> None:
        await self.write_batch([alert for alert, _ in due], starts)

    def start(self, *, listen: bool = False) -> None:
        pass

    async def close(self) -> None:
        pass


@dataclass(slots=True)
class ReplayRecord:
    """Everything a replay produced, in processing order."""

    alerts: list[Alert]
    changes: list[AlarmChange]
    notifications: list[Notification]
    n_messages: int = 0
    n_readings: int = 0
    n_dead: int = 0
    dead_by_reason: dict[str, int] = field(default_factory=dict)


class ReplaySession:
    def __init__(self, topology: Topology, client: aioredis.Redis, namespace: str,
                 arrival: Mapping[tuple[str, int], int] | None = None) -> None:
        self.topology, self.redis, self.namespace = topology, client, namespace
        self.arrival = arrival or {}
        self.clock_ms = 0
        self.record = ReplayRecord([], [], [])
        self.pipelines = {kind: KindPipeline(topology, kind) for kind in topology.spec.kinds}
        self.board = RedisAlarmBoard(client, namespace)
        self.store = AlarmStore(client, namespace, clock_ms=self._clock)
        notes = topology.spec.notifications
        # every receiver of the topology: a replay sends nothing, so its URL does not matter
        routes = [
            Route(name=spec.name, sink=RecordingReceiver(spec.name, self._arrived, self.record.notifications),
                  departments=None if spec.departments is None else frozenset(spec.departments),
                  min_severity=spec.min_severity, send_resolved=spec.send_resolved, repeat=False)
            for spec in notes.receivers
        ]
        self.notifier = Notifier(
            client, namespace, self.board, self.store, SilenceCache(SilenceStore(client, namespace)), routes,
            [InhibitRule.from_spec(rule) for rule in notes.inhibit], topology.rule_categories(),
            repeat_interval_ms=int(notes.repeat_interval_s * 1000), repeat_severities=notes.repeat_severities,
            clock_ms=self._clock,
        )

    def _clock(self) -> int:
        return self.clock_ms

    def _arrived(self, alert: Alert) -> int:
        return self.arrival.get((alert.sensor_id, alert.event_time_ms), alert.event_time_ms)

    async def process(self, kind: str, batch: Sequence[RawMessage], clock_ms: int) -> BatchResult:
        self.clock_ms = clock_ms
        result = self.pipelines[kind].process(batch, clock_ms)
        await self.board.write_batch(result.alerts)
        self.record.changes.extend(await self.store.apply(result.alerts))
        await self.notifier.notify(result.alerts)
        record = self.record
        record.alerts.extend(result.alerts)
        record.n_messages += result.n_messages
        record.n_readings += result.n_readings
        record.n_dead += len(result.dead)
        for dead in result.dead:
            record.dead_by_reason[dead.reason] = record.dead_by_reason.get(dead.reason, 0) + 1
        return result

    async def delete(self) -> int:
        """Remove every key of the replay's namespace; how many there were."""
        return await delete_namespace(self.redis, self.namespace)
