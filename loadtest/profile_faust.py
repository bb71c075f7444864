"""Profile / compare Faust consumer variants end to end (bench_e2e's phases, unchanged).

Runs ``loadtest/bench_e2e.py`` as is, except that the worker process is this
file's ``worker`` sub-command: ``streams.app.create_app`` with a *variant*
applied from the outside, so variants can be compared without editing
streams/app.py. With no variant the worker is what ``cityops worker`` runs.

    .venv/bin/python loadtest/profile_faust.py bench [--variant JSON] \\
        [--cprofile OUT.prof | --pyinstrument OUT.txt] [bench_e2e args, e.g. --latency-samples 5]

Variant keys (JSON object):
  stock:    ["consumer", "schema"]  undo streams/app.py's changes: Faust's own Kafka consumer
            (Service.wait_first per message) and/or the default raw-codec Schema.
            {"stock": ["consumer", "schema"]} is the worker as it was before them.
  settings: {...}    extra keyword arguments for faust.App, e.g. {"cython_optimizations": true},
            {"stream_buffer_maxsize": 16384}
  monitor:  "null"   replace faust's Monitor sensor by one whose per-event hooks do nothing
  loop:     "uvloop" run the worker on uvloop (not a project dependency: install it apart with
            `pip install --target DIR uvloop` and add "sys_path": ["DIR"])

--pyinstrument needs `pip install pyinstrument` in the venv (a profiling aid, not a dependency).
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


def run_worker(argv: list[str]) -> None:
    import faust
    from faust.transport.drivers import aiokafka as faust_kafka

    import streams.app as appmod
    from streams.settings import Settings

    variant = json.loads(os.environ.get(VARIANT_ENV) or "{}")
    sys.path[:0] = variant.get("sys_path", [])
    if variant.get("loop") == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    stock = set(variant.get("stock", []))
    if "consumer" in stock:
        appmod._Transport = faust_kafka.Transport  # type: ignore[misc]
    if "schema" in stock:
        appmod._RawSchema = lambda: None  # type: ignore[assignment,misc]  # topic(schema=None): the default
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
    topology = Path(argv[argv.index("--topology") + 1])
    app = appmod.create_app(Settings.from_env(topology=topology))
    print(f"# profile_faust worker: variant {variant}; consumer {app.transport.Consumer.__name__}, "
          f"loop {type(app.loop).__module__}", file=sys.stderr, flush=True)
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
