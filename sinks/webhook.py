"""Alertmanager-compatible webhook output (payload ``version: "4"``), through the outbox.

One notification per ``site_id`` per batch, shaped like Alertmanager's webhook
``Message`` (groupKey, truncatedAlerts, status, receiver, groupLabels,
commonLabels, commonAnnotations, externalURL, alerts[]), so existing receivers
(WeCom / DingTalk / SMS bridges) work unchanged.

Mapping choices:
- ``labels`` identify the alarm and carry its current grading: alertname (the
  rule), severity, level, sensor_id, site_id, district, kind, quantity. Labels
  are strings only; a missing value is left out, as in Prometheus.
- ``fingerprint`` is Prometheus' label-set fingerprint (FNV-1a 64, hex) of the
  labels *without* severity and level, so an escalation or a resolution keeps
  the alert's fingerprint and receivers can pair firing with resolved.
- ``status``: firing and updated are ``firing``; ``endsAt`` is the zero time
  ``0001-01-01T00:00:00Z`` while firing (as Alertmanager sends it) and the
  reading time on resolution. ``startsAt`` is the alarm's start when the
  caller knows it (the notifier does: sinks/notifier.py), else the reading
  time of this state change.
- ``annotations.alert_id`` is the deterministic alert id: receivers can
  de-duplicate per alert; the notification's own id is the
  ``Idempotency-Key`` header (see sinks/outbox.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis

from sinks.base import Alert
from sinks.outbox import AiohttpTransport, Backoff, Deliverer, Outbox, OutboxItem

ZERO_TIME = "0001-01-01T00:00:00Z"
GROUP_BY = "site_id"
_IDENTITY_EXCLUDED = frozenset({"severity", "level"})
_FNV_OFFSET, _FNV_PRIME, _MASK64 = 14695981039346656037, 1099511628211, (1 << 64) - 1


def rfc3339_ms(epoch_ms: int) -> str:
    """UTC, millisecond precision, ``Z`` suffix: ``2026-11-26T00:00:00.000Z``."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def label_fingerprint(labels: dict[str, str]) -> str:
    """Prometheus ``LabelSet.Fingerprint``: FNV-1a 64 over sorted name, 0xff, value, 0xff."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name.encode(), b"\xff", labels[name].encode(), b"\xff"):
            for byte in part:
                h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return f"{h:016x}"


def alert_labels(alert: Alert) -> dict[str, str]:
    labels = {
        "alertname": alert.rule, "severity": alert.severity, "level": alert.level, "sensor_id": alert.sensor_id,
        "site_id": alert.site_id, "district": alert.district, "kind": alert.kind, "quantity": alert.quantity,
    }
    return {name: value for name, value in labels.items() if value}


def alert_annotations(alert: Alert) -> dict[str, str]:
    threshold = "" if alert.threshold is None else f" (threshold {alert.threshold:g})"
    where = ", ".join(part for part in (alert.site_id, alert.district) if part)
    return {
        "summary": alert.summary,
        "description": f"{alert.quantity} = {alert.value:g}{threshold} at {alert.sensor_id}"
                       f"{f' ({where})' if where else ''}; level {alert.level}, {alert.status} at {alert.event_ts}",
        "alert_id": alert.alert_id,
        "alarm_key": alert.alarm_key,
        "value": f"{alert.value:g}",
        **({"threshold": f"{alert.threshold:g}"} if alert.threshold is not None else {}),
        **({"departments": ",".join(alert.departments)} if alert.departments else {}),
    }


def am_alert(alert: Alert, external_url: str, starts_at_ms: int | None = None) -> dict[str, Any]:
    labels = alert_labels(alert)
    resolved = alert.status == "resolved"
    at = rfc3339_ms(alert.event_time_ms)
    return {
        "status": "resolved" if resolved else "firing",
        "labels": labels,
        "annotations": alert_annotations(alert),
        "startsAt": at if starts_at_ms is None else rfc3339_ms(starts_at_ms),
        "endsAt": at if resolved else ZERO_TIME,
        "generatorURL": f"{external_url.rstrip('/')}/alarms/{quote(alert.alarm_key, safe='')}",
        "fingerprint": label_fingerprint({k: v for k, v in labels.items() if k not in _IDENTITY_EXCLUDED}),
    }


def _common(maps: Sequence[dict[str, str]]) -> dict[str, str]:
    first, rest = maps[0], maps[1:]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


def notification(
    site_id: str, alerts: Sequence[Alert], *, receiver: str, external_url: str, starts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One Alertmanager webhook message for the alerts of one site; ``starts``: alarm_key ->
    the alarm's start (event ms), else ``startsAt`` is the event's own time."""
    starts = starts or {}
    items = [am_alert(alert, external_url, starts.get(alert.alarm_key)) for alert in alerts]
    group_labels = {GROUP_BY: site_id}
    return {
        "version": "4",
        "groupKey": "{}:{" + f'{GROUP_BY}="{site_id}"' + "}",
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in items) else "resolved",
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": _common([a["labels"] for a in items]),
        "commonAnnotations": _common([a["annotations"] for a in items]),
        "externalURL": external_url,
        "alerts": items,
    }


