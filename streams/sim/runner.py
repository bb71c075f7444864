"""Run a simulation: pace it in real time and send it to Kafka and/or JSONL files.

``run`` is what ``cityops simulate`` calls; ``python -m streams.sim.runner`` is the
same without the CLI. Kafka records are keyed by sensor_id. ``out`` ending in
``.jsonl`` gets every message value, one per line; any other ``out`` is a
directory with one ``<topic>.jsonl`` per input topic (what ``cityops produce``
replays as-is). ``truth_out`` gets the ground truth as JSON lines, each record
written as soon as it is known (an incident when it starts, a fault when it ends).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from streams.kafka_clients import start_client
from streams.sim.engine import SimOptions, Simulation
from streams.sim.messages import SimMessage
from streams.topology import DEFAULT_TOPOLOGY, Topology, load_topology

__all__ = ["SimOptions", "SimSummary", "main", "run", "simulate"]


@dataclass(frozen=True, slots=True)
class SimSummary:
    messages: Mapping[str, int]  # per topic
    readings: Mapping[str, int]  # per topic (an array message holds several)
    incidents: int  # scripted incidents that started inside the run
    faults: int  # random sensor faults
    first_event_ms: int | None
    last_event_ms: int | None
    wall_s: float

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        total = sum(self.readings.values())
        per_topic = ", ".join(
            f"{t}: {self.readings[t]} readings in {self.messages[t]} messages" for t in sorted(self.messages)
        )
        rate = total / self.wall_s if self.wall_s > 0 else 0.0
        return (f"{total} readings ({rate:.0f}/s over {self.wall_s:.1f} s wall); {per_topic}; "
                f"{self.incidents} incidents, {self.faults} sensor faults")


@dataclass
class _Tally:
    messages: dict[str, int] = field(default_factory=dict)
    readings: dict[str, int] = field(default_factory=dict)
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, batch: Sequence[SimMessage]) -> None:
        for m in batch:
            self.messages[m.topic] = self.messages.get(m.topic, 0) + 1
            self.readings[m.topic] = self.readings.get(m.topic, 0) + m.n_readings
        if batch:
            self.first_ms = batch[0].event_ms if self.first_ms is None else self.first_ms
            self.last_ms = batch[-1].event_ms


class _JsonlOut:
    """One file for everything (``*.jsonl``) or one file per topic in a directory."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._single = path.suffix == ".jsonl"
        self._files: dict[str, IO[bytes]] = {}
        (path.parent if self._single else path).mkdir(parents=True, exist_ok=True)

    def write(self, batch: Sequence[SimMessage]) -> None:
        for m in batch:
            self._file(m.topic).write(m.value + b"\n")

    def _file(self, topic: str) -> IO[bytes]:
        name = "" if self._single else topic
        fh = self._files.get(name)
        if fh is None:
            fh = (self._path if self._single else self._path / f"{topic}.jsonl").open("wb")
            self._files[name] = fh
        return fh

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()


async def run(
    topology: Topology,
    opts: SimOptions,
    bootstrap: str | None = None,
    out: Path | None = None,
    truth_out: Path | None = None,
    pace: bool = True,
) -> SimSummary:
    """Generate the run, paced at ``opts.tick_s`` per tick unless ``pace`` is False.

    SIGINT/SIGTERM end it cleanly: what was generated is sent and flushed, and the
    truth file (written as incidents start and faults end) is complete so far.
    """
    sim = Simulation(topology, opts)
    producer = await _start_producer(bootstrap) if bootstrap else None
    jsonl = _JsonlOut(out) if out else None
    truth = _TruthOut(truth_out) if truth_out else None
    tally, stop = _Tally(), asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    handled = _on_stop_signals(loop, stop)
    try:
        for k, batch in enumerate(sim.ticks()):
            if pace:  # send a tick's readings once its (scaled) time has passed
                await _sleep_unless(stop, started + (k + 1) * opts.tick_s - loop.time())
            if stop.is_set():
                break
            if producer is not None:
                await _send(producer, batch)
            if jsonl is not None:
                jsonl.write(batch)
            if truth is not None:
                truth.write(sim.drain_truth())
            tally.add(batch)
        if producer is not None:
            await producer.flush()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        if producer is not None:
            await producer.stop()
        if jsonl is not None:
            jsonl.close()
        if truth is not None:
            truth.close()
    return _summary(sim, tally, loop.time() - started)


def _summary(sim: Simulation, tally: _Tally, wall_s: float) -> SimSummary:
    known = [r for r in sim.truth_json() if r["start_ms"] <= sim.now_ms]
    return SimSummary(
        messages=tally.messages, readings=tally.readings,
        incidents=sum(1 for r in known if r["type"] != "sensor_fault"),
        faults=sum(1 for r in known if r["type"] == "sensor_fault"),
        first_event_ms=tally.first_ms, last_event_ms=tally.last_ms, wall_s=wall_s,
    )


def _on_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> list[signal.Signals]:
    """Turn SIGINT/SIGTERM into ``stop`` (only possible on the main thread)."""
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        handled.append(sig)
    return handled


async def _sleep_unless(stop: asyncio.Event, delay_s: float) -> None:
    if delay_s > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay_s)


class _TruthOut:
    """Ground truth as JSON lines, flushed as records become known."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("w", encoding="utf-8")

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        if records:
            self._fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


async def _start_producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer  # imported here: file-only runs need no Kafka client

    # idempotence keeps a sensor's readings in order even when a batch is retried
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024, acks="all", enable_idempotence=True)
    await start_client(producer, bootstrap)
    return producer


async def _send(producer: Any, batch: Sequence[SimMessage]) -> None:
    """Queue a tick's records, then wait for their delivery (errors surface here)."""
    pending = [await producer.send(m.topic, m.value, key=m.key) for m in batch]
    if pending:
        await asyncio.gather(*pending)


def simulate(
    topology_path: str | Path,
    opts: SimOptions,
    bootstrap: str | None = None,
    out: Path | None = None,
    truth_out: Path | None = None,
    pace: bool = True,
) -> SimSummary:
    """Blocking entry point for the CLI: load the topology, run, summarise."""
    return asyncio.run(run(load_topology(topology_path), opts, bootstrap, out, truth_out, pace))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m streams.sim.runner", description="Simulate the city.")
    p.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    p.add_argument("--rate", type=float, default=None, help="readings per wall second (default: natural periods)")
    p.add_argument("--duration", type=float, default=60.0, help="wall seconds")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument("--scenario", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-ms", type=int, default=None)
    p.add_argument("--batch-fraction", type=float, default=0.2)
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: no Kafka)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--truth-out", type=Path, default=None)
    p.add_argument("--no-pace", action="store_true", help="as fast as possible")
    a = p.parse_args(argv)
    opts = SimOptions(rate=a.rate, duration_s=a.duration, seed=a.seed, scenario=a.scenario, start_ms=a.start_ms,
                      speed=a.speed, batch_fraction=a.batch_fraction)
    t0 = time.monotonic()
    summary = simulate(a.topology, opts, a.bootstrap, a.out, a.truth_out, pace=not a.no_pace)
    print(f"{summary.describe()} [{time.monotonic() - t0:.1f} s]")


if __name__ == "__main__":
    main()
