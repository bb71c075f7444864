"""Notifications end to end: real Kafka, Redis, a real worker, a real local HTTP receiver.

- A gas detector at 30 -> 55 -> 10 %LEL gives exactly one alarm that fires
  (major), escalates (critical) and clears only after the route's hold time; the
  webhook gets firing/firing/resolved, the CAP endpoint Alert/Update/Cancel
  documents that validate against the OASIS XSD and reference the Alert.
- With the receiver down, detection goes on (city.alerts) and every
  notification arrives after it comes back, none twice.
- A silence and the critical-mutes-minor inhibition keep exactly the alarms
  they match away from the receivers (city.alerts still has them all); once the
  silence is expired the alarms it held are sent, and their updates follow.
- With CITYOPS_DELIVERY=separate the worker only enqueues; `cityops deliver` POSTs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from datetime import datetime
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import xmlschema
import yaml

from sinks.alarm_store import AlarmStore
from sinks.base import Alert
from streams.stack import StackConfig
from streams.topology import Topology
from tests.integration.conftest import TopicReader, WorkerProcess, produce
from tests.integration.receiver import NotificationReceiver
from tests.shared import shared_dir

pytestmark = pytest.mark.integration

CAP_NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
TOKEN = "tok-alice-notifications"
HOLD_S = 20


@pytest.fixture
async def receiver() -> AsyncIterator[NotificationReceiver]:
    rec = NotificationReceiver()
    await rec.up()
    yield rec
    await rec.down()


def configure(topology: Topology, worker: WorkerProcess, receiver: NotificationReceiver,
              extra_routes: list[dict[str, Any]] | None = None) -> None:
    """The product's topology with a clear hold on the gas alarm, quick retries, and the receiver's URLs."""
    data = yaml.safe_load(topology.path.read_text())
    for route in data["routes"]:
        if route["rule"] == "gas_lel_alarm":
            route["hold_s"] = HOLD_S
    data["routes"] += extra_routes or []
    for spec in data["notifications"]["receivers"]:
        spec.update(backoff_first_s=0.2, backoff_max_s=1.0, max_attempts=1000, timeout_s=2)
    topology.path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    worker.env["CITYOPS_CAP_URL"] = receiver.cap_url
    worker.env["CITYOPS_WEBHOOK_URL"] = receiver.hook_url
    worker.env["CITYOPS_OPERATOR_TOKENS"] = f"alice:{TOKEN}"


def gas_sensors_by_site(topology: Topology) -> dict[str, list[str]]:
    sites: dict[str, list[str]] = defaultdict(list)
    for sensor in topology.catalog.by_kind("hazmat"):
        if sensor.sensor_id.startswith("DG-GS"):
            sites[sensor.site_id].append(sensor.sensor_id)
    return {site: ids for site, ids in sites.items() if len(ids) >= 2}


def gas(sensor: str, ts: int, lel: float) -> tuple[bytes, bytes]:
    return sensor.encode(), json.dumps({"sensor_id": sensor, "ts": ts, "values": {"gas_lel": lel}}).encode()


def alerts_of(records: list[bytes], key: str) -> list[Alert]:
    return [a for a in map(Alert.from_json, records) if a.alarm_key == key]


def hook_alerts_of(receiver: NotificationReceiver, key: str) -> list[dict[str, Any]]:
    return [a for a in receiver.webhook_alerts() if a["annotations"]["alarm_key"] == key]


def cap_of(receiver: NotificationReceiver, sensor: str) -> list[ET.Element]:
    docs = [ET.fromstring(r.body) for r in receiver.caps()]
    return [d for d in docs if any(p.findtext("cap:value", namespaces=CAP_NS) == sensor
                                   for p in d.iterfind(".//cap:parameter", CAP_NS))]


def metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    total = 0.0
    for line in worker.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def api(worker: WorkerProcess, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{worker.web_port}/api/v1{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


async def outbox_pending(stack_cfg: StackConfig, worker: WorkerProcess) -> int:
    """Notifications still in the receivers' outboxes (not yet delivered)."""
    client = aioredis.Redis.from_url(stack_cfg.redis_url)
    namespace = worker.env["CITYOPS_NAMESPACE"]
    try:
        return sum([int(await client.zcard(f"cityops:{namespace}:outbox:{sink}:due"))
                    for sink in ("emergency_cap", "duty_webhook")])
    finally:
        await client.aclose()