def group_by_site(alerts: Sequence[Alert]) -> dict[str, list[Alert]]:
    """Alerts per site_id, in first-appearance order, each group in batch order."""
    groups: dict[str, list[Alert]] = {}
    for alert in alerts:
        groups.setdefault(alert.site_id, []).append(alert)
    return groups


def notification_id(sink: str, alerts: Sequence[Alert], *, extra: Sequence[str] = ()) -> str:
    """Deterministic: the same alerts (and ``extra`` keys) for the same sink give the same id."""
    text = "\n".join([sink, *sorted(alert.alert_id for alert in alerts), *sorted(extra)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def alert_key(alert_id: str) -> str:
    return f"alert:{alert_id}"


def repeat_key(alarm_key: str, due_ms: int) -> str:
    return f"repeat:{alarm_key}:{due_ms}"


class WebhookSink:
    """AlertSink: ``write_batch`` returns once the notifications are durable in
    the outbox; the deliverer (started by :meth:`start`) POSTs them."""

    def __init__(
        self, outbox: Outbox, *, receiver: str, external_url: str,
        deliverer: Deliverer | None = None, send_resolved: bool = True,
    ) -> None:
        self.outbox, self.deliverer = outbox, deliverer
        self.receiver, self.external_url, self.send_resolved = receiver, external_url, send_resolved

    @classmethod
    def create(
        cls, client: aioredis.Redis, namespace: str, name: str, url: str, *, external_url: str,
        timeout_s: float = 10.0, max_attempts: int = 8, backoff: Backoff = Backoff(), concurrency: int = 8,
        headers: Mapping[str, str] | None = None,
    ) -> WebhookSink:
        outbox = Outbox(client, namespace, name)
        deliverer = Deliverer(outbox, AiohttpTransport(url), timeout_s=timeout_s, max_attempts=max_attempts,
                              backoff=backoff, concurrency=concurrency, headers=headers)
        return cls(outbox, receiver=name, external_url=external_url, deliverer=deliverer)

    def start(self, *, listen: bool = False) -> None:
        if self.deliverer is not None:
            self.deliverer.start(listen=listen)

    def items(self, alerts: Sequence[Alert], starts: Mapping[str, int] | None = None) -> list[OutboxItem]:
        out = []
        for site_id, group in group_by_site(alerts).items():
            message = notification(site_id, group, receiver=self.receiver, external_url=self.external_url,
                                   starts=starts)
            body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
            keys = tuple(alert_key(alert.alert_id) for alert in group)
            out.append(OutboxItem(notification_id(self.outbox.sink, group), body, keys))
        return out

    async def write_batch(self, alerts: Sequence[Alert], starts: Mapping[str, int] | None = None) -> None:
        """Enqueue one notification per site for the alerts not enqueued before
        (a batch redelivered after a crash, even with other boundaries, adds nothing)."""
        wanted = [a for a in alerts if self.send_resolved or a.status != "resolved"]
        known = await self.outbox.seen([alert_key(a.alert_id) for a in wanted])
        fresh = [a for a in wanted if alert_key(a.alert_id) not in known]
        if fresh and await self.outbox.enqueue(self.items(fresh, starts)) and self.deliverer is not None:
            self.deliverer.wake()

    async def write_repeat(self, due: Sequence[tuple[Alert, int]], starts: Mapping[str, int] | None = None) -> None:
        """Enqueue a repeat of each live alert, ``due`` pairing it with the repeat's
        due time: the same (alert, due time) is enqueued once, however many
        workers or retries ask (sinks/notifier.py "Repeat")."""
        groups: dict[str, list[tuple[Alert, int]]] = {}
        for alert, at_ms in due:
            groups.setdefault(alert.site_id, []).append((alert, at_ms))
        items = []
        for site_id, group in groups.items():
            alerts = [alert for alert, _ in group]
            message = notification(site_id, alerts, receiver=self.receiver, external_url=self.external_url,
                                   starts=starts)
            for item in message["alerts"]:
                item["annotations"]["notification"] = "repeat"
            body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
            keys = tuple(repeat_key(alert.alarm_key, at_ms) for alert, at_ms in group)
            items.append(OutboxItem(notification_id(self.outbox.sink, [], extra=keys), body, keys))
        if items and await self.outbox.enqueue(items) and self.deliverer is not None:
            self.deliverer.wake()

    async def close(self) -> None:
        if self.deliverer is not None:
            await self.deliverer.close()
