"""`cityops replay --speed max` throughput, on real Kafka and Redis.

The simulated city (scripted incidents included) is produced to fresh topics with
Kafka timestamps 150 ms after each reading's time, as a live gateway would, keyed by
sensor (murmur2, 4 partitions). Then, per run: the window read back from Kafka
(``offsets_for_times``, streams/replay/kafka_source.py), and the replay itself (decoder,
detectors, routes, alarm board, alarm store, notifier with recording receivers, in its
own Redis namespace), in fixed batches of 1,000 and of 5,000 (the default), and with
``--live`` also batched as the live worker batched (one batch per budget window: slow).
Last, the same window written to a readings archive and replayed from it.

    .venv/bin/python loadtest/bench_replay.py [--readings 500000] [--runs 3] [--live] [--json OUT]

Needs the local stack (`cityops stack up`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.archive.consumer import Archiver, archive_root  # noqa: E402
from streams.archive.store import ArchiveStore  # noqa: E402
from streams.replay.run import ReplayOptions, load, run_replay  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.sim.engine import SimOptions, generate  # noqa: E402
from streams.stack.topics import ensure_topics  # noqa: E402
from streams.topology import Topology, load_topology  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARRIVAL_DELAY_MS = 150


def bench_topology(directory: Path) -> Topology:
    suffix = uuid.uuid4().hex[:8]
    data = yaml.safe_load((REPO / "topology.yaml").read_text())
    data["catalog"] = str(REPO / "catalog" / "dongguan_sensors.csv")
    for kind in data["kinds"].values():
        kind["topic"] = f"{kind['topic']}.bench{suffix}"
    data["topics"] = {**data.get("topics", {}), "alerts": f"city.alerts.bench{suffix}",
                      "deadletter": f"city.deadletter.bench{suffix}", "partitions": 4}
    path = directory / "topology.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return load_topology(path)


async def produce_city(bootstrap: str, topology: Topology, readings: int, start_ms: int) -> tuple[int, int, int]:
    """(messages, readings, last event ms) produced."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    n_messages = n_readings = last = 0
    try:
        opts = SimOptions(rate=None, duration_s=10**7, seed=7, start_ms=start_ms, speed=60.0)
        for tick in generate(topology, opts):
            for m in tick:
                await producer.send(m.topic, m.value, key=m.key, timestamp_ms=m.event_ms + ARRIVAL_DELAY_MS)
                n_messages += 1
                n_readings += m.n_readings
                last = max(last, m.event_ms)
            if n_readings >= readings:
                break
        await producer.flush()
    finally:
        await producer.stop()
    return n_messages, n_readings, last


async def one_run(settings: Settings, topology: Topology, options: ReplayOptions) -> dict[str, float]:
    t0 = time.perf_counter()
    windows = await load(settings, topology, options)
    t1 = time.perf_counter()
    outcome = await run_replay(settings, topology, topology, options, windows)
    return {"read_s": t1 - t0, "replay_s": outcome.seconds, "readings": outcome.record.n_readings,
            "alerts": len(outcome.record.alerts), "notifications": len(outcome.record.notifications)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        topology = bench_topology(Path(tmp))
        ensure_topics(settings.bootstrap, topology.all_topics())
        # the recording ends a few minutes before now: Kafka keeps it (retention is 7 days)
        start_ms = int(time.time() * 1000) - 2 * 86_400_000
        n_messages, n_readings, last = await produce_city(settings.bootstrap, topology, args.readings, start_ms)
        span_min = (last - start_ms) / 60_000
        print(f"produced {n_readings:,} readings in {n_messages:,} messages, {span_min:.0f} simulated minutes")
        results: dict[str, Any] = {"readings": n_readings, "messages": n_messages, "span_min": span_min}
        configurations: list[tuple[str, int | None]] = [("batches of 1000", 1000), ("batches of 5000", 5000)]
        if args.live:
            configurations.append(("live batching", None))
        for name, batch_size in configurations:
            options = ReplayOptions(from_ms=start_ms, to_ms=last + 60_000, batch_size=batch_size, compare=False)
            runs = [await one_run(settings, topology, options) for _ in range(args.runs)]
            assert all(r["readings"] == n_readings for r in runs), runs
            assert len({(r["alerts"], r["notifications"]) for r in runs}) == 1, runs
            read = statistics.median(n_readings / r["read_s"] for r in runs)
            replay = statistics.median(n_readings / r["replay_s"] for r in runs)
            total = statistics.median(n_readings / (r["read_s"] + r["replay_s"]) for r in runs)
            print(f"{name:>16}: read from Kafka {read:,.0f} readings/s, replay {replay:,.0f} readings/s, "
                  f"end to end {total:,.0f} readings/s; {runs[0]['alerts']} alarm events, "
                  f"{runs[0]['notifications']} notifications recorded")
            results[name] = {"read_per_s": read, "replay_per_s": replay, "total_per_s": total, "runs": runs}
        # the same window from the readings archive (as after Kafka's retention): Parquet -> messages
        archive_dir = Path(tmp) / "data"
        windows = await load(settings, topology, ReplayOptions(from_ms=start_ms, to_ms=last + 60_000, compare=False))
        archiver = Archiver(topology, ArchiveStore(archive_root(Settings.from_env(data_dir=archive_dir), topology)))
        for window in windows:
            for msg in window.messages:
                archiver.add(msg)
        archiver.flush()
        from_archive = Settings.from_env(data_dir=archive_dir)
        options = ReplayOptions(from_ms=start_ms, to_ms=last + 60_000, source="archive", compare=False)
        runs = [await one_run(from_archive, topology, options) for _ in range(args.runs)]
        assert all(r["readings"] == n_readings for r in runs), runs
        read = statistics.median(n_readings / r["read_s"] for r in runs)
        total = statistics.median(n_readings / (r["read_s"] + r["replay_s"]) for r in runs)
        print(f"{'from the archive':>16}: read {read:,.0f} readings/s, end to end {total:,.0f} readings/s "
              f"(batches of 5000); {runs[0]['alerts']} alarm events")
        results["from the archive"] = {"read_per_s": read, "total_per_s": total, "runs": runs}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--live", action="store_true", help="also batch as the live worker did")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