async def test_one_gas_alarm_fires_escalates_and_clears_after_the_hold_and_its_cap_documents_validate(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, receiver: NotificationReceiver,
) -> None:
    configure(isolated_topology, worker, receiver)
    topic = isolated_topology.kind("hazmat").topic
    sensor = next(iter(gas_sensors_by_site(isolated_topology).values()))[0]
    key = f"{sensor}:gas_lel_alarm"
    t0 = time.time_ns() // 1_000_000 - 120_000
    worker.start()

    async with TopicReader(stack_cfg.bootstrap, isolated_topology.spec.topics.alerts) as alerts:
        await produce(stack_cfg.bootstrap, topic, [gas(sensor, t0, 30.0)])
        await receiver.until(lambda: len(hook_alerts_of(receiver, key)) == 1 and len(cap_of(receiver, sensor)) == 1,
                             60, "the firing notification and CAP Alert", worker.assert_alive)
        await produce(stack_cfg.bootstrap, topic, [gas(sensor, t0 + 10_000, 55.0)])
        await receiver.until(lambda: len(hook_alerts_of(receiver, key)) == 2 and len(cap_of(receiver, sensor)) == 2,
                             60, "the escalation", worker.assert_alive)
        # the boards' map: the live alarm is on /metrics (refreshed from the Redis board every 5 s)
        await receiver.until(lambda: metric(worker, "cityops_live_alarm", sensor_id=sensor, severity="critical") == 1,
                             30, "cityops_live_alarm of the escalated alarm", worker.assert_alive)
        # below the deadband from t0+20 s; held 10 s at t0+30 s, 25 s at t0+45 s
        await produce(stack_cfg.bootstrap, topic, [gas(sensor, t0 + s * 1000, 10.0) for s in (20, 30, 45)])
        await receiver.until(lambda: len(hook_alerts_of(receiver, key)) == 3 and len(cap_of(receiver, sensor)) == 3,
                             60, "the resolution", worker.assert_alive)
        records = await alerts.until(lambda rs: len(alerts_of(rs, key)) >= 3, 30, "3 alarm events")

    # the three alarm events were timed from the readings' Kafka timestamps
    assert metric(worker, "cityops_alarm_latency_seconds_count", kind="hazmat") >= 3
    assert metric(worker, "cityops_alarm_events_by_district_total", kind="hazmat") >= 3
    # the board's "current reading" of this detector: its newest (t0 + 45 s) reading
    assert metric(worker, "cityops_latest_value", sensor_id=sensor, quantity="gas_lel") == 10.0

    events = alerts_of(records, key)
    assert [(e.status, e.severity) for e in events] == [("firing", "major"), ("updated", "critical"),
                                                         ("resolved", "critical")]
    assert events[2].event_time_ms == t0 + 45_000, "cleared before the hold time had passed"

    store = AlarmStore.from_url(stack_cfg.redis_url, worker.env["CITYOPS_NAMESPACE"])
    try:
        occurrences = [a for a in await store.list(kind="hazmat", limit=1000) if a.alarm_key == key]
    finally:
        await store.close()
    assert len(occurrences) == 1, "one live alarm per key: repeats update it, never duplicate it"
    alarm = occurrences[0]
    assert (alarm.state, alarm.peak_severity, alarm.peak_value, alarm.clear_reason) == (
        "CLEARED_UNACK", "critical", 55.0, "auto")
    assert alarm.first_seen_ms == t0 and alarm.cleared_at_ms is not None

    hooked = hook_alerts_of(receiver, key)
    assert [(a["status"], a["labels"]["severity"]) for a in hooked] == [
        ("firing", "major"), ("firing", "critical"), ("resolved", "critical")]
    assert len({a["fingerprint"] for a in hooked}) == 1, "escalation and resolution keep the fingerprint"
    starts = {datetime.fromisoformat(a["startsAt"]).timestamp() * 1000 for a in hooked}
    assert starts == {t0}, "every notification of the alarm says when it started"
    assert datetime.fromisoformat(hooked[2]["endsAt"]).timestamp() * 1000 == t0 + 45_000
    assert [a["annotations"]["alert_id"] for a in hooked] == [e.alert_id for e in events]

    schema = xmlschema.XMLSchema(str(shared_dir() / "schemas" / "cap" / "CAP-v1.2.xsd"))
    for received in receiver.caps():
        assert received.content_type.startswith("application/cap+xml")
        schema.validate(received.body.decode())
    docs = cap_of(receiver, sensor)
    assert [d.findtext("cap:msgType", namespaces=CAP_NS) for d in docs] == ["Alert", "Update", "Cancel"]
    first = docs[0]
    origin = ",".join(first.findtext(f"cap:{f}", namespaces=CAP_NS) or "" for f in ("sender", "identifier", "sent"))
    assert [d.findtext("cap:references", namespaces=CAP_NS) for d in docs[1:]] == [origin, origin]
    assert [d.findtext(".//cap:severity", namespaces=CAP_NS) for d in docs[:2]] == ["Severe", "Extreme"]
    assert re.fullmatch(r"\d{14}_\d{14}_[0-9A-Za-z-]+", first.findtext("cap:identifier", namespaces=CAP_NS) or "")


