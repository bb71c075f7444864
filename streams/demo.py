"""`cityops demo`: worker + simulated city against the running stack, alarms live.

The worker and the simulator run as child processes (as in production); this
process follows the alerts topic, draws each alarm as a coloured table row and,
at the end or on Ctrl-C, stops the children and prints a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sinks.base import Alert
from sinks.redis_board import delete_namespace
from streams.demo_receiver import DemoReceiver
from streams.errors import CityOpsError
from streams.kafka_clients import start_client
from streams.settings import Settings, env_port
from streams.stack.prometheus import PrometheusProcess
from streams.tail import _COLUMNS, render
from streams.topology import Topology


_RANK = {"warning": 1, "minor": 2, "major": 3, "critical": 4}


@dataclass
class DemoTally:
    worst: dict[str, tuple[str, str]] = field(default_factory=dict)  # alarm_key -> (kind, highest severity)
    fired: set[tuple[str, str]] = field(default_factory=set)  # (rule, sensor_id)
    events: int = 0

    def add(self, alert: Alert) -> None:
        self.events += 1
        if alert.status == "resolved":
            return
        self.fired.add((alert.rule, alert.sensor_id))
        kind, worst = self.worst.get(alert.alarm_key, (alert.kind, alert.severity))
        if _RANK[alert.severity] >= _RANK[worst]:
            worst = alert.severity
        self.worst[alert.alarm_key] = (kind, worst)

    def by_kind_severity(self) -> Counter[tuple[str, str]]:
        return Counter(self.worst.values())


DEMO_NAMESPACE = "demo"


async def _clear_namespace(redis_url: str, namespace: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await delete_namespace(client, namespace)
    finally:
        await client.aclose()


def _prometheus_port() -> int:
    """$CITYOPS_PROMETHEUS_PORT, else 9090, else any free port (9090 taken)."""
    wanted = env_port(os.environ, "CITYOPS_PROMETHEUS_PORT", 9090)
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


def _cityops() -> str:
    return str(Path(sys.executable).with_name("cityops"))


def _start(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    return subprocess.Popen([_cityops(), *args], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_healthy(port: int, worker: subprocess.Popen[bytes], log_path: Path, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if worker.poll() is not None:
            raise CityOpsError(f"the worker exited with {worker.returncode}; see {log_path}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.2)
    raise CityOpsError(f"the worker did not become healthy within {deadline_s:.0f} s; see {log_path}")


def readings_processed(port: int) -> int:
    """Sum of cityops_readings_total from the worker's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return -1
    return int(sum(float(m) for m in re.findall(r"^cityops_readings_total\{[^}]*\} (\S+)$", text, re.M)))


def _stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def _follow(consumer: AIOKafkaConsumer, console: Console, tally: DemoTally, stop: asyncio.Event) -> None:
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=250, max_records=200)
        for records in batch.values():
            for record in records:
                if record.value is None:
                    continue
                alert = Alert.from_json(record.value)
                tally.add(alert)
                console.print(render(alert), soft_wrap=True)


