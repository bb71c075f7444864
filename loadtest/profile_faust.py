"""Profile / compare Faust consumer variants end to end (bench_e2e's throughput phase).

Runs ``loadtest/bench_e2e.py`` unchanged, except that the worker process is this
file's ``worker`` sub-command: ``streams.app.create_app`` with a *variant*
applied from the outside (extra ``faust.App`` settings, a no-op Monitor, or an
alternative agent body), so variants can be compared without editing
streams/app.py. With no variant the worker is exactly ``cityops worker``.

    .venv/bin/python loadtest/profile_faust.py bench --variant '{"settings": {"cython_optimizations": true}}' \
        [--cprofile OUT.prof | --pyinstrument OUT.html] [bench_e2e args...]

Variant keys (JSON):
  settings: dict   extra keyword arguments for faust.App (stream_buffer_maxsize, broker_max_poll_records, ...)
  monitor:  "null" replace faust's Monitor sensor by one whose per-event hooks do nothing
  agent:    "take_events" (default: the agent of streams/app.py) | "noack_events" (own buffer, manual ack)
  schema:   "raw"  topics get a Schema whose decode builds the Event directly (no codec registry)
  loop:     "uvloop" run the worker on uvloop (not a dependency: install it with
                   `pip install --target DIR uvloop` and pass "sys_path": ["DIR"])
  drain:    "direct" EXPERIMENT: the consumer awaits the conductor callback itself instead of
                   Service.wait_first (4 tasks per message) while the flow is not suspended
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(REPO), str(REPO / "loadtest")) if p not in sys.path]

VARIANT_ENV = "CITYOPS_PROFILE_VARIANT"


# ------------------------------------------------------------------ worker side


def _null_monitor() -> Any:
    from faust.sensors.monitor import Monitor

    class NullMonitor(Monitor):
        def on_message_in(self, *a: Any, **kw: Any) -> None:
            pass

        def on_stream_event_in(self, *a: Any, **kw: Any) -> None:
            return None

        def on_stream_event_out(self, *a: Any, **kw: Any) -> None:
            pass

        def on_message_out(self, *a: Any, **kw: Any) -> None:
            pass

    return NullMonitor()


def _noack_agent(runtime: Any, kind: str) -> Any:
    """Own buffering over stream.noack().events(); ack each event only after handle returned."""
    import streams.app as appmod
    from streams.decode import RawMessage

    batch = runtime.topology.kind(kind).batch
    window_s = batch.budget_ms * appmod.WINDOW_SHARE_OF_BUDGET / 1000
    max_n = batch.max_messages

    async def agent(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        events: list[Any] = []
        deadline = 0.0
        it = stream.noack().events().__aiter__()
        while True:
            timeout = None if not events else max(deadline - loop.time(), 0.0)
            try:
                e = await asyncio.wait_for(it.__anext__(), timeout) if timeout is not None else await it.__anext__()
            except asyncio.TimeoutError:
                e = None
            if e is not None:
                if not events:
                    deadline = loop.time() + window_s
                events.append(e)
            if events and (len(events) >= max_n or e is None or loop.time() >= deadline):
                msgs = [RawMessage(x.message.value, x.message.key, x.message.topic, x.message.partition,
                                   x.message.offset) for x in events]
                await appmod._handle_or_die(runtime, kind, msgs)
                for x in events:
                    await stream.ack(x)
                events = []

    agent.__name__ = f"{kind}_agent"
    return agent


def _raw_schema() -> Any:
    """A Schema whose decode builds the Event straight from the message (bytes in, bytes out)."""
    import faust

    class RawSchema(faust.Schema):
        def compile(self, app: Any, *, on_key_decode_error: Any = None, on_value_decode_error: Any = None,
                    default_propagate: bool = False) -> Any:
            event_cls = app.conf.Event

            async def decode(message: Any, *, propagate: bool = default_propagate) -> Any:
                return event_cls(app, message.key, message.value, message.headers, message)

            return decode

    return RawSchema()


def _direct_drain_transport(app: Any) -> Any:
    """Consumer whose drain loop awaits the conductor callback directly (no wait_first, no tasks)
    while the flow is not suspended -- an EXPERIMENT to size Faust's per-message task overhead."""
    from faust.transport.drivers import aiokafka as drv

    base = drv.Consumer._drain_messages

    class DirectConsumer(drv.Consumer):  # type: ignore[misc,valid-type]
        async def _drain_messages(self, fetcher: Any) -> None:
            real_wait_first = self.wait_first
            suspend = self.suspend_flow

            async def wait_first(*coros: Any, timeout: Any = None) -> Any:
                if len(coros) == 2 and not suspend.is_set() and not self.should_stop:
                    coros[1].close()  # the unawaited suspend_flow.wait() coroutine
                    return await coros[0]
                return await real_wait_first(*coros, timeout=timeout)

            self.wait_first = wait_first  # type: ignore[method-assign]
            try:
                await base(self, fetcher)
            finally:
                del self.wait_first

    class Transport(drv.Transport):  # type: ignore[misc,valid-type]
        Consumer = DirectConsumer

    return Transport(app.conf.broker_consumer, app)


