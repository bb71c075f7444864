"""What every peer of loadtest/bench_compare.py shares: its arguments, a reading counter
and the one JSON line it reports on stdout. Standard library only: the Quix Streams peer
runs in a venv of its own (its pins conflict with the project's)."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "  # the line bench_compare.py looks for (libraries may print too)
GAS_SETPOINT = 25.0  # %LEL: GB/T 50493-2019 first-level alarm, cityops' gas_lel_alarm route


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topics", required=True, help="comma-separated input topics")
    p.add_argument("--group", required=True, help="consumer group (unique per run)")
    p.add_argument("--alerts", required=True, help="topic for gas alerts (peers with the rule)")
    p.add_argument("--expected", type=int, required=True, help="stop once this many readings are done")
    p.add_argument("--shape", choices=("gateway", "single"), required=True)
    p.add_argument("--max-records", type=int, default=500, help="records per fetch call (bare clients)")
    p.add_argument("--deadline-s", type=float, default=300.0)
    return p.parse_args()


def proc_cpu_s(pid: int | str = "self") -> float:
    """CPU seconds of the whole process: the sum of its threads' run time in ns
    (/proc/<pid>/task/*/schedstat), exact where /proc/<pid>/stat counts 10 ms ticks;
    the ticks when schedstat is unavailable. bench_compare.py measures cityops the same way."""
    try:
        return sum(int((t / "schedstat").read_text().split()[0]) for t in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Meter:
    """Counts readings and messages; notes when the first records reached the peer's code
    (``start``: before any of them is processed) and when all were done."""

    expected: int
    deadline_s: float
    readings: int = 0
    messages: int = 0
    alerts: int = 0
    t_first: float = 0.0  # wall clock (time.time(): comparable across processes)
    cpu_first_s: float = 0.0
    t_done: float = 0.0
    cpu_done_s: float = 0.0
    rss_mb: float = 0.0
    topic_first: dict[str, float] = field(default_factory=dict)  # input topic -> its first record (wall clock)
    started: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        """The first fetch returned records (a no-op after the first call)."""
        if not self.t_first:
            self.t_first, self.cpu_first_s = time.time(), proc_cpu_s()

    def add(self, readings: int, messages: int, topic: str) -> bool:
        """Count a message's readings; True once every expected reading is done."""
        self.start()
        if topic not in self.topic_first:
            self.topic_first[topic] = time.time()
        self.readings += readings
        self.messages += messages
        if self.readings >= self.expected and not self.t_done:
            self.t_done = time.time()
            self.cpu_done_s = proc_cpu_s()
            self.rss_mb = peak_rss_mb()
        return bool(self.t_done)

    @property
    def done(self) -> bool:
        return bool(self.t_done)

    def overdue(self) -> bool:
        return time.monotonic() - self.started > self.deadline_s

    def report(self, versions: dict[str, str], **extra: Any) -> None:
        out = {k: v for k, v in asdict(self).items() if k != "started"}
        out |= {"ok": self.done, "versions": versions, **extra}
        if not self.done:
            out |= {"cpu_done_s": proc_cpu_s(), "rss_mb": peak_rss_mb(),
                    "error": f"only {self.readings} of {self.expected} readings within {self.deadline_s:.0f} s"}
        # to fd 1 itself: the Faust worker redirects sys.stdout into its log (stderr)
        os.write(1, ("\n" + RESULT_PREFIX + json.dumps(out) + "\n").encode())


def gas_alert(sensor_id: str, ts: Any, lel: float) -> dict[str, Any]:
    """The naive peers' alert: one JSON object per reading at or above the set point."""
    return {"alarm_key": f"{sensor_id}:gas_lel_alarm", "rule": "gas_lel_alarm", "status": "firing",
            "sensor_id": sensor_id, "quantity": "gas_lel", "value": lel, "threshold": GAS_SETPOINT, "ts": ts}
