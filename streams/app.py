"""create_app(settings) -> faust.App: the worker's shell around its batch consumers.

Faust runs the worker's lifecycle (start, signals, graceful stop), its web server
(/metrics, /healthz, the operator API) and timers; the readings take the hot path
of streams/consumer.py, one batch consumer per kind, with no per-record Faust
machinery (docs/architecture.md explains why, with the figures).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import faust
import faust.app.base
import mode
from faust.web.drivers import aiohttp as faust_aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sinks.silences import SilenceStore
from streams.consumer import KindConsumer
from streams.errors import ConfigError
from streams.loop_watchdog import LoopWatchdog
from streams.metrics import Metrics
from streams.operator_api import OPERATOR_TOKENS_ENV, create_operator_app, operator_tokens_from_env
from streams.runtime import Runtime
from streams.settings import Settings
from streams.topology import Topology, load_topology

log = logging.getLogger(__name__)

OPERATOR_API_PREFIX = "/api/v1"


def create_app(settings: Settings, topology: Topology | None = None) -> faust.App:
    topology = topology or load_topology(settings.topology)
    app = _ShellApp(
        settings.app_id,
        broker=settings.broker_url,
        web_port=settings.web_port,
        web_host=settings.web_host,
        datadir=str(settings.data_dir),
        topic_partitions=topology.spec.topics.partitions,
    )
    runtime = Runtime(settings, topology, Metrics.create(CollectorRegistry()))
    consumers = BatchConsumers(runtime, settings)
    app.service(consumers)  # type: ignore[arg-type]  # Faust starts an instance as it is
    _add_pages(app, runtime, consumers)
    _mount_operator_api(app, runtime)
    return app


class _ShellBoot(faust.app.base.BootStrategy):
    """Faust as the worker's shell: lifecycle, signals, logging, web server, timers.
    Faust's own Kafka consumer and producer are not started: the readings are
    fetched by BatchConsumers (streams/consumer.py) and alarms are produced by the
    sinks' writer, so Faust joins no consumer group and opens no Kafka connection."""

    enable_kafka = False


class _ShellApp(faust.App):
    BootStrategy = _ShellBoot


class BatchConsumers(mode.Service):
    """Every kind's batch consumer, started and stopped with the worker."""

    def __init__(self, runtime: Runtime, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.consumers = [KindConsumer(runtime, kind, settings) for kind in runtime.kinds]
        self.watchdog = LoopWatchdog(runtime.metrics.registry)

    async def on_start(self) -> None:
        self.watchdog.start()
        await self.runtime.start()
        # what start-up made (modules, Faust, the pipelines, restored state) lives as long as the
        # worker: out of the collector's sight, a full collection no longer walks it (one such
        # walk held the event loop ~100-200 ms while a backlog drained: streams/loop_watchdog.py)
        gc.freeze()
        # together: each join is a rebalance of the group, so joins that arrive together are one
        await asyncio.gather(*(consumer.start() for consumer in self.consumers))

    async def on_stop(self) -> None:
        # the batches in flight finish and their offsets are committed before the sinks close
        await asyncio.gather(*(consumer.stop() for consumer in self.consumers))
        await self.runtime.close()
        await self.watchdog.stop()


def _add_pages(app: faust.App, runtime: Runtime, consumers: BatchConsumers) -> None:
    registry = runtime.metrics.registry

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # ~3,000 samples take ~30 ms of Python to format: in a thread, so the batches on the
        # event loop go on between the GIL's switches instead of waiting out the whole scrape
        body = await asyncio.to_thread(generate_latest, registry)
        # aiohttp wants the charset apart from the media type
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        ok = await runtime.board.ping()
        partitions = {c.kind: sorted(tp.partition for tp in c.assignment) for c in consumers.consumers}
        return web.json({"redis": ok, "kinds": sorted(runtime.pipelines), "partitions": partitions},
                        status=200 if ok else 503)


def _mount_operator_api(app: faust.App, runtime: Runtime) -> None:
    """Serve the operator API (streams/operator_api.py) on the worker's web port under
    /api/v1, when CITYOPS_OPERATOR_TOKENS names at least one operator.

    It is an aiohttp sub-application of Faust's web app (its own auth and error
    middlewares apply only under the prefix, not to /metrics or /healthz). It is
    added now, while create_app runs: Faust freezes the aiohttp app when its web
    server starts. The line saying whether it is served is logged once the worker
    runs (logging is not set up yet while create_app runs)."""
    tokens = operator_tokens_from_env()  # a malformed value is a ConfigError: exit 2 before anything starts
    if tokens:
        web = app.web
        if not isinstance(web, faust_aiohttp.Web):
            msg = f"the operator API needs Faust's aiohttp web driver, not {type(web).__name__}"
            raise ConfigError(msg)
        silences = SilenceStore(runtime.redis, runtime.settings.namespace)
        web.web_app.add_subapp(OPERATOR_API_PREFIX, create_operator_app(runtime.alarms, silences, tokens, prefix=""))
        operators = ", ".join(sorted(set(tokens.values())))
        line = (f"operator API served at http://127.0.0.1:{runtime.settings.web_port}{OPERATOR_API_PREFIX} "
                f"for {len(set(tokens.values()))} operators ({operators})")
    else:
        line = f"operator API not mounted: {OPERATOR_TOKENS_ENV} is not set"

    async def _announce_operator_api() -> None:
        log.info("%s", line)

    app.task(_announce_operator_api)
