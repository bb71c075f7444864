"""`cityops worker --processes N [--isolate KINDS]`: several worker processes on one node.

One worker process uses one core (its batches are CPU work on one event loop).
The parent starts its children, each a plain ``cityops worker`` with its own web
port (``web_port + i``: each serves its own /metrics and /healthz) and data
directory; Kafka spreads each kind's partitions over the children that consume
that kind, as over any workers of the kind's group. ``--isolate hazmat`` gives
hazmat children of their own (``--kinds hazmat``) and the other kinds the rest, at
a lower CPU priority (nice +10): a gas reading's batch then neither waits on one
event loop behind an air or traffic batch nor for a core while a backlog drains.

The parent forwards SIGINT/SIGTERM to every child and waits for them. If a
child exits on its own (a crash, or exit 70 after a batch that could not finish),
the parent stops the others and exits with that child's code, so the node's
supervisor (systemd, Kubernetes) restarts the whole node: one restart policy, in
one place.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

STOP_GRACE_S = 30.0
# the non-isolated children's niceness: when the cores are short (a backlog draining), the
# scheduler serves the isolated kinds, and the broker and Redis they wait on, first
BULK_NICENESS = 10
POLL_S = 0.2


def child_env(base: dict[str, str], index: int, web_port: int, data_dir: Path) -> dict[str, str]:
    return {**base, "CITYOPS_WEB_PORT": str(web_port + index), "CITYOPS_DATA_DIR": str(data_dir / f"p{index}")}


def kind_groups(kinds: Sequence[str], isolate: Sequence[str]) -> list[list[str]]:
    """The kinds each group of processes consumes: every isolated kind alone, then the rest
    together (no empty group)."""
    rest = [k for k in kinds if k not in isolate]
    return [[k] for k in kinds if k in isolate] + ([rest] if rest else [])


def run_processes(commands: Sequence[Sequence[str]], web_port: int, data_dir: Path,
                  bulk: Sequence[bool] = ()) -> int:
    """Run each worker command line as a child (those flagged in ``bulk`` at
    ``BULK_NICENESS``); the exit code for the node."""
    n = len(commands)
    for i in range(n):
        (data_dir / f"p{i}").mkdir(parents=True, exist_ok=True)
    children = [
        subprocess.Popen(list(argv), env=child_env(dict(os.environ), i, web_port, data_dir),
                         preexec_fn=_lower_priority if i < len(bulk) and bulk[i] else None)
        for i, argv in enumerate(commands)
    ]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    print(f"cityops: {n} worker processes, web ports {web_port}-{web_port + n - 1}", file=sys.stderr, flush=True)
    while True:
        codes = [child.poll() for child in children]
        if all(code is not None for code in codes):
            return max((abs(c) for c in codes if c), default=0)
        failed = next((c for c in codes if c is not None and not stopping), None)
        if failed is not None:  # a child ended by itself: take the node down with its code
            print(f"cityops: a worker process exited {failed}; stopping the others", file=sys.stderr, flush=True)
            forward(signal.SIGTERM, None)
            _wait_all(children)
            return failed if failed > 0 else 1
        time.sleep(POLL_S)


def _lower_priority() -> None:
    os.nice(BULK_NICENESS)


def _wait_all(children: Sequence[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
