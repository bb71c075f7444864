"""`cityops replay` against a real live run (issue 12): a real worker, archiver, real
receivers and the simulated city with its scripted incidents on real Kafka and Redis.

Then: the window replayed at max speed from Kafka gives the live alarm events and
notifications; again from the archive after the topics are truncated; with a lowered
gas set point the diff shows the alarms the readings say it must gain and the lead
time it must win; the receivers get nothing and the live Redis keys do not change;
a year-old recording, dead-lettered by the live worker, replays with the default
topology on its own clock.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka import AIOKafkaConsumer

from sinks.alarm_store import AlarmStore
from sinks.base import Alert
from streams.archive.query import ArchiveQueryError, run_query
from streams.stack import StackConfig
from tests.integration.conftest import REPO, WorkerProcess, produce, wait_for
from tests.integration.receiver import NotificationReceiver
from tests.integration.test_archive import YEAR_MS, ArchiverProcess

pytestmark = pytest.mark.integration

CITYOPS = str(Path(sys.executable).with_name("cityops"))
GAS_RULE = "gas_lel_alarm"
LOWERED_AT = 15.0


def _count(root: Path, sql: str) -> int:
    try:
        return int(run_query(root, sql)[1][0][0])
    except ArchiveQueryError:
        return 0


def _metric(worker: WorkerProcess, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in worker.metrics().splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


async def _replay(env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(CITYOPS, "replay", *args, "--json", env=env, cwd=str(REPO),
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out)
    return result


async def _alerts(bootstrap: str, topic: str) -> list[Alert]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: list[Alert] = []
        while batch := await consumer.getmany(timeout_ms=1500):
            found.extend(Alert.from_json(r.value) for records in batch.values() for r in records if r.value)
        return found
    finally:
        await consumer.stop()


async def _snapshot(client: aioredis.Redis, namespace: str) -> dict[bytes, bytes | None]:
    keys = [key async for key in client.scan_iter(match=f"cityops:{namespace}:*", count=1000)]
    return {key: await client.dump(key) for key in sorted(keys)}


async def _truncate(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics(topics)
        partitions = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
        ends = await consumer.end_offsets(partitions)
        await admin.delete_records({tp: RecordsToDelete(ends[tp]) for tp in partitions})
        firsts = await consumer.beginning_offsets(partitions)
        assert all(firsts[tp] == ends[tp] for tp in partitions)  # nothing of the window is left in Kafka
    finally:
        await consumer.stop()
        await admin.close()


def _events(outcome: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {(a["alert_id"], a["status"], a["event_time_ms"]) for a in outcome["alerts"]}


async def _replay_namespaces(client: aioredis.Redis) -> set[str]:
    return {key.decode().split(":")[1] async for key in client.scan_iter(match="cityops:replay-*", count=1000)}


async def _interrupt_replay(env: dict[str, str], client: aioredis.Redis, window: list[str], how: signal.Signals,
                            code: int) -> None:
    """Stopped in the middle of a replay at real-time speed, the replay deletes its namespace."""
    before = await _replay_namespaces(client)
    proc = await asyncio.create_subprocess_exec(CITYOPS, "replay", *window, "--warmup", "0", "--speed", "1",
                                                env=env, cwd=str(REPO), stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 90
        while not (await _replay_namespaces(client)) - before:
            assert proc.returncode is None, "the replay ended before it wrote its first alarm"
            assert time.monotonic() < end, "the replay wrote no key within 90 s"
            await asyncio.sleep(0.1)
        proc.send_signal(how)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == code and b"Traceback" not in err, err.decode()[-2000:]
    assert await _replay_namespaces(client) == before


def _told(outcome: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {(n["receiver"], n["alert_id"], n["at_ms"]) for n in outcome["notifications"]}


def _lowered_topology(path: Path, tmp_path: Path) -> Path:
    data = yaml.safe_load(path.read_text())
    route = next(r for r in data["routes"] if r["rule"] == GAS_RULE)
    assert route["levels"][0]["at"] > LOWERED_AT
    route["levels"][0]["at"] = LOWERED_AT
    lowered = tmp_path / "lowered.yaml"
    lowered.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return lowered


def _first_above(rows: list[tuple[str, int, float]], sensor: str, at: float, until_ms: int) -> int:
    """Event time of the first reading above ``at`` in the unbroken run that reaches until_ms."""
    run_start = None
    for sensor_id, ts, value in rows:
        if sensor_id != sensor or ts > until_ms:
            continue
        run_start = (run_start or ts) if value > at else None
    assert run_start is not None, f"{sensor}: no reading above {at} up to {until_ms}"
    return run_start


async def test_replay_reproduces_the_live_run_and_shows_what_a_lower_set_point_would_have_done(
        worker: WorkerProcess, stack_cfg: StackConfig, tmp_path: Path) -> None:
    path = worker.topology.path
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    data["readings_archive"] = {"flush_s": 0.5}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    topology_topics = [k["topic"] for k in data["kinds"].values()]
    alerts_topic = data["topics"]["alerts"]
    root = Path(worker.env["CITYOPS_DATA_DIR"]) / "readings-archive"
    receiver = NotificationReceiver()
    await receiver.up()
    worker.env.update({"CITYOPS_WEBHOOK_URL": receiver.hook_url, "CITYOPS_CAP_URL": receiver.cap_url,
                       "CITYOPS_TOPOLOGY": str(path)})
    env = dict(worker.env)
    worker.start()
    archiver = ArchiverProcess(worker, tmp_path / "archive.log")
    archiver.start()
    client = aioredis.Redis.from_url(stack_cfg.redis_url)
    try:
        # -- the live run -----------------------------------------------------------------
        from_ms = int(time.time() * 1000) - 1000
        sim = await asyncio.create_subprocess_exec(
            CITYOPS, "simulate", "--rate", "300", "--duration", "25", "--topology", str(path), env=env,
            cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, sim_err = await asyncio.wait_for(sim.communicate(), 120)
        assert sim.returncode == 0, sim_err.decode()[-2000:]
        readings: list[float] = []

        def settled() -> bool:  # the worker has processed it all and the archive holds it all
            worker.assert_alive()
            readings.append(_metric(worker, "cityops_readings_total"))
            done = len(readings) > 20 and readings[-1] == readings[-20] > 0
            return done and _count(root, "SELECT count(*) FROM readings") == readings[-1]

        await asyncio.to_thread(wait_for, settled, 120, "the worker and the archive to hold every reading")
        counts: list[int] = []

        def delivered() -> bool:  # the outboxes are drained: nothing new for 3 s
            counts.append(len(receiver.received))
            return len(counts) > 30 and counts[-1] == counts[-31] > 0

        await receiver.until(delivered, 60, "the live notifications")
        to_ms = int(time.time() * 1000)
        live = [a for a in await _alerts(stack_cfg.bootstrap, alerts_topic) if from_ms <= a.event_time_ms < to_ms]
        gas_live = {a.sensor_id for a in live if a.rule == GAS_RULE}
        assert gas_live, "the scripted gas leak raised no live alarm"
        # the duty officer acknowledges the first gas alarm on the live system
        first_gas = min((a for a in live if a.rule == GAS_RULE and a.status == "firing"), key=lambda a: a.event_time_ms)
        acked_at = first_gas.event_time_ms + 45_000
        await AlarmStore(client, worker.env["CITYOPS_NAMESPACE"]).acknowledge(first_gas.alarm_key, "duty-li", acked_at)
        received_before = len(receiver.received)
        namespaces_before = await _replay_namespaces(client)
        live_keys = await _snapshot(client, worker.env["CITYOPS_NAMESPACE"])
        window = ["--from", str(_iso(from_ms)), "--to", str(_iso(to_ms))]

        # -- 1. from Kafka, at max speed: the live alarms and notifications, exactly ---------
        kafka = await _replay(env, *window, "--report", str(tmp_path / "report"))
        assert {w["source"] for w in kafka["windows"]} == {"kafka"}
        assert _events(kafka) == {(a.alert_id, a.status, a.event_time_ms) for a in live}
        assert kafka["diff"]["identical"] and kafka["diff"]["live_events"] == len({a.alert_id for a in live})
        webhook = {a["annotations"]["alert_id"] for a in receiver.webhook_alerts()}
        assert {n["alert_id"] for n in kafka["notifications"] if n["receiver"] == "duty_webhook"} == webhook
        assert sum(n["receiver"] == "emergency_cap" for n in kafka["notifications"]) == len(receiver.caps())

        _check_report(tmp_path / "report", kafka, first_gas, acked_at, root)

        # -- Ctrl-C in the middle of a replay at real-time speed leaves no replay key ---------
        await _interrupt_replay(env, client, window, signal.SIGINT, 130)  # Ctrl-C
        await _interrupt_replay(env, client, window, signal.SIGTERM, 143)  # kill, systemd, a CI timeout

        # -- 2. from the archive, after Kafka lost the window -------------------------------
        await _truncate(stack_cfg.bootstrap, topology_topics)
        archived = await _replay(env, *window, "--batch-size", "37")
        assert {w["source"] for w in archived["windows"]} == {"archive"}
        assert _events(archived) == _events(kafka) and archived["diff"]["identical"]
        assert archived["readings"] == kafka["readings"] > 0
        # who would have been told what, and when, does not depend on the batches either
        assert _told(archived) == _told(kafka)

        # -- 3. a lowered set point: the extra alarms the readings call for ---------------
        lowered = await _replay(env, *window, "--topology", str(_lowered_topology(path, tmp_path)))
        diff = lowered["diff"]
        assert not diff["identical"]
        _, rows = run_query(root, "SELECT sensor_id, epoch_ms(event_time), gas_lel FROM readings "
                                  "WHERE gas_lel IS NOT NULL ORDER BY event_time")
        peak: dict[str, float] = {}
        for sensor, _, value in rows:
            peak[sensor] = max(peak.get(sensor, 0.0), value)
        expected_gained = {s for s, p in peak.items() if p > LOWERED_AT + 0.5 and s not in gas_live}
        gained = {g["sensor_id"] for g in diff["gained"] if g["rule"] == GAS_RULE}
        assert expected_gained <= gained and all(peak[s] > LOWERED_AT for s in gained)
        assert not diff["lost"]
        assert {g["rule"] for g in diff["gained"]} <= {GAS_RULE}
        first_live = {}
        for a in sorted(live, key=lambda a: a.event_time_ms):
            if a.rule == GAS_RULE and a.status == "firing":
                first_live.setdefault(a.sensor_id, a.event_time_ms)
        shifted = {s["alarm_key"].split(":")[0]: s for s in diff["shifted"]}
        for sensor, live_start in first_live.items():
            earlier = _first_above(rows, sensor, LOWERED_AT, live_start)
            if earlier < live_start:
                assert shifted[sensor]["replay_start_ms"] == earlier
                assert shifted[sensor]["lead_ms"] == live_start - earlier > 0
        assert shifted, "the leak's ramp crossed 15 %LEL before 25 %LEL: some lead time must be won"

        # -- nobody was told, nothing live was touched, nothing was left behind ----------------
        assert len(receiver.received) == received_before
        assert await _snapshot(client, worker.env["CITYOPS_NAMESPACE"]) == live_keys
        assert await _replay_namespaces(client) == namespaces_before

        # -- 4. a year-old recording with the default topology --------------------------------
        now_ms = int(time.time() * 1000)
        old_start = now_ms - YEAR_MS
        sensor = "DG-AQ-0001"
        values = [30.0] * 10 + [260.0] * 10 + [30.0] * 10  # PM2.5 260 ug/m3: AQI over 200 ("minor" and up)
        recording = [(sensor.encode(), json.dumps({"sensor_id": sensor, "ts": old_start + i * 60_000,
                                                   "values": {"pm25": v}}).encode()) for i, v in enumerate(values)]
        await produce(stack_cfg.bootstrap, data["kinds"]["air"]["topic"], recording)
        wait_for(lambda: "dead-lettered as ts_past" in worker.log_path.read_text(), 60, "the live worker's ts_past warning")
        wait_for(lambda: _count(root, f"SELECT count(*) FROM readings WHERE sensor_id = '{sensor}' "
                                      "AND event_time < now() - INTERVAL 300 DAY") == len(recording), 60,
                 "the recording in the archive")
        old = await _replay(env, "--from", _iso(old_start - 60_000), "--to", _iso(old_start + 40 * 60_000),
                            "--kinds", "air")
        assert old["windows"][0]["clock"] == "event" and old["windows"][0]["messages"] == len(recording)
        assert not old["dead_letters"]
        aqi = [a for a in old["alerts"] if a["sensor_id"] == sensor and a["rule"] == "aqi_level"]
        assert [a["status"] for a in aqi][:1] == ["firing"]
        assert old_start + 10 * 60_000 <= aqi[0]["event_time_ms"] < old_start + 20 * 60_000
    finally:
        archiver.stop()
        await receiver.down()
        await client.aclose()


def _check_report(directory: Path, outcome: dict[str, Any], first_gas: Alert, acked_at: int, root: Path) -> None:
    """report.json has every incident with what the readings and the live store say;
    report.html is one page that needs nothing else (one inline plot per incident)."""
    report = json.loads((directory / "report.json").read_text())
    firing = [a for a in outcome["alerts"] if a["status"] == "firing"]
    assert sorted(i["alarm_key"] for i in report["incidents"]) == sorted(a["alarm_key"] for a in firing)
    gas = next(i for i in report["incidents"] if i["alarm_key"] == first_gas.alarm_key)
    assert gas["set_points"] == [["major", 25.0], ["critical", 50.0]]
    _, rows = run_query(root, f"SELECT sensor_id, epoch_ms(event_time), gas_lel FROM readings "
                              f"WHERE sensor_id = '{first_gas.sensor_id}' ORDER BY event_time")
    past = _first_above(rows, first_gas.sensor_id, 25.0, first_gas.event_time_ms)
    assert gas["first_past_set_point"] is not None and _ms(gas["first_past_set_point"]) == past
    onset = _ms(gas["first_abnormal_reading"])
    assert onset <= past and gas["abnormal_to_alarm_s"] == (first_gas.event_time_ms - onset) / 1000
    acked = [t for t in gas["timeline"] if t["status"] == "acknowledged (live)"]
    assert [(t["by"], _ms(t["event_time"])) for t in acked] == [("duty-li", acked_at)]
    assert gas["abnormal_to_ack_s"] == (acked_at - onset) / 1000
    assert {n["receiver"] for n in gas["notifications"]} == {"duty_webhook", "emergency_cap"}
    assert any(n["where"] == "same site" for n in gas["nearby"])
    page = (directory / "report.html").read_text()
    assert page.count("<svg") == len(report["incidents"])
    assert "<script" not in page and "<link" not in page and " src=" not in page


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _iso(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()
