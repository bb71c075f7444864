"""A value a worker re-reads every few seconds in the background, for /metrics to serve
without waiting on anything (streams/lag.py, streams/live_alarms.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


class PeriodicRefresh:
    """Calls :meth:`refresh` every ``period_s`` once started; a failure in ``errors`` is
    logged and the last copy kept (the next round tries again)."""

    period_s: float = 5.0
    errors: tuple[type[BaseException], ...] = (OSError,)
    task_name: str = "cityops-refresh"

    _task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        raise NotImplementedError

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except self.errors as exc:
                log.warning("%s: refresh failed (%r); keeping the last copy", self.task_name, exc)
            await asyncio.sleep(self.period_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