def run_worker(argv: list[str]) -> None:
    import faust

    import streams.app as appmod
    from streams.settings import Settings

    variant = json.loads(os.environ.get(VARIANT_ENV) or "{}")
    sys.path[:0] = variant.get("sys_path", [])
    if variant.get("loop") == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    extra = dict(variant.get("settings", {}))
    if variant.get("monitor") == "null":
        extra["monitor"] = _null_monitor()
    if extra:
        real_app = faust.App

        class _Faust:
            def __getattr__(self, name: str) -> Any:
                return getattr(faust, name)

            @staticmethod
            def App(*a: Any, **kw: Any) -> Any:  # noqa: N802
                return real_app(*a, **{**kw, **extra})

        appmod.faust = _Faust()  # type: ignore[assignment]
    if variant.get("agent") == "noack_events":
        appmod._kind_agent = _noack_agent  # type: ignore[assignment]
    if variant.get("schema") == "raw" or variant.get("drain") == "direct":
        real_app2 = appmod.faust.App
        schema_raw, drain_direct = variant.get("schema") == "raw", variant.get("drain") == "direct"

        class _Faust2:
            def __getattr__(self, name: str) -> Any:
                return getattr(faust, name)

            @staticmethod
            def App(*a: Any, **kw: Any) -> Any:  # noqa: N802
                app = real_app2(*a, **kw)
                if schema_raw:
                    real_topic = app.topic
                    app.topic = lambda *ta, **tkw: real_topic(*ta, **{**tkw, "schema": _raw_schema()})
                if drain_direct:
                    app.transport = _direct_drain_transport(app)
                return app

        appmod.faust = _Faust2()  # type: ignore[assignment]
    topology = Path(argv[argv.index("--topology") + 1])
    app = appmod.create_app(Settings.from_env(topology=topology))
    print(f"# profile_faust worker variant {variant}, loop {type(app.loop).__module__}", file=sys.stderr, flush=True)
    faust.Worker(app, loglevel="warning").execute_from_commandline()


# ------------------------------------------------------------------ driver side


def run_bench(argv: list[str]) -> int:
    import argparse

    import bench_e2e

    p = argparse.ArgumentParser()
    p.add_argument("--variant", default="{}")
    p.add_argument("--cprofile", type=Path, default=None)
    p.add_argument("--pyinstrument", type=Path, default=None)
    a, rest = p.parse_known_args(argv)
    json.loads(a.variant)  # fail early on bad JSON

    class VariantWorker(bench_e2e.Worker):
        def start(self) -> None:
            env = {**self.env, VARIANT_ENV: a.variant}
            if a.cprofile:
                prefix = [sys.executable, "-m", "cProfile", "-o", str(a.cprofile)]
            elif a.pyinstrument:
                prefix = [sys.executable, "-m", "pyinstrument", "-r", "text", "--show-all", "-o", str(a.pyinstrument)]
            else:
                prefix = [sys.executable]
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [*prefix, __file__, "worker", "--topology", str(self.topology.path)],
                    stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
                )

    bench_e2e.Worker = VariantWorker  # type: ignore[misc]
    rc = int(bench_e2e.main(rest))
    if a.cprofile and a.cprofile.exists():
        import pstats

        pstats.Stats(str(a.cprofile)).strip_dirs().sort_stats("tottime").print_stats(35)
        pstats.Stats(str(a.cprofile)).strip_dirs().sort_stats("cumulative").print_stats(45)
    return rc


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "worker":
        run_worker(args)
    else:
        raise SystemExit(run_bench(args))
