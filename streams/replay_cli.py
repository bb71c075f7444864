"""`cityops replay`: re-run a past window through the detectors and alarm manager,
safely (its own Redis namespace, recording receivers), and compare with what the live
system did."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from streams.errors import CityOpsError
from streams.settings import Settings
from streams.timeparse import parse_duration, parse_time
from streams.topology import Topology, load_topology

if TYPE_CHECKING:  # imported lazily at run time: pyarrow and duckdb are slow to load
    from streams.replay.run import ReplayOptions, ReplayOutcome
    from streams.replay.window import KindWindow

TopologyOpt = Annotated[Optional[Path], typer.Option(
    "--topology", "-t", help="topology to replay with (default: the live one, CITYOPS_TOPOLOGY or topology.yaml)")]


def parse_speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = 0.0
    if not speed > 0:
        raise CityOpsError(f"--speed {text!r}: give max, or how many times faster than real time (e.g. 60)")
    return speed


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def replay(
    from_: Annotated[str, typer.Option("--from", help="window start, ISO 8601 (no offset: the city's time zone)")],
    to: Annotated[str, typer.Option("--to", help="window end (exclusive)")],
    kinds: Annotated[Optional[str], typer.Option("--kinds", help="comma-separated sensor kinds (default: all)")] = None,
    sensors: Annotated[Optional[str], typer.Option(
        "--sensors", help="comma-separated sensor ids: their alarms and report (every sensor is still processed)")] = None,
    warmup: Annotated[str, typer.Option(
        "--warmup", help="run this much before --from first, unreported, so the detectors have the state the live "
                         "ones had (0 when the window starts where the live run did)")] = "1h",
    speed: Annotated[str, typer.Option("--speed", help="max, or a multiple of real time (60: an hour per minute)")] = "max",
    topology: TopologyOpt = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="write an incident report (HTML + JSON) here")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="keep the replay's Redis namespace for inspection")] = False,
    source: Annotated[str, typer.Option("--source", help="auto | kafka | archive")] = "auto",
    clock: Annotated[str, typer.Option("--clock", help="auto | kafka (arrival time) | event (reading time)")] = "auto",
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=0, max=100_000,
        help="messages per batch; the alarms do not depend on it; 0: as the live worker batched (slow)")] = 5000,
    as_json: Annotated[bool, typer.Option("--json", help="print the outcome as one JSON object")] = False,
) -> None:
    """Replay a past window; never notifies anyone, never touches live alarm state.

    Reads Kafka while it holds the window, else the readings archive, and compares the
    result with the live alarms: identical with the live topology; with a changed
    --topology, the alarms gained, lost and shifted (lead time). Ctrl-C leaves nothing.
    """
    from streams.replay.run import ReplayOptions, load, report_dir_ok

    if source not in ("auto", "kafka", "archive"):
        raise CityOpsError(f"--source {source!r}: use auto, kafka or archive")
    if clock not in ("auto", "kafka", "event"):
        raise CityOpsError(f"--clock {clock!r}: use auto, kafka or event")
    settings = Settings.from_env()
    live_topology = load_topology(settings.topology)
    topo = load_topology(topology) if topology is not None else live_topology
    offset = topo.spec.timezone
    wanted = frozenset(_split(sensors)) or None
    if wanted is not None:
        known = {s.sensor_id for s in topo.catalog.sensors}
        if missing := sorted(wanted - known):
            raise CityOpsError(f"--sensors {','.join(missing)}: not in the sensor catalog")
    if report is not None:
        report_dir_ok(report)
    options = ReplayOptions(
        from_ms=parse_time(from_, "--from", offset), to_ms=parse_time(to, "--to", offset),
        warmup_ms=parse_duration(warmup, "--warmup", allow_zero=True), kinds=_split(kinds),
        sensors=wanted, speed=parse_speed(speed), source=source, clock=clock,  # type: ignore[arg-type]
        batch_size=batch_size or None, keep=keep)
    console = Console(stderr=True, highlight=False)
    with console.status("reading the window..."):
        windows = asyncio.run(load(settings, topo, options))
    try:
        outcome = asyncio.run(_stoppable(_run_with_progress(settings, topo, live_topology, options, windows, console)))
    except _Terminated:
        console.print("terminated; the replay's Redis keys are deleted" if not keep else "terminated")
        raise typer.Exit(143) from None
    if report is not None:
        from streams.replay.report import write_report

        written = asyncio.run(write_report(report, settings, topo, options, outcome))
        console.print(f"report: {written}")
    if as_json:
        typer.echo(json.dumps(_summary(outcome), ensure_ascii=False))
    else:
        _print(Console(highlight=False), outcome, options)


class _Terminated(Exception):
    pass


async def _stoppable(work: Coroutine[Any, Any, ReplayOutcome]) -> ReplayOutcome:
    """SIGTERM cancels the replay as Ctrl-C does, so its cleanup runs (its namespace is deleted)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await task
    except asyncio.CancelledError:
        if terminated:
            raise _Terminated from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def _run_with_progress(settings: Settings, topo: Topology, live: Topology, options: ReplayOptions,
                             windows: list[KindWindow], console: Console) -> ReplayOutcome:
    from streams.replay.run import run_replay

    total = sum(w.n_messages for w in windows)
    columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("messages"),
               TextColumn("{task.fields[rate]:>9,.0f} readings/s"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    started = time.perf_counter()
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("replay", total=total, rate=0.0)

        def advance(messages: int, readings: int) -> None:
            elapsed = time.perf_counter() - started
            bar.update(task, completed=messages, rate=readings / elapsed if elapsed > 0 else 0.0)

        return await run_replay(settings, topo, live, options, windows, advance)


def _summary(outcome: ReplayOutcome) -> dict[str, object]:
    return {
        "namespace": outcome.namespace, "kept": outcome.keys_deleted == 0,
        "windows": [{"kind": w.kind, "source": w.source, "clock": w.clock, "messages": w.n_messages, "notes": w.notes}
                    for w in outcome.windows],
        "messages": outcome.record.n_messages, "readings": outcome.record.n_readings,
        "dead_letters": outcome.record.dead_by_reason, "seconds": round(outcome.seconds, 3),
        "readings_per_s": round(outcome.readings_per_s),
        "alerts": [json.loads(a.to_json()) for a in outcome.alerts],
        "notifications": [n.to_dict() for n in outcome.notifications],
        "live_source": outcome.live_source,
        "diff": outcome.diff.to_dict() if outcome.diff is not None else None,
    }


def _print(console: Console, outcome: ReplayOutcome, options: ReplayOptions) -> None:
    from streams.tail import render

    record = outcome.record
    table = Table("kind", "source", "clock", "messages", title="window")
    for w in outcome.windows:
        table.add_row(w.kind, w.source, w.clock, f"{w.n_messages:,}")
    console.print(table)
    for w in outcome.windows:
        for note in w.notes:
            console.print(f"[yellow]{w.kind}: {note}[/yellow]")
    console.print(f"{record.n_readings:,} readings in {outcome.seconds:.1f} s ({outcome.readings_per_s:,.0f} readings/s); "
                  f"{record.n_dead:,} dead letters {record.dead_by_reason or ''}")
    timed = sum(n for reason, n in record.dead_by_reason.items() if reason in ("ts_past", "ts_future"))
    if timed and timed * 2 > record.n_readings + record.n_dead:
        console.print("[yellow]most readings were rejected for their time, as the live worker rejected them: this "
                      "window holds a recording; replay it by reading time with --clock event[/yellow]")
    console.print(f"{len(outcome.alerts)} alarm events:")
    for alert in sorted(outcome.alerts, key=lambda a: (a.event_time_ms, a.alarm_key)):
        console.print(render(alert), soft_wrap=True)
    by_receiver: dict[str, int] = {}
    for n in outcome.notifications:
        by_receiver[n.receiver] = by_receiver.get(n.receiver, 0) + 1
    console.print("would have notified: " + (", ".join(f"{r} {k}" for r, k in sorted(by_receiver.items())) or "nobody")
                  + " (recorded, not sent)")
    _print_diff(console, outcome)
    where = f"kept in Redis namespace {outcome.namespace}" if options.keep else \
        f"namespace {outcome.namespace} deleted ({outcome.keys_deleted} keys)"
    console.print(where)


def _print_diff(console: Console, outcome: ReplayOutcome) -> None:
    d = outcome.diff
    if d is None:
        return
    if d.identical:
        console.print(f"[green]identical to the live alarms[/green] ({d.n_live_events} events from {outcome.live_source})")
        return
    console.print(f"differs from the live alarms ({outcome.live_source}): {len(d.events_only_replay)} events only in "
                  f"the replay, {len(d.events_only_live)} only live")
    table = Table("change", "alarm", "live start", "replay start", "lead time", title="incidents")
    fmt = _utc
    for i in d.gained:
        table.add_row("[green]gained[/green]", i.alarm_key, "", fmt(i.start_ms), "")
    for i in d.lost:
        table.add_row("[red]lost[/red]", i.alarm_key, fmt(i.start_ms), "", "")
    for s in d.shifted:
        table.add_row("shifted", s.live.alarm_key, fmt(s.live.start_ms), fmt(s.replay.start_ms),
                      f"{s.lead_ms / 1000:+,.1f} s")
    console.print(table)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
