"""A real local HTTP receiver for the worker's notifications (aiohttp, in the test's loop).

``/hook`` takes Alertmanager webhook JSON, ``/cap`` CAP 1.2 XML. It records the
2xx-answered requests with their Idempotency-Key. ``down()`` closes the port
(connection refused, as with a crashed receiver); ``up()`` opens it again on the
same port.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.integration.conftest import free_port


@dataclass(frozen=True)
class Received:
    path: str
    idempotency_key: str
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class NotificationReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.requests = 0
        self._runner: web.AppRunner | None = None

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def cap_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cap"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        self.received.append(Received(request.path, request.headers.get("Idempotency-Key", ""),
                                      request.headers.get("Content-Type", ""), body))
        return web.Response(status=200)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        app.router.add_post("/cap", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def hooks(self) -> list[Received]:
        return [r for r in self.received if r.path == "/hook"]

    def caps(self) -> list[Received]:
        return [r for r in self.received if r.path == "/cap"]

    def webhook_alerts(self) -> list[dict[str, Any]]:
        """Every alert of every webhook notification received, in arrival order."""
        return [alert for r in self.hooks() for alert in r.json()["alerts"]]

    async def until(self, condition: Callable[[], bool], deadline_s: float, what: str,
                    alive: Callable[[], None] | None = None) -> None:
        end = time.monotonic() + deadline_s
        while not condition():
            if alive is not None:
                alive()
            if time.monotonic() > end:
                msg = f"timed out after {deadline_s:.0f} s waiting for {what}; received {len(self.received)}"
                raise AssertionError(msg)
            await asyncio.sleep(0.1)
