"""The demo's stand-in for the city's receivers: a local HTTP server that takes
the worker's CAP 1.2 documents (``/cap``) and Alertmanager webhook messages
(``/hook``) and files them under a directory, so ``make demo`` shows the whole
path from a reading to a notification (outbox, retries and all) without any
outside service.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

from aiohttp import web


class DemoReceiver:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cap_documents = 0
        self.webhook_messages = 0
        self.webhook_alerts = 0
        self._runner: web.AppRunner | None = None
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])

    @property
    def cap_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cap"

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _cap(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.cap_documents += 1
        (self.directory / "cap").mkdir(parents=True, exist_ok=True)
        (self.directory / "cap" / f"{self.cap_documents:05d}.xml").write_bytes(body)
        return web.Response(status=200)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            message = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="not JSON")
        self.webhook_messages += 1
        self.webhook_alerts += len(message.get("alerts", []))
        with (self.directory / "webhook.jsonl").open("ab") as fh:
            fh.write(body.rstrip(b"\n") + b"\n")
        return web.Response(status=200)

    async def start(self) -> None:
        """Listen; what an earlier demo filed is removed first."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        app = web.Application()
        app.router.add_post("/cap", self._cap)
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
