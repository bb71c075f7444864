"""`cityops replay`, without the terminal: load the window, run it, compare, clean up."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from sinks.base import Alert
from streams.archive.consumer import archive_root
from streams.errors import CityOpsError
from streams.pipeline import KindPipeline
from streams.replay.diff import AlarmDiff, diff, within
from streams.replay.live import live_alerts
from streams.replay.session import Notification, ReplayRecord, ReplaySession
from streams.replay.window import Batching, ClockChoice, KindWindow, SourceChoice, load_windows, merged
from streams.settings import Settings
from streams.topology import Topology

# (messages done, readings done) after each batch
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    from_ms: int
    to_ms: int
    # detector state (baselines, last heard) is built from this much before from_ms; its
    # alarms and notifications are not reported (the live worker had that state at from_ms)
    warmup_ms: int = 0
    kinds: tuple[str, ...] = ()  # () = every kind
    sensors: frozenset[str] | None = None  # alarms and report of these only (all are processed)
    speed: float | None = None  # None = as fast as possible; 60 = an hour in a minute
    source: SourceChoice = "auto"
    clock: ClockChoice = "auto"
    batch_size: int | None = 5000  # None: batch as the live worker did (its window and max_messages; slow)
    keep: bool = False
    compare: bool = True  # against the live alarm events


@dataclass(slots=True)
class ReplayOutcome:
    namespace: str
    windows: list[KindWindow]
    record: ReplayRecord
    alerts: list[Alert]  # the window's events (by event time) of the chosen sensors
    notifications: list[Notification]
    live: list[Alert] | None = None
    live_source: str = "none"
    diff: AlarmDiff | None = None
    seconds: float = 0.0
    keys_deleted: int = 0
    notes: list[str] = field(default_factory=list)
    pipelines: dict[str, KindPipeline] = field(default_factory=dict)  # as the replay left them (set points)

    @property
    def readings_per_s(self) -> float:
        return self.record.n_readings / self.seconds if self.seconds > 0 else 0.0


def kinds_of(topology: Topology, wanted: tuple[str, ...]) -> list[str]:
    known = list(topology.spec.kinds)
    unknown = [k for k in wanted if k not in known]
    if unknown:
        raise CityOpsError(f"--kinds {','.join(unknown)}: not in the topology; its kinds are {', '.join(known)}")
    return list(wanted) or known


async def load(settings: Settings, topology: Topology, options: ReplayOptions) -> list[KindWindow]:
    return await load_windows(settings.bootstrap, archive_root(settings, topology), topology,
                              kinds_of(topology, options.kinds), options.from_ms - options.warmup_ms, options.to_ms,
                              options.source, options.clock)


async def run_replay(settings: Settings, topology: Topology, live_topology: Topology, options: ReplayOptions,
                     windows: list[KindWindow], progress: Progress | None = None) -> ReplayOutcome:
    """Run ``windows`` through ``topology`` in namespace ``replay-<id>``; delete it at the end
    (also on Ctrl-C or an error) unless ``options.keep``."""
    namespace = f"replay-{uuid.uuid4().hex[:12]}"
    client = aioredis.Redis.from_url(settings.redis_url)
    arrival = {key: ms for window in windows for key, ms in window.arrival.items()}
    session = ReplaySession(topology, client, namespace, arrival)
    outcome = ReplayOutcome(namespace, windows, session.record, [], [], pipelines=session.pipelines)
    try:
        started = time.perf_counter()
        await _run(session, windows, options, progress)
        outcome.seconds = time.perf_counter() - started
        chosen = within(session.record.alerts, options.from_ms, options.to_ms, options.sensors)
        outcome.alerts = chosen
        outcome.notifications = [n for n in session.record.notifications if n.at_ms >= options.from_ms
                                 and (options.sensors is None or n.sensor_id in options.sensors)]
        if options.compare:
            alarms = live_topology.spec.notifications.archive
            live, outcome.live_source = await live_alerts(
                settings.bootstrap, live_topology.spec.topics.alerts, options.from_ms, options.to_ms,
                settings.data_dir / alarms.directory if alarms.enabled else None)
            kinds = {w.kind for w in windows}
            outcome.live = [a for a in within(live, options.from_ms, options.to_ms, options.sensors) if a.kind in kinds]
            outcome.diff = diff(outcome.live, chosen)
    finally:
        try:
            if not options.keep:
                outcome.keys_deleted = await asyncio.shield(session.delete())
        finally:
            await client.aclose()
    return outcome


async def _run(session: ReplaySession, windows: list[KindWindow], options: ReplayOptions,
               progress: Progress | None) -> None:
    wall_start = time.monotonic()
    clock_start: int | None = None
    n_messages = n_readings = 0
    batching = {}
    for kind in session.pipelines:
        spec = session.topology.kind(kind).batch
        if options.speed is not None:  # paced: a batch per wall-clock second at most
            batching[kind] = Batching(None, options.batch_size or spec.max_messages, 1000 * options.speed)
        else:
            batching[kind] = Batching(options.batch_size, spec.max_messages, spec.window_ms)
    for clock, kind, batch in merged(windows, batching):
        if options.speed is not None and clock >= options.from_ms:  # the warm-up runs at full speed
            if clock_start is None:
                wall_start, clock_start = time.monotonic(), clock
            due = wall_start + (clock - clock_start) / 1000 / options.speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        result = await session.process(kind, batch, clock)
        n_messages += result.n_messages
        n_readings += result.n_readings
        if progress is not None:
            progress(n_messages, n_readings)


def report_dir_ok(path: Path) -> None:
    """Fail before the replay, not after it, when the report cannot be written."""
    if path.exists() and not path.is_dir():
        raise CityOpsError(f"--report {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CityOpsError(f"--report {path}: cannot create it ({exc.strerror}); give a writable directory") from None
    if not os.access(path, os.W_OK):
        raise CityOpsError(f"--report {path}: not writable; give a writable directory")
