"""`cityops deliver`: POST the receivers' outboxes from a process of its own.

With ``CITYOPS_DELIVERY=separate`` workers only *enqueue* notifications
(sinks/notifier.py); this process runs the deliverers (retries, backoff, dead
letters: sinks/outbox.py) and the repeat loop. The outboxes are in Redis and
claims are leased, so any number of these processes (and workers in the default
``worker`` mode) can share them: each notification is POSTed by one of them at a
time. Why a process: HTTP delivery is CPU in Python; in the worker it competes
with decoding and detection for the same core (docs/benchmarks.md measures both).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, start_http_server

from sinks.alarm_store import AlarmStore
from sinks.notifier import NotifyCounters
from sinks.outbox import Counters
from sinks.redis_board import RedisAlarmBoard
from streams.errors import ConfigError
from streams.metrics import Metrics
from streams.notifications import build_notifier
from streams.settings import Settings
from streams.topology import Topology

log = logging.getLogger(__name__)


async def run_delivery(settings: Settings, topology: Topology, metrics_port: int | None) -> None:
    """Deliver until SIGTERM/SIGINT; a receiver switched off is skipped."""
    client = aioredis.Redis.from_url(settings.redis_url)
    metrics = Metrics.create(CollectorRegistry())
    notifier = build_notifier(
        topology, client, settings.namespace, RedisAlarmBoard(client, settings.namespace),
        AlarmStore(client, settings.namespace),
        counters=NotifyCounters(hook=lambda outcome, receiver: metrics.notifications.labels(receiver, outcome).inc()),
        outbox_counters=Counters(hook=lambda event, sink: metrics.outbox_events.labels(sink, event).inc()),
        on_outbox_depth=metrics.set_outbox_depth,
    )
    if not notifier.routes:
        await client.aclose()
        names = [r.url_env for r in topology.spec.notifications.receivers if r.url_env]
        msg = f"no receiver is switched on: set {' or '.join(names) or 'a receiver url'} (topology notifications.receivers)"
        raise ConfigError(msg)
    if metrics_port:
        start_http_server(metrics_port, registry=metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier.start(listen=True)  # woken by the workers' enqueues (outbox pub/sub), not only by polls
    log.info("delivering for %s (namespace %s)", ", ".join(r.name for r in notifier.routes), settings.namespace)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await notifier.close()
        await client.aclose()
