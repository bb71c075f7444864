"""create_app(settings) -> faust.App: one agent per input topic."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Callable
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_kafka
from faust.web.drivers import aiohttp as faust_aiohttp
from mode.services import WaitResults
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sinks.silences import SilenceStore
from streams.decode import RawMessage
from streams.errors import ConfigError
from streams.metrics import Metrics
from streams.operator_api import OPERATOR_TOKENS_ENV, create_operator_app, operator_tokens_from_env
from streams.runtime import Runtime
from streams.settings import Settings
from streams.topology import Topology, load_topology

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
EXIT_BATCH_NOT_ACKED = 70  # EX_SOFTWARE: a supervisor restarts the worker
OPERATOR_API_PREFIX = "/api/v1"


def create_app(settings: Settings, topology: Topology | None = None) -> faust.App:
    topology = topology or load_topology(settings.topology)
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        key_serializer="raw",
        value_serializer="raw",
        web_port=settings.web_port,
        web_host="127.0.0.1",
        datadir=str(settings.data_dir),
        topic_partitions=topology.spec.topics.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=1.0,
        # a crashed worker's partitions move to a live one after this long (Faust's default is 60 s)
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
    )
    # before anything touches app.topics (which builds the default transport)
    app.transport = _Transport(app.conf.broker_consumer, app)
    runtime = Runtime(settings, topology, Metrics.create(CollectorRegistry()))
    for topic_name, kind in topology.input_topics().items():
        topic = app.topic(topic_name, key_type=bytes, value_type=bytes, partitions=topology.spec.topics.partitions,
                          schema=_RawSchema())
        app.agent(topic, name=f"cityops.{kind}")(_kind_agent(runtime, kind))
    _add_pages(app, runtime)
    _mount_operator_api(app, runtime)

    @app.on_partitions_assigned.connect
    async def _reload(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # partitions may have moved from another worker: its alarms are in Redis
        assigned = args[0] if args else kwargs.get("assigned", ())
        await runtime.reload({(tp.topic, tp.partition) for tp in assigned})

    @app.on_before_shutdown.connect
    async def _close(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await runtime.close()

    return app


class _InlineDeliveryConsumer(faust_kafka.Consumer):
    """Faust's Kafka consumer without four asyncio tasks per message.

    Faust's fetch loop (``Consumer._drain_messages``) hands every message to the
    conductor with ``await self.wait_first(callback(message),
    self.suspend_flow.wait())``: a race of the delivery against a rebalance's flow
    suspension and the consumer's stop and crash events, which costs four tasks
    and an ``asyncio.wait`` per message: about half of the worker's CPU per
    reading in loadtest/bench_e2e.py (loadtest/profile_faust.py compares). When
    none of those events is set the race can only end with the delivery, so this
    awaits it directly; any other call goes to mode's ``wait_first``. If an event
    is set while a delivery waits for room in a full stream buffer, the delivery
    is not abandoned: it ends when the agent frees room, or it is cancelled with
    the fetcher, which Faust stops on every revocation and at shutdown. Acks and
    commits are not touched: offsets still move only through the agent's acks.
    """

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        flow = self.suspend_flow
        if (len(coros) == 2 and timeout is None and inspect.iscoroutine(coros[0]) and inspect.iscoroutine(coros[1])
                and coros[1].cr_code.co_name == "wait" and inspect.getcoroutinelocals(coros[1]).get("self") is flow
                and not (flow.is_set() or self.should_stop)):
            coros[1].close()  # the flow.wait() we did not need
            return WaitResults([coros[0]], [await coros[0]], False)
        return await super().wait_first(*coros, timeout=timeout)


class _Transport(faust_kafka.Transport):
    Consumer = _InlineDeliveryConsumer


class _RawSchema(faust.Schema[bytes, bytes]):
    """Bytes in, bytes out, as with the raw codec, minus the codec registry's
    per-message lookups (the agent reads event.message, not the event's key/value)."""

    def compile(self, app: Any, **kwargs: Any) -> Callable[..., Any]:
        event_cls = app.conf.Event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return event_cls(app, message.key, message.value, message.headers, message)

        return decode


def _timestamp_ms(seconds: object) -> int:
    """Faust gives the record timestamp in float seconds (or None)."""
    return int(seconds * 1000) if isinstance(seconds, (int, float)) and seconds > 0 else -1


def _kind_agent(runtime: Runtime, kind: str) -> Callable[[Any], Any]:
    """A thin agent: take a micro-batch within the kind's budget, hand it on.

    The batch window is 70 % of the budget: the rest is for decoding, detecting
    and writing the alert, and for the previous batch's alarm-manager tail, so a reading arriving first in a window still makes
    the budget (arrival at the worker -> alarm on the alerts topic)."""
    batch = runtime.topology.kind(kind).batch
    window_s = batch.window_ms / 1000

    async def agent(stream: Any) -> None:
        async for events in stream.take_events(batch.max_messages, within=window_s):
            messages = [
                # a null value (tombstone) becomes b"": dead-lettered as `empty`, never a crash
                RawMessage(e.message.value or b"", e.message.key, e.message.topic, e.message.partition, e.message.offset,
                           _timestamp_ms(e.message.timestamp))
                for e in events
            ]
            await _handle_or_die(runtime, kind, messages)

    agent.__name__ = f"{kind}_agent"
    return agent


async def _handle_or_die(runtime: Runtime, kind: str, messages: list[RawMessage]) -> None:
    """Run one batch so that its offsets are acknowledged only once its outputs are durable.

    Faust's take_events acknowledges a batch when the loop body exits, even by an
    exception or a cancellation (shutdown). So: a shutdown waits for the batch in
    flight (up to a grace period), and a batch that cannot finish — a bug, or an
    outage outlasting the grace period — ends the process before Faust can
    acknowledge it; the restarted worker gets the batch again (same alert ids).
    """
    task = asyncio.ensure_future(runtime.handle(kind, messages))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            await asyncio.wait_for(task, SHUTDOWN_GRACE_S)
        except BaseException:  # noqa: BLE001 - any failure here must not ack the batch
            _die(f"shutdown interrupted a {kind} batch that could not finish within {SHUTDOWN_GRACE_S:g} s")
        raise
    except Exception:
        log.exception("processing a %s batch failed", kind)
        _die(f"a {kind} batch failed")


def _die(why: str) -> None:
    log.critical("%s: exiting without acknowledging it, so it is delivered again", why)
    logging.shutdown()
    os._exit(EXIT_BATCH_NOT_ACKED)


def _add_pages(app: faust.App, runtime: Runtime) -> None:
    registry = runtime.metrics.registry

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp wants the charset apart from the media type
        return web.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        ok = await runtime.board.ping()
        return web.json({"redis": ok, "kinds": sorted(runtime.pipelines)}, status=200 if ok else 503)


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
