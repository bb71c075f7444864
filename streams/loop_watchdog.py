"""How long the worker's event loop went without turning, and what held it.

Every batch, sink await and timer of a worker shares one event loop, so anything that
holds it (a long batch, a checkpoint's encoding, a garbage collection, a slow
callback) delays every kind's readings, gas included. A task on the loop stamps the
time every ``TICK_S``; a thread looks at the stamp. When the loop has not turned for
``stall_s``, the thread takes the loop thread's stack (what is holding it) and, once
the loop turns again, the stall is observed in ``cityops_loop_stall_seconds`` and,
above ``log_s``, logged with that stack: the question "why was this gas alarm late?"
gets an answer from the worker's own log.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

from prometheus_client import CollectorRegistry, Histogram

log = logging.getLogger(__name__)

TICK_S = 0.01  # a stamp 100 times a second: cheap next to a batch, fine enough for a 20 ms threshold
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LoopWatchdog:
    def __init__(self, registry: CollectorRegistry, stall_s: float = 0.02, log_s: float = 0.1) -> None:
        self.stall_s, self.log_s = stall_s, log_s
        self.stalls = Histogram(
            "cityops_loop_stall_seconds", "Times the worker's event loop did not turn for over 20 ms, by how long "
            "(every kind's batches wait while it does)", buckets=_BUCKETS, registry=registry)
        self._last_tick = time.monotonic()
        self._loop_thread = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """On the event loop's thread, with the loop running."""
        self._loop_thread = threading.get_ident()
        self._last_tick = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="cityops-loop-watchdog")
        self._thread = threading.Thread(target=self._watch, name="cityops-loop-watchdog", daemon=True)
        self._thread.start()

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(TICK_S)

    def _watch(self) -> None:
        stalled_since: float | None = None
        stacks: list[str] = []  # when the stall was seen, and again once it passed log_s
        while not self._stop.wait(TICK_S):
            last = self._last_tick
            held = time.monotonic() - last
            if held > self.stall_s + TICK_S:
                if stalled_since != last:
                    stalled_since, stacks = last, [self._loop_stack()]
                elif len(stacks) == 1 and held > self.log_s:
                    stacks.append(self._loop_stack())
            elif stalled_since is not None:  # the loop turned again: the stall is over
                self._report(last - stalled_since - TICK_S, stacks)
                stalled_since, stacks = None, []

    def _loop_stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        return "".join(traceback.format_stack(frame, limit=12)) if frame is not None else "(no frame)\n"

    def _report(self, seconds: float, stacks: list[str]) -> None:
        self.stalls.observe(seconds)
        if seconds >= self.log_s:
            log.warning("the event loop stalled for %.0f ms; it was in:\n%s", 1000 * seconds,
                        f"\n{int(1000 * self.log_s)} ms in:\n".join(stacks))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
