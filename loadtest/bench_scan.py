"""Alarm-level scan (streams/alarms.py) cost for one 10,500-row batch, by how
many sensors share it: few sensors = long per-sensor runs (a gateway backlog).

    .venv/bin/python loadtest/bench_scan.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from streams.alarms import NEVER_MS, _scan_levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    rows = 10_500
    for n_sensors in (1, 5, 116, 10_000):
        sensor = rng.integers(0, n_sensors, rows).astype(np.int32)
        event_ms = np.arange(rows, dtype=np.int64) * 10
        crossed = (rng.random(rows) < 0.01).astype(np.int8)
        samples = []
        for _ in range(args.repeat):
            state, last = np.zeros(n_sensors, np.int8), np.full(n_sensors, NEVER_MS)
            t0 = time.perf_counter()
            _scan_levels(state, last, sensor, event_ms, crossed, crossed.copy())
            samples.append(time.perf_counter() - t0)
        print(f"{n_sensors:>6} sensors, {rows} rows: median {np.median(samples) * 1e3:6.2f} ms "
              f"[{min(samples) * 1e3:.2f}-{max(samples) * 1e3:.2f}]")


if __name__ == "__main__":
    main()
