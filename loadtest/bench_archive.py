"""The readings archive offline: Parquet bytes per million readings, and how fast the
archiver turns messages into files (streams/archive), on the simulated city's readings.

No Kafka: the messages come from the simulator (the same mix `cityops simulate` sends,
a fifth of them gateway arrays), spread over 4 partitions, fed to ``Archiver`` in
chunks of ``--chunk`` messages (the consumer's ``max_messages``), each chunk flushed.

    .venv/bin/python loadtest/bench_archive.py [--readings 1000000] [--runs 3] [--levels 3,6,9] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.archive.consumer import Archiver  # noqa: E402
from streams.archive.store import ArchiveStore  # noqa: E402
from streams.decode import RawMessage  # noqa: E402
from streams.sim.engine import SimOptions, generate  # noqa: E402
from streams.topology import Topology, load_topology  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
START_MS = 1_798_732_800_000  # 2027-01-01T00:00:00+08:00


def city_messages(topology: Topology, readings: int) -> tuple[list[RawMessage], int, int]:
    """Simulated messages holding at least ``readings`` readings; (messages, readings, JSON bytes)."""
    opts = SimOptions(rate=None, duration_s=10**7, seed=7, start_ms=START_MS, speed=60.0)
    messages: list[RawMessage] = []
    offsets = [0, 0, 0, 0]
    count = size = 0
    for tick in generate(topology, opts):
        for m in tick:
            partition = zlib.crc32(m.key) % 4  # stable across runs, unlike hash()
            messages.append(RawMessage(m.value, m.key, m.topic, partition, offsets[partition], m.event_ms))
            offsets[partition] += 1
            count += m.n_readings
            size += len(m.value)
        if count >= readings:
            break
    return messages, count, size


def one_run(topology: Topology, messages: list[RawMessage], chunk: int, level: int) -> tuple[float, int, int]:
    """(seconds, Parquet bytes, files) to archive ``messages``."""
    with tempfile.TemporaryDirectory() as tmp:
        archiver = Archiver(topology, ArchiveStore(Path(tmp), zstd_level=level))
        t0 = time.perf_counter()
        files = 0
        for start in range(0, len(messages), chunk):
            for msg in messages[start:start + chunk]:
                archiver.add(msg)
            files += archiver.flush().files
        seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(tmp).glob("**/*.parquet"))
    return seconds, size, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=200_000, help="messages per flush")
    parser.add_argument("--levels", default="6", help="zstd levels to compare, e.g. 3,6,9")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    topology = load_topology(REPO / "topology.yaml")
    messages, readings, json_bytes = city_messages(topology, args.readings)
    span_h = (max(m.timestamp_ms for m in messages) - START_MS) / 3_600_000
    print(f"{readings:,} readings in {len(messages):,} messages, {json_bytes / 1e6:.1f} MB of JSON, "
          f"{span_h:.1f} h of event time")
    results: list[dict[str, Any]] = []
    for level in (int(x) for x in args.levels.split(",")):
        runs = [one_run(topology, messages, args.chunk, level) for _ in range(args.runs)]
        seconds = statistics.median(r[0] for r in runs)
        size, files = runs[0][1], runs[0][2]
        row = {"zstd_level": level, "readings": readings, "median_s": round(seconds, 3),
               "readings_per_s": round(readings / seconds), "parquet_bytes": size, "files": files,
               "mb_per_million_readings": round(size / readings, 2),  # = bytes per reading
               "json_mb_per_million": round(json_bytes / readings, 1), "runs_s": [round(r[0], 3) for r in runs]}
        results.append(row)
        print(f"zstd {level}: {row['readings_per_s']:,} readings/s (median of {args.runs}), "
              f"{size / 1e6:.1f} MB in {files} files = {size / readings:.1f} bytes/reading "
              f"({size / readings:.2f} MB per million; JSON {json_bytes / readings:.1f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
