"""Per-batch cost of ``KindPipeline.process`` for small batches (the latency path).

The same messages, sensors and pipeline as ``loadtest/bench_pipeline.py`` (its
``CaseRunner``), for batches of 1, 10 and 100 messages per kind: with so few readings a
batch's cost is mostly what every batch pays (each detector's and route's calls), which is
what a gas reading waits for on a quiet topic. Cases run round-robin, a fresh batch each
time; the table gives medians of the process's thread CPU time (less disturbed by other
processes than wall time) and of ``BatchResult.stage_seconds``.

    .venv/bin/python loadtest/bench_overhead.py [--sizes 1,10,100] [--repeat 40] [--json OUT]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "loadtest"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_pipeline import KINDS, Case, CaseRunner, pin_one_core  # noqa: E402
from streams.topology import load_topology  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,10,100", help="messages per batch (default 1,10,100)")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--repeat", type=int, default=40, help="timed batches per case (default 40)")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--topology", type=Path, default=REPO / "topology.yaml")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    pinned = pin_one_core()
    topology = load_topology(a.topology)
    cases = [Case(f"{k}-{n}", k, n) for k in a.kinds.split(",") for n in (int(s) for s in a.sizes.split(","))]
    runners = [CaseRunner(topology, c, a.seed + i, a.repeat + 2) for i, c in enumerate(cases)]
    batches = [[r._next()[0] for _ in range(a.repeat)] for r in runners]
    samples: list[list[dict[str, float]]] = [[] for _ in cases]
    for i in range(a.repeat):
        for runner, todo, out in zip(runners, batches, samples, strict=True):
            gc.collect()
            c0, t0 = time.thread_time(), time.perf_counter()
            res = runner.pipeline.process(todo[i], runner.now_ms)
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            out.append({"wall_ms": wall * 1e3, "cpu_ms": cpu * 1e3, "readings": res.n_readings,
                        **{f"{k}_ms": v * 1e3 for k, v in res.stage_seconds.items()}})
    print(f"# KindPipeline.process per batch, {pinned}; repeat={a.repeat}, medians (thread CPU time and stages)")
    print(f"{'case':<12} {'readings':>8} {'wall ms':>8} {'cpu ms':>7} {'decode':>7} {'detect':>7} {'alarm':>7}")
    results: list[dict[str, Any]] = []
    for case, rows in zip(cases, samples, strict=True):
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        results.append({"case": case.name, **med})
        print(f"{case.name:<12} {med['readings']:>8.0f} {med['wall_ms']:>8.3f} {med['cpu_ms']:>7.3f} "
              f"{med['decode_ms']:>7.3f} {med['detect_ms']:>7.3f} {med['alarm_ms']:>7.3f}")
    if a.json:
        a.json.write_text(json.dumps({"repeat": a.repeat, "results": results, "samples": samples}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