async def test_a_receiver_outage_delays_notifications_and_loses_or_repeats_none(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, receiver: NotificationReceiver,
) -> None:
    configure(isolated_topology, worker, receiver)
    topic = isolated_topology.kind("hazmat").topic
    sensors = [ids[0] for ids in list(gas_sensors_by_site(isolated_topology).values())[:4]]
    t0 = time.time_ns() // 1_000_000 - 60_000
    worker.start()
    await receiver.down()

    async with TopicReader(stack_cfg.bootstrap, isolated_topology.spec.topics.alerts) as alerts:
        await produce(stack_cfg.bootstrap, topic, [gas(s, t0, 30.0) for s in sensors])
        await produce(stack_cfg.bootstrap, topic, [gas(s, t0 + 10_000, 55.0) for s in sensors])
        # detection does not wait for the receiver
        records = await alerts.until(lambda rs: len(rs) >= 2 * len(sensors), 60, "8 alarm events while it is down",
                                     alive=worker)
    expected = {a.alert_id for a in map(Alert.from_json, records)}
    deadline = time.monotonic() + 60
    while metric(worker, "cityops_outbox_events_total", event="retried") < 4:
        assert time.monotonic() < deadline, "the worker never retried the down receiver"
        await asyncio.sleep(1)  # poll period
        worker.assert_alive()
    assert receiver.received == []
    deadline = time.monotonic() + 30  # the gauge is refreshed every 5 s
    while metric(worker, "cityops_outbox_waiting", receiver="duty_webhook") < 1:
        assert time.monotonic() < deadline, "cityops_outbox_waiting never showed the backlog"
        await asyncio.sleep(0.5)  # poll period

    await receiver.up()
    await receiver.until(
        lambda: {a["annotations"]["alert_id"] for a in receiver.webhook_alerts()} >= expected
        and len(receiver.caps()) >= len(expected), 60, "every notification after the outage", worker.assert_alive)
    deadline = time.monotonic() + 30
    while await outbox_pending(stack_cfg, worker) > 0:
        assert time.monotonic() < deadline, "the outboxes did not drain"
        await asyncio.sleep(1)  # poll period

    deadline = time.monotonic() + 30
    while metric(worker, "cityops_outbox_waiting") > 0:
        assert time.monotonic() < deadline, "cityops_outbox_waiting did not go back to 0"
        await asyncio.sleep(0.5)  # poll period

    hook_ids = Counter(a["annotations"]["alert_id"] for a in receiver.webhook_alerts())
    assert set(hook_ids) == expected and max(hook_ids.values()) == 1, f"duplicates: {hook_ids}"
    cap_ids = Counter(ET.fromstring(r.body).findtext("cap:identifier", namespaces=CAP_NS) for r in receiver.caps())
    assert len(cap_ids) == len(expected) and max(cap_ids.values()) == 1
    keys = Counter(r.idempotency_key for r in receiver.received)
    assert max(keys.values()) == 1


