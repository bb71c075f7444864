"""Build the worker's notification side from topology.yaml ``notifications``:
the receivers (webhook / CAP sinks with their outboxes), the inhibition rules
and the :class:`~sinks.notifier.Notifier` that routes to them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import redis.asyncio as aioredis

from sinks.alarm_store import AlarmStore
from sinks.archive import JsonlArchive
from sinks.cap import CapConfig
from sinks.cap_sink import CapSink
from sinks.noise import InhibitRule
from sinks.notifier import Notifier, NotifyCounters, ReceiverSink, Route
from sinks.outbox import Backoff, Counters
from sinks.redis_board import RedisAlarmBoard
from sinks.silences import SilenceCache, SilenceStore
from sinks.webhook import WebhookSink
from streams.errors import ConfigError
from streams.topology import Topology
from streams.topology_spec import ReceiverSpec

log = logging.getLogger(__name__)


def receiver_url(spec: ReceiverSpec, env: Mapping[str, str]) -> str | None:
    """The receiver's URL, or None when it is switched off (``url_env`` unset or empty)."""
    if spec.url is not None:
        return spec.url
    assert spec.url_env is not None  # ReceiverSpec allows exactly one
    url = env.get(spec.url_env, "").strip()
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        msg = f"{spec.url_env}={url!r} (receiver {spec.name}) must be an http:// or https:// URL"
        raise ConfigError(msg)
    return url


def receiver_headers(spec: ReceiverSpec, env: Mapping[str, str]) -> dict[str, str]:
    """The receiver's ``headers_env`` resolved; a variable that is unset is a config error
    (a receiver that needs a credential must not run without it)."""
    headers = {}
    for header, variable in spec.headers_env.items():
        value = env.get(variable, "").strip()
        if not value:
            msg = f"{variable} is not set: receiver {spec.name} sends it as its {header} header (headers_env)"
            raise ConfigError(msg)
        if "\n" in value or "\r" in value:
            msg = f"{variable} (receiver {spec.name}, header {header}) must be one line"
            raise ConfigError(msg)
        headers[header] = value
    return headers


def build_sink(
    spec: ReceiverSpec, url: str, topology: Topology, client: aioredis.Redis, namespace: str,
    counters: Counters | None = None, env: Mapping[str, str] | None = None,
) -> ReceiverSink:
    backoff = Backoff(base_s=spec.backoff_first_s, cap_s=spec.backoff_max_s)
    headers = receiver_headers(spec, os.environ if env is None else env)
    external_url = topology.spec.notifications.external_url
    sink: WebhookSink | CapSink
    if spec.type == "webhook":
        sink = WebhookSink.create(client, namespace, spec.name, url, external_url=external_url,
                                  timeout_s=spec.timeout_s, max_attempts=spec.max_attempts, backoff=backoff,
                                  headers=headers)
    else:
        assert spec.cap is not None  # ReceiverSpec requires it for type cap
        units = {q: qs.unit for kind in topology.spec.kinds.values() for q, qs in kind.quantities.items()}
        config = CapConfig(
            sender=spec.cap.sender, sender_name=spec.cap.sender_name, org_code=spec.cap.org_code,
            status=spec.cap.status, scope=spec.cap.scope, restriction=spec.cap.restriction,
            radius_km=spec.cap.radius_km, english=spec.cap.english, units=units,
        )
        sink = CapSink.create(client, namespace, spec.name, url, config, timeout_s=spec.timeout_s,
                              max_attempts=spec.max_attempts, backoff=backoff, headers=headers)
    if counters is not None and sink.deliverer is not None:
        sink.deliverer.counters = counters
    if counters is not None and isinstance(sink, CapSink):
        sink.counters.hook = counters.hook  # enqueued, promoted, orphan_resolved, rejected
    return sink


def build_notifier(
    topology: Topology, client: aioredis.Redis, namespace: str, board: RedisAlarmBoard, store: AlarmStore,
    *, env: Mapping[str, str] | None = None, counters: NotifyCounters | None = None,
    outbox_counters: Counters | None = None, on_outbox_depth: Callable[[str, int, int], None] | None = None,
) -> Notifier:
    env = os.environ if env is None else env
    notes = topology.spec.notifications
    routes = []
    for spec in notes.receivers:
        url = receiver_url(spec, env)
        if url is None:
            log.info("receiver %s is off: %s is not set", spec.name, spec.url_env)
            continue
        sink = build_sink(spec, url, topology, client, namespace, outbox_counters, env)
        routes.append(Route(
            name=spec.name, sink=sink, departments=None if spec.departments is None else frozenset(spec.departments),
            min_severity=spec.min_severity, send_resolved=spec.send_resolved, repeat=spec.repeat,
        ))
        log.info("receiver %s (%s) -> %s", spec.name, spec.type, url)
    return Notifier(
        client, namespace, board, store, SilenceCache(SilenceStore(client, namespace)), routes,
        [InhibitRule.from_spec(rule) for rule in notes.inhibit], topology.rule_categories(),
        repeat_interval_ms=int(notes.repeat_interval_s * 1000), repeat_severities=notes.repeat_severities,
        counters=counters, on_outbox_depth=on_outbox_depth,
    )


def build_archive(topology: Topology, data_dir: Path) -> JsonlArchive | None:
    archive = topology.spec.notifications.archive
    return JsonlArchive(data_dir / archive.directory) if archive.enabled else None
