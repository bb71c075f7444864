"""Detector throughput on one core: readings/s of ``score_and_update``.

The stream is what a city looks like to one worker: every sensor reports once
per period in a shuffled order; the stream is cut into batches of
``--batch`` readings, each sorted by sensor the way the decoder sorts it, all
built before timing. Each detector first sees ``--warm`` untimed periods (so
warm-up branches are over), then ``--repeat`` timed passes over fresh
batches; the figure is the median of the per-pass readings/s, with min and max.
Time is the process's CPU time (``time.process_time``): the work is
single-threaded, so this is "per core", and it does not count time the
process spent waiting for a core on a shared machine (``--wall`` to use
wall-clock time instead).

Cases: the default ensemble (``ensemble`` with its default parameters, what
topology.yaml uses), every registered detector that runs on a one-quantity
kind (its first ``test_params``), and the ensemble at several sensor counts
(state is O(sensors) memory, a batch is O(batch) time).

    taskset -c 0 .venv/bin/python loadtest/bench_detectors.py [--sensors 10000] [--batch 5000] [--repeat 7]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: no BLAS thread pools

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.base import Detector, DetectorContext, ReadingBatch  # noqa: E402
from detectors.columns import batch_from_columns  # noqa: E402
from detectors.registry import DETECTORS, build_detector  # noqa: E402

CONTEXT = DetectorContext(quantities=("value",), quantity_ranges=((-1e9, 1e9),), expected_period_s=60.0)
PERIOD_MS = 60_000
START_MS = 1_795_700_000_000


@dataclass
class Result:
    case: str
    sensors: int
    batch: int
    readings_per_s_median: float
    readings_per_s_min: float
    readings_per_s_max: float
    state_bytes_per_sensor: float


def city_batches(n_sensors: int, batch: int, periods: int, seed: int) -> list[ReadingBatch]:
    """``periods`` rounds of every sensor reporting once (shuffled), cut into batches."""
    rng = np.random.default_rng(seed)
    sensor = np.concatenate([rng.permutation(n_sensors) for _ in range(periods)]).astype(np.int32)
    period = np.repeat(np.arange(periods), n_sensors)
    t = START_MS + period * PERIOD_MS + rng.integers(0, PERIOD_MS, sensor.size)
    base = 50 + 10 * rng.random(n_sensors)
    value = base[sensor] + 5 * np.sin(2 * np.pi * period / 1440) + rng.normal(0, 1, sensor.size)
    value[rng.random(sensor.size) < 0.001] += 40  # rare spikes
    out = []
    for lo in range(0, sensor.size, batch):
        hi = lo + batch
        out.append(batch_from_columns(sensor[lo:hi], t[lo:hi], value[lo:hi]))
    return out


def bench(case: str, make: Callable[[], Detector], n_sensors: int, batch: int, repeat: int, warm: int,
          clock: Callable[[], float]) -> Result:
    detector = make()
    detector.resize(n_sensors)
    for b in city_batches(n_sensors, batch, warm, seed=1):
        detector.score_and_update(b)
    # each pass continues the stream in event time (fresh, later readings)
    passes = [city_batches(n_sensors, batch, 1, seed=10 + i) for i in range(repeat)]
    rates = []
    for i, batches in enumerate(passes):
        shift = (warm + i) * PERIOD_MS
        batches = [ReadingBatch(b.sensor_idx, b.reading_idx, b.event_time_ms + shift, b.quantity_idx, b.value, b.flag)
                   for b in batches]
        n = sum(len(b) for b in batches)
        gc.collect()
        gc.disable()
        t0 = clock()
        for b in batches:
            detector.score_and_update(b)
        elapsed = clock() - t0
        gc.enable()
        rates.append(n / elapsed)
    state = detector.snapshot()
    state_bytes = sum(a.nbytes for a in state.values()) / n_sensors
    return Result(case, n_sensors, batch, statistics.median(rates), min(rates), max(rates), state_bytes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--warm", type=int, default=3, help="untimed periods before timing")
    ap.add_argument("--scaling", default="1000,10000,100000", help="sensor counts for the ensemble's scaling")
    ap.add_argument("--only", default="", help="comma-separated detector kinds (default: all)")
    ap.add_argument("--wall", action="store_true", help="wall-clock time instead of CPU time")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    results: list[Result] = []

    def ensemble() -> Detector:
        return build_detector("ensemble", CONTEXT, {"quantity": "value"})

    kinds = [k for k in args.only.split(",") if k] or sorted(DETECTORS)
    cases: list[tuple[str, Callable[[], Detector], int]] = [("ensemble (default)", ensemble, args.sensors)]
    for kind in kinds:
        params = next(iter(DETECTORS[kind].test_params()), None)
        if params is None:
            print(f"# {kind}: needs a real kind's context (no test_params); not benchmarked here", file=sys.stderr)
            continue
        cases.append((kind, lambda k=kind, p=params: build_detector(k, CONTEXT, p), args.sensors))
    for n in (int(x) for x in args.scaling.split(",") if x):
        cases.append((f"ensemble @ {n} sensors", ensemble, n))
    print(f"{'case':<28} {'sensors':>8} {'batch':>6} {'readings/s median':>18} {'min':>12} {'max':>12} {'state B/sensor':>15}")
    for name, make, n in cases:
        r = bench(name, make, n, args.batch, args.repeat, args.warm, time.perf_counter if args.wall else time.process_time)
        results.append(r)
        print(f"{r.case:<28} {r.sensors:>8} {r.batch:>6} {r.readings_per_s_median:>18,.0f} "
              f"{r.readings_per_s_min:>12,.0f} {r.readings_per_s_max:>12,.0f} {r.state_bytes_per_sensor:>15,.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