async def test_silences_and_inhibition_mute_what_they_match_and_nothing_else(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, receiver: NotificationReceiver,
) -> None:
    low = {"rule": "gas_lel_low", "detector": "gas_lel", "direction": "above", "deadband": 1,
           "summary": "Gas {value:.0f} %LEL at {site_id}", "levels": [{"at": 10, "severity": "minor"}]}
    configure(isolated_topology, worker, receiver, extra_routes=[low])
    topic = isolated_topology.kind("hazmat").topic
    sites = list(gas_sensors_by_site(isolated_topology).values())
    (x, y), z, s = sites[0][:2], sites[1][0], sites[2][0]
    t0 = time.time_ns() // 1_000_000 - 60_000
    worker.start()
    silence = api(worker, "POST", "/silences", {"matchers": [{"name": "sensor_id", "value": s}],
                                                "ends_at_ms": t0 + 3_600_000, "comment": "calibration crew on site"})

    async with TopicReader(stack_cfg.bootstrap, isolated_topology.spec.topics.alerts) as alerts:
        await produce(stack_cfg.bootstrap, topic, [gas(x, t0, 60.0)])  # critical at site 0 (and its own minor)
        await receiver.until(lambda: len(hook_alerts_of(receiver, f"{x}:gas_lel_alarm")) == 1, 60,
                             "the critical alarm", worker.assert_alive)
        await produce(stack_cfg.bootstrap, topic, [gas(y, t0 + 1000, 15.0), gas(z, t0 + 1000, 15.0),
                                                   gas(s, t0 + 1000, 30.0)])
        await receiver.until(lambda: len(hook_alerts_of(receiver, f"{z}:gas_lel_low")) == 1, 60,
                             "the minor alarm of the other site", worker.assert_alive)
        records = await alerts.until(lambda rs: len(rs) >= 6, 30, "every alarm event on city.alerts")
    deadline = time.monotonic() + 30
    while (metric(worker, "cityops_notifications_total", outcome="muted_silence") < 2
           or metric(worker, "cityops_notifications_total", outcome="muted_inhibit") < 2):
        assert time.monotonic() < deadline, "the worker did not get to the muted events"
        await asyncio.sleep(0.5)  # poll period

    on_topic = {a.alarm_key for a in map(Alert.from_json, records)}
    assert on_topic == {f"{x}:gas_lel_alarm", f"{x}:gas_lel_low", f"{y}:gas_lel_low", f"{z}:gas_lel_low",
                        f"{s}:gas_lel_alarm", f"{s}:gas_lel_low"}
    notified = {a["annotations"]["alarm_key"] for a in receiver.webhook_alerts()}
    assert notified == {f"{x}:gas_lel_alarm", f"{z}:gas_lel_low"}, "muted: x and y minor (inhibited), s (silenced)"
    cap_sensors = {p.findtext("cap:value", namespaces=CAP_NS) for r in receiver.caps()
                   for p in ET.fromstring(r.body).iterfind(".//cap:parameter", CAP_NS)}
    assert s not in cap_sensors and y not in cap_sensors

    # the silence ends while s's alarms are live: they were held, and are sent now
    api(worker, "DELETE", f"/silences/{silence['id']}")
    await receiver.until(lambda: [a["labels"]["severity"] for a in hook_alerts_of(receiver, f"{s}:gas_lel_alarm")]
                         == ["major"] and len(hook_alerts_of(receiver, f"{s}:gas_lel_low")) == 1, 30,
                         "the held alarms after the silence", worker.assert_alive)
    released = hook_alerts_of(receiver, f"{s}:gas_lel_alarm") + hook_alerts_of(receiver, f"{s}:gas_lel_low")
    assert {datetime.fromisoformat(a["startsAt"]).timestamp() * 1000 for a in released} == {t0 + 1000}, \
        "a held alarm keeps its own start"
    await produce(stack_cfg.bootstrap, topic, [gas(s, t0 + 2000, 55.0)])
    await receiver.until(lambda: [a["labels"]["severity"] for a in hook_alerts_of(receiver, f"{s}:gas_lel_alarm")]
                         == ["major", "critical"], 60, "the escalation of the unsilenced alarm", worker.assert_alive)
    assert f"{y}:gas_lel_low" not in {a["annotations"]["alarm_key"] for a in receiver.webhook_alerts()}, \
        "still muted: the critical alarm of its site is live"


async def test_with_separate_delivery_the_worker_enqueues_and_cityops_deliver_posts(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, receiver: NotificationReceiver,
    tmp_path: Path,
) -> None:
    configure(isolated_topology, worker, receiver)
    worker.env["CITYOPS_DELIVERY"] = "separate"
    topic = isolated_topology.kind("hazmat").topic
    sensor = next(iter(gas_sensors_by_site(isolated_topology).values()))[0]
    t0 = time.time_ns() // 1_000_000 - 60_000
    worker.start()
    await produce(stack_cfg.bootstrap, topic, [gas(sensor, t0, 30.0)])
    deadline = time.monotonic() + 60
    while await outbox_pending(stack_cfg, worker) < 2:  # one webhook message, one CAP document
        assert time.monotonic() < deadline, "the worker did not enqueue the notifications"
        worker.assert_alive()
        await asyncio.sleep(0.2)  # poll period
    assert receiver.received == [], "nothing delivers while no deliverer runs"

    log = (tmp_path / "deliver.log").open("ab")
    deliverer = subprocess.Popen(
        [str(Path(sys.executable).with_name("cityops")), "deliver", "--topology", str(isolated_topology.path)],
        stdout=log, stderr=subprocess.STDOUT, env=worker.env, start_new_session=True)
    try:
        await receiver.until(lambda: len(receiver.hooks()) == 1 and len(receiver.caps()) == 1, 60,
                             "the deliverer's POSTs", lambda: None if deliverer.poll() is None else pytest.fail(
                                 f"cityops deliver exited {deliverer.returncode}: {(tmp_path / 'deliver.log').read_text()}"))
        assert hook_alerts_of(receiver, f"{sensor}:gas_lel_alarm")[0]["labels"]["severity"] == "major"
        deadline = time.monotonic() + 30
        while await outbox_pending(stack_cfg, worker) > 0:
            assert time.monotonic() < deadline, "the outboxes did not drain"
            await asyncio.sleep(0.2)  # poll period
    finally:
        os.killpg(deliverer.pid, signal.SIGTERM)
        assert deliverer.wait(30) == 0, (tmp_path / "deliver.log").read_text()
