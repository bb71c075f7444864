"""sinks.webhook: the Alertmanager webhook payload (version "4") and the outbox-backed sink.

Expected fields come from Alertmanager's webhook_config documentation: a message
has version, groupKey, truncatedAlerts, status (firing|resolved), receiver,
groupLabels, commonLabels, commonAnnotations, externalURL and alerts[]; each
alert has status, labels, annotations, startsAt, endsAt (RFC 3339),
generatorURL and fingerprint; label and annotation values are strings; a firing
alert's endsAt is Go's zero time.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any, cast

import redis.asyncio as aioredis

from sinks.base import Alert
from sinks.outbox import Outbox
from sinks.webhook import WebhookSink, label_fingerprint, notification, notification_id
from tests.unit.test_outbox import Receiver, client, receiver, redis_server  # noqa: F401  (fixtures)

MESSAGE_FIELDS = {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
                  "commonAnnotations", "externalURL", "alerts"}
ALERT_FIELDS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
EXTERNAL = "https://ops.example.city"
EVENT_MS = int(datetime(2026, 11, 26, 0, 0, tzinfo=UTC).timestamp() * 1000)  # 08:00 +08:00


def make_alert(n: int = 1, *, site: str = "SITE-A", sensor: str = "DG-GAS-0001", status: str = "firing",
               severity: str = "critical", level: str = "red", rule: str = "gas_lel_high") -> Alert:
    return Alert(
        alert_id=f"aid-{n}", alarm_key=f"{sensor}:{rule}", status=status, severity=severity,  # type: ignore[arg-type]
        level=level, rule=rule, kind="hazmat", sensor_id=sensor, site_id=site, district="Songshan Lake",
        lat=22.9, lon=113.9, quantity="gas_lel", value=31.5, threshold=25.0, score=6.3,
        event_ts="2026-11-26T08:00:00+08:00", event_time_ms=EVENT_MS + n,
        detected_at="2026-11-26T08:00:00.050+08:00", departments=["work_safety", "fire"],
        summary=f"gas leak at {sensor}",
    )


def build(alerts: list[Alert]) -> dict[str, Any]:
    return notification(alerts[0].site_id, alerts, receiver="safety-bridge", external_url=EXTERNAL)


def parse_rfc3339(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, f"{text} has no offset"
    return parsed


def test_message_has_exactly_the_v4_fields() -> None:
    msg = build([make_alert(1), make_alert(2, sensor="DG-GAS-0002")])
    assert set(msg) == MESSAGE_FIELDS
    assert msg["version"] == "4" and msg["truncatedAlerts"] == 0
    assert msg["receiver"] == "safety-bridge" and msg["externalURL"] == EXTERNAL
    assert msg["status"] == "firing"
    assert msg["groupLabels"] == {"site_id": "SITE-A"}
    assert msg["groupKey"] == '{}:{site_id="SITE-A"}'
    for alert in msg["alerts"]:
        assert set(alert) == ALERT_FIELDS
        for name, value in [*alert["labels"].items(), *alert["annotations"].items()]:
            assert isinstance(name, str) and isinstance(value, str), (name, value)
        assert len(alert["fingerprint"]) == 16 and int(alert["fingerprint"], 16) >= 0
    json.dumps(msg)  # serializable as is


def test_alert_labels_annotations_and_times() -> None:
    [alert] = build([make_alert(7)])["alerts"]
    assert alert["status"] == "firing"
    assert alert["labels"] == {"alertname": "gas_lel_high", "severity": "critical", "level": "red",
                               "sensor_id": "DG-GAS-0001", "site_id": "SITE-A", "district": "Songshan Lake",
                               "kind": "hazmat", "quantity": "gas_lel"}
    notes = alert["annotations"]
    assert notes["summary"] == "gas leak at DG-GAS-0001"
    assert notes["alert_id"] == "aid-7" and notes["value"] == "31.5" and notes["threshold"] == "25"
    assert "gas_lel" in notes["description"] and "31.5" in notes["description"] and "25" in notes["description"]
    assert parse_rfc3339(alert["startsAt"]) == datetime(2026, 11, 26, 0, 0, 0, 7000, tzinfo=UTC)
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"] == f"{EXTERNAL}/alarms/DG-GAS-0001%3Agas_lel_high"


def test_resolved_alert_ends_at_its_reading_time() -> None:
    msg = build([make_alert(3, status="resolved")])
    [alert] = msg["alerts"]
    assert msg["status"] == "resolved" and alert["status"] == "resolved"
    assert parse_rfc3339(alert["endsAt"]) == parse_rfc3339(alert["startsAt"]) == datetime.fromtimestamp(
        (EVENT_MS + 3) / 1000, tz=UTC)


def test_group_status_is_firing_while_any_alert_fires() -> None:
    assert build([make_alert(1, status="resolved"), make_alert(2, status="updated")])["status"] == "firing"
    assert [a["status"] for a in build([make_alert(2, status="updated")])["alerts"]] == ["firing"]
    assert build([make_alert(1, status="resolved"), make_alert(2, status="resolved")])["status"] == "resolved"


def test_common_labels_and_annotations_are_the_shared_pairs() -> None:
    msg = build([make_alert(1), make_alert(2, sensor="DG-GAS-0002", severity="major", level="orange")])
    assert msg["commonLabels"] == {"alertname": "gas_lel_high", "site_id": "SITE-A", "district": "Songshan Lake",
                                   "kind": "hazmat", "quantity": "gas_lel"}
    assert msg["commonAnnotations"] == {"value": "31.5", "threshold": "25", "departments": "work_safety,fire"}


def test_fingerprint_is_prometheus_labelset_fingerprint_of_the_identity() -> None:
    assert label_fingerprint({}) == "cbf29ce484222325"  # prometheus/common model test vectors
    assert label_fingerprint({"name": "garland, briggs", "fear": "love is not enough"}) == "507a62d79ee76c9a"
    fired, escalated, resolved, other = (
        build([a])["alerts"][0] for a in (make_alert(1, severity="major", level="orange"), make_alert(2),
                                          make_alert(3, status="resolved"), make_alert(4, sensor="DG-GAS-0009")))
    assert fired["fingerprint"] == escalated["fingerprint"] == resolved["fingerprint"] != other["fingerprint"]
    identity = {k: v for k, v in fired["labels"].items() if k not in ("severity", "level")}
    assert fired["fingerprint"] == label_fingerprint(identity)


def test_notification_id_is_deterministic_per_sink_and_alert_set() -> None:
    a, b = make_alert(1), make_alert(2)
    assert notification_id("hook", [a, b]) == notification_id("hook", [b, a])
    assert notification_id("hook", [a, b]) != notification_id("other", [a, b])
    assert notification_id("hook", [a]) != notification_id("hook", [a, b])


async def test_one_notification_per_site_per_batch(client: aioredis.Redis) -> None:  # noqa: F811
    sink = WebhookSink(Outbox(client, "t", "hook"), receiver="hook", external_url=EXTERNAL)
    batch = [make_alert(1, site="S1"), make_alert(2, site="S2", sensor="X-2"), make_alert(3, site="S1", sensor="X-3"),
             make_alert(4, site="S3", sensor="X-4")]
    items = sink.items(batch)
    bodies = [json.loads(item.body) for item in items]
    assert [b["groupLabels"]["site_id"] for b in bodies] == ["S1", "S2", "S3"]
    assert [[a["annotations"]["alert_id"] for a in b["alerts"]] for b in bodies] == [
        ["aid-1", "aid-3"], ["aid-2"], ["aid-4"]]
    assert [item.dedup_keys for item in items] == [("alert:aid-1", "alert:aid-3"), ("alert:aid-2",), ("alert:aid-4",)]
    await sink.write_batch(batch)
    assert await sink.outbox.pending() == 3
    raw = cast(dict[bytes, bytes], await client.hgetall(sink.outbox.items_key))
    stored = {k.decode(): json.loads(v) for k, v in raw.items()}
    assert stored == {item.id: json.loads(item.body) for item in items}


async def test_a_redelivered_batch_enqueues_nothing_twice_even_with_other_boundaries(
        client: aioredis.Redis) -> None:  # noqa: F811
    sink = WebhookSink(Outbox(client, "t", "hook"), receiver="hook", external_url=EXTERNAL)
    first = [make_alert(1, site="S1"), make_alert(2, site="S1", sensor="X-2")]
    await sink.write_batch(first)
    await sink.write_batch(first)
    await sink.write_batch([make_alert(2, site="S1", sensor="X-2"), make_alert(3, site="S1", sensor="X-3")])
    bodies = [json.loads(v) for v in await client.hvals(sink.outbox.items_key)]
    sent = sorted(a["annotations"]["alert_id"] for b in bodies for a in b["alerts"])
    assert sent == ["aid-1", "aid-2", "aid-3"]


async def test_send_resolved_false_skips_resolutions(client: aioredis.Redis) -> None:  # noqa: F811
    sink = WebhookSink(Outbox(client, "t", "hook"), receiver="hook", external_url=EXTERNAL, send_resolved=False)
    await sink.write_batch([make_alert(1, status="resolved")])
    assert await sink.outbox.pending() == 0


async def test_end_to_end_write_batch_then_delivery(client: aioredis.Redis, receiver: Receiver) -> None:  # noqa: F811
    sink = WebhookSink.create(client, "t", "safety-bridge", receiver.url, external_url=EXTERNAL, timeout_s=2.0)
    sink.start()
    try:
        await sink.write_batch([make_alert(1, site="S1"), make_alert(2, site="S2", sensor="X-2")])
        deadline = time.monotonic() + 10
        while len(receiver.received) < 2:
            assert time.monotonic() < deadline, "the webhook was not delivered within 10 s"
            await asyncio.sleep(0.01)
    finally:
        await sink.close()
    by_site = {json.loads(body)["groupLabels"]["site_id"]: (key, json.loads(body)) for key, body in receiver.received}
    assert set(by_site) == {"S1", "S2"}
    key, body = by_site["S1"]
    assert key == notification_id("safety-bridge", [make_alert(1, site="S1")])
    assert body == build([make_alert(1, site="S1")]) | {"receiver": "safety-bridge"}
    assert await sink.outbox.pending() == 0


def test_starts_at_is_the_alarm_start_when_given_else_the_event_time() -> None:
    a = make_alert(1)
    given = notification("SITE-A", [a], receiver="r", external_url=EXTERNAL, starts={a.alarm_key: EVENT_MS - 60_000})
    assert parse_rfc3339(given["alerts"][0]["startsAt"]).timestamp() * 1000 == EVENT_MS - 60_000
    plain = build([a])
    assert parse_rfc3339(plain["alerts"][0]["startsAt"]).timestamp() * 1000 == a.event_time_ms