async def run_demo(topology: Topology, settings: Settings, duration_s: float, rate: float, workdir: Path) -> DemoTally:
    console = Console(highlight=False)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the receivers: the user's if set, else a local one that files what it gets
    receiver = DemoReceiver(workdir / "notifications")
    await receiver.start()
    env.setdefault("CITYOPS_CAP_URL", receiver.cap_url)
    env.setdefault("CITYOPS_WEBHOOK_URL", receiver.hook_url)
    env.setdefault("CITYOPS_OPERATOR_TOKENS", "demo:demo-token")
    # every demo is a fresh simulated city: its own Redis namespace, emptied first, so the
    # state of an earlier demo (sensors "silent" since then, meter registers) raises nothing
    env.setdefault("CITYOPS_NAMESPACE", DEMO_NAMESPACE)
    if env["CITYOPS_NAMESPACE"] == DEMO_NAMESPACE:
        cleared = await _clear_namespace(settings.redis_url, DEMO_NAMESPACE)
        console.print(f"[dim]Redis namespace {DEMO_NAMESPACE!r}: {cleared} keys of an earlier demo removed[/dim]")
    consumer = AIOKafkaConsumer(topology.spec.topics.alerts, bootstrap_servers=settings.bootstrap,
                                group_id=None, auto_offset_reset="latest", enable_auto_commit=False)
    await start_client(consumer, settings.bootstrap)
    await consumer.seek_to_end()
    worker = sim = archiver = None
    started_ms: int | None = None
    prometheus: PrometheusProcess | None = None
    tally, stop, completed = DemoTally(), asyncio.Event(), False
    follower = asyncio.create_task(_follow(consumer, console, tally, stop))
    try:
        worker = _start(["worker", "--topology", str(topology.path), "--loglevel", "warn"], workdir / "worker.log", env)
        console.print(f"[dim]worker started (pid {worker.pid}), log {workdir / 'worker.log'}; waiting for it...[/dim]")
        await asyncio.to_thread(_wait_healthy, settings.web_port, worker, workdir / "worker.log")
        archiver = _start(["archive", "run", "--topology", str(topology.path), "--loglevel", "warning"],
                          workdir / "archive.log", env)
        prometheus = PrometheusProcess(workdir / "prometheus", [f"127.0.0.1:{settings.web_port}"], _prometheus_port())
        await asyncio.to_thread(prometheus.wait_ready)
        console.print(f"[dim]Prometheus (real, scraping the worker every second, with the pipeline's alert rules): "
                      f"{prometheus.url}  ·  boards: cityops dashboards push --url <grafana> "
                      f"--prometheus-url {prometheus.url}[/dim]")
        sim_args = ["simulate", "--rate", str(rate), "--duration", str(duration_s if duration_s > 0 else 10**9),
                    "--truth", str(workdir / "truth.jsonl"), "--topology", str(topology.path)]
        started_ms = int(time.time() * 1000)
        sim = _start(sim_args, workdir / "simulate.log", env)
        console.print(f"[bold]Simulated Dongguan is live[/bold] ({rate:g} readings/s). Metrics: "
                      f"http://127.0.0.1:{settings.web_port}/metrics  ·  Ctrl-C stops everything.")
        console.print(f"[dim]Notifications (CAP, webhook) are filed under {receiver.directory}; try "
                      f"CITYOPS_OPERATOR_TOKEN=demo-token cityops alarms ls[/dim]\n")
        console.print(Text(_COLUMNS, style="bold underline"), soft_wrap=True)
        await asyncio.to_thread(sim.wait)
        await _drain(settings.web_port, stop_after_s=10.0)
        completed = sim.returncode == 0
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("\n[bold]stopping...[/bold]")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(follower, 5)
        _stop(sim)
        processed = readings_processed(settings.web_port)
        if prometheus is not None:
            prometheus.stop()
        _stop(worker)
        _stop(archiver)  # after the worker: its last dead letters are archived too
        await consumer.stop()
        await receiver.stop()
        _summary(console, tally, processed, _read_truth(workdir / "truth.jsonl"), completed)
        console.print(f"notifications received: {receiver.webhook_messages} webhook messages "
                      f"({receiver.webhook_alerts} alarm events), {receiver.cap_documents} CAP documents "
                      f"(in {receiver.directory})")
        console.print(f"every reading is archived in Parquet under {settings.data_dir}; ask it, e.g.: "
                      "cityops archive query \"SELECT kind, count(*), min(event_time), max(event_time) "
                      "FROM readings GROUP BY kind\"", soft_wrap=True)
        if started_ms is not None:
            console.print(replay_hint(env["CITYOPS_NAMESPACE"], started_ms - 1000, int(time.time() * 1000) + 1000,
                                      workdir / "report"), soft_wrap=True)
    return tally


def replay_hint(namespace: str, from_ms: int, to_ms: int, report: Path) -> str:
    """The command that replays the demo's window and writes its incident report."""
    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    return (f"replay what you just saw, compare it with the live alarms and write an incident report: "
            f"CITYOPS_NAMESPACE={namespace} cityops replay --from {iso(from_ms)} --to {iso(to_ms)} --warmup 0 "
            f"--report {report}  (then open {report / 'report.html'}; add --topology FILE to try a changed rule)")


def _read_truth(path: Path) -> list[dict[str, object]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    return list({str(r.get("id")): r for r in records}.values())  # the latest record per incident


async def _drain(port: int, stop_after_s: float) -> None:
    """Give the worker time to finish what the simulator sent: until the count of
    processed readings stops moving, or the deadline."""
    end, last = time.monotonic() + stop_after_s, -1
    while time.monotonic() < end:
        now = readings_processed(port)
        if now == last:
            return
        last = now
        await asyncio.sleep(1.0)


def _summary(console: Console, tally: DemoTally, processed: int, truth: list[dict[str, Any]], completed: bool) -> None:
    table = Table(title="alarms by domain and highest severity")
    severities = ("critical", "major", "minor", "warning")
    counts = tally.by_kind_severity()
    table.add_column("domain")
    for sev in severities:
        table.add_column(sev, justify="right")
    for kind in sorted({k for k, _ in counts} | {"air", "hazmat", "traffic", "energy"}):
        table.add_row(kind, *[str(counts[(kind, s)]) for s in severities])
    console.print()
    console.print(f"readings processed by the worker: {processed if processed >= 0 else 'unknown'}")
    console.print(f"alarm events on the alerts topic: {tally.events}; distinct alarms: {len(tally.worst)}")
    console.print(table)
    incidents = [t for t in truth if t.get("type") != "sensor_fault"]
    if incidents:
        console.print("scripted incidents (ground truth) and whether they alarmed:")
        for t in incidents:
            hit = any((t["rule"], s) in tally.fired for s in t["sensor_ids"])
            mark = "[green]alarmed[/green]" if hit else ("[red]MISSED[/red]" if completed else "[yellow]no alarm yet (stopped early)[/yellow]")
            console.print(f"  {t['type']:<18} {t['site_id']:<18} {t['district']:<11} rule {t['rule']:<18} {mark}", soft_wrap=True)
