"""End-to-end throughput and reading-to-alarm latency through the real local stack.

Kafka (127.0.0.1:9092) and Redis (6379) must be running (`cityops stack up`).
Everything is on loopback, on topics / consumer group / Redis namespace made
for this run (unique suffix), and removed at the end.

1. Throughput: pre-load ``--readings`` readings (mostly hazmat + air, realistic
   mix from loadtest/bench_pipeline.py) into fresh input topics, start a real
   ``cityops worker`` on a copy of topology.yaml pointing at them, and time how
   long until the worker's /metrics ``cityops_readings_total`` (summed over
   kinds) reaches the number pre-loaded. A reading is counted only after its
   batch's alerts are acknowledged by Kafka and written to Redis.
2. Latency: with the worker caught up, send one gas reading at a time that
   crosses 25 %LEL at a known wall time and time until its ``firing`` alert is
   read back from the alerts topic (then clear it with a low reading, so the
   next sample fires again).
3. With ``--receivers``: the worker's two receivers (CAP, webhook) point at a
   local HTTP receiver run by this script, so phase 1 includes the notifier and
   the outbox deliveries, and phase 2 also times reading -> the firing
   notification's arrival at the webhook and at the CAP endpoint.
4. With ``--archiver``: `cityops archive run` runs next to the worker (its CPU and output are printed).

    .venv/bin/python loadtest/bench_e2e.py [--readings 200000] [--latency-samples 60] [--receivers] [--archiver] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(REPO), str(REPO / "loadtest")) if p not in sys.path]

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from bench_pipeline import MessageFactory, MessageMix, environment, sensor_clock, sensor_models  # noqa: E402

from sinks.base import Alert  # noqa: E402
from streams import stack  # noqa: E402
from streams.topology import Topology, load_topology  # noqa: E402

DEFAULT_MIX = "hazmat=0.5,air=0.35,traffic=0.1,energy=0.05"
POLL_S = 0.5  # /metrics poll period while waiting for the backlog to drain

# ------------------------------------------------------------------ set-up


def isolated_topology(workdir: Path, suffix: str) -> Topology:
    """topology.yaml with this run's own topics (budgets and partitions unchanged)."""
    data = yaml.safe_load((REPO / "topology.yaml").read_text())
    data["catalog"] = str(REPO / "catalog" / "dongguan_sensors.csv")
    for kind in data["kinds"].values():
        kind["topic"] = f"{kind['topic']}.bench.{suffix}"
    data["topics"] = {**data["topics"], "alerts": f"city.alerts.bench.{suffix}", "deadletter": f"city.deadletter.bench.{suffix}"}
    path = workdir / "topology.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return load_topology(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> int:
    """A port p with p .. p + n - 1 free."""
    for _ in range(100):
        port = free_port()
        if all(_free(port + i) for i in range(1, n)):
            return port
    raise RuntimeError(f"no {n} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_processes(args: Sequence[str], kinds: Sequence[str]) -> int:
    """How many worker processes (web ports) `cityops worker ARGS` runs for a topology of
    ``kinds``: ``--processes`` for each group of streams/processes.py's ``kind_groups``."""
    from streams.processes import kind_groups
    from streams.settings import parse_kinds

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--isolate", default="")
    known, _ = p.parse_known_args(list(args))
    isolated = parse_kinds(known.isolate)
    if known.processes == 1 and not isolated:
        return 1
    return known.processes * len(kind_groups(kinds, isolated))


@dataclass
class Worker:
    """A real `cityops worker` child process in its own session."""

    topology: Topology
    env: dict[str, str]
    log_path: Path
    web_port: int
    profile_out: Path | None = None  # run the worker under cProfile, stats written here on exit
    proc: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()  # more `cityops worker` options, e.g. ("--isolate", "hazmat")
    ports: int = 1  # worker processes serving web_port, web_port + 1, ... (their /metrics are summed)

    def start(self) -> None:
        cityops = str(Path(sys.executable).with_name("cityops"))
        prefix = [sys.executable, "-m", "cProfile", "-o", str(self.profile_out)] if self.profile_out else []
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*prefix, cityops, "worker", "--topology", str(self.topology.path), "--loglevel", "warning", *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO, start_new_session=True,
            )

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            raise RuntimeError(f"worker exited ({None if self.proc is None else self.proc.returncode}):\n{tail}")
        return True

    def get(self, path: str, port: int | None = None) -> str | None:
        """``path`` from the first worker process (or ``port``); None unless 200. With several
        processes, /healthz answers only once every one of them does."""
        if port is None and self.ports > 1 and path == "/healthz":
            pages = [self.get(path, self.web_port + i) for i in range(self.ports)]
            return None if None in pages else "\n".join(p for p in pages if p)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port or self.web_port}{path}", timeout=2) as resp:
                return str(resp.read().decode()) if resp.status == 200 else None
        except OSError:
            return None

    def metrics(self) -> dict[tuple[str, str], float]:
        """/metrics as {(sample name, label text): value}, summed over the worker processes."""
        out: dict[tuple[str, str], float] = {}
        for i in range(self.ports):
            for line in (self.get("/metrics", self.web_port + i) or "").splitlines():
                if line and not line.startswith("#"):
                    name_labels, value = line.rsplit(" ", 1)
                    name, _, labels = name_labels.partition("{")
                    key = (name, labels.rstrip("}"))
                    out[key] = out.get(key, 0.0) + float(value)
        return out

    def pids(self) -> list[int]:
        """The worker and its children (`--processes`/`--isolate` make it a parent)."""
        if self.proc is None:
            return []
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        return [pid, *(int(c) for c in children)]

    def readings_total(self) -> float:
        return sum(v for (name, _), v in self.metrics().items() if name == "cityops_readings_total")

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.pids())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def process_cpu_seconds(pid: int | None) -> float:
    """user + system CPU seconds of a process (Linux /proc), 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(condition: Callable[[], bool], deadline_s: float, what: str, poll_s: float) -> float:
    """Poll ``condition`` until true; returns the monotonic time it became true."""
    end = time.monotonic() + deadline_s
    while True:
        if condition():
            return time.monotonic()
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


class NotificationRecorder:
    """A local HTTP receiver in its own thread and event loop: the wall time each
    alert_id first arrived at ``/hook`` (webhook JSON) and ``/cap`` (CAP XML)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: dict[tuple[str, str], float] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver", daemon=True)

    def _run(self) -> None:
        from aiohttp import web

        async def hook(request: web.Request) -> web.Response:
            now, body = time.time(), await request.read()
            for alert in json.loads(body)["alerts"]:
                self.arrivals.setdefault(("hook", alert["annotations"]["alert_id"]), now)
            return web.Response(status=200)

        async def cap(request: web.Request) -> web.Response:
            now, body = time.time(), await request.read()
            ident = ET.fromstring(body).findtext("{urn:oasis:names:tc:emergency:cap:1.2}identifier") or ""
            self.arrivals.setdefault(("cap", ident.rsplit("_", 1)[-1]), now)
            return web.Response(status=200)

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/hook", hook)
            app.router.add_post("/cap", cap)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the notification recorder did not start")

    def env(self) -> dict[str, str]:
        return {"CITYOPS_WEBHOOK_URL": f"http://127.0.0.1:{self.port}/hook",
                "CITYOPS_CAP_URL": f"http://127.0.0.1:{self.port}/cap"}

    async def arrival(self, path: str, alert_id: str, deadline_s: float) -> float:
        end = time.monotonic() + deadline_s
        while (path, alert_id) not in self.arrivals:
            if time.monotonic() > end:
                raise TimeoutError(f"no {path} notification for alert {alert_id} within {deadline_s:.0f} s")
            await asyncio.sleep(0.002)
        return self.arrivals[(path, alert_id)]


# ------------------------------------------------------------------ load


@dataclass
class Load:
    records: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)  # topic -> (key, value)
    readings: dict[str, int] = field(default_factory=dict)  # kind -> readings

    @property
    def n_records(self) -> int:
        return sum(map(len, self.records.values()))


def build_load(topology: Topology, total: int, mix: dict[str, float], gas_ids: Sequence[str], seed: int) -> Load:
    """``total`` readings split by ``mix``, each sensor's readings one period apart and
    ending before now. The hazmat backlog ends with one low gas reading (ts = now) per
    latency sensor, so every one of them is clear once the worker has caught up."""
    rng = np.random.default_rng(seed)
    now_ms = time.time_ns() // 1_000_000
    load = Load()
    for kind, share in mix.items():
        sensors = sensor_models(topology, kind, rng)
        target = round(total * share)
        start_ms, step_ms = sensor_clock(now_ms - 60_000, sensors[0].period_s, target / len(sensors),
                                         topology.spec.input.max_age_s)
        factory = MessageFactory(sensors, rng, start_ms, step_ms, MessageMix())
        records: list[tuple[bytes, bytes]] = []
        n = 0
        while n < target:  # about one message per sensor per round
            msgs, k, _ = factory.batch(len(sensors))
            records += [(m.key or b"", m.value) for m in msgs]
            n += k
        if factory.last_ms > now_ms:
            raise RuntimeError(f"{kind}: generated event times ran past now")
        load.records[topology.kind(kind).topic], load.readings[kind] = records, n
    hz = topology.kind("hazmat").topic
    load.records[hz] += [(sid.encode(), _gas(sid, 1.0, now_ms)) for sid in gas_ids]
    load.readings["hazmat"] += len(gas_ids)
    return load


def _gas(sensor_id: str, lel: float, ts_ms: int) -> bytes:
    return json.dumps({"sensor_id": sensor_id, "ts": ts_ms, "values": {"gas_lel": lel}, "flag": "N"}).encode()


async def produce_all(bootstrap: str, load: Load) -> float:
    """Send every record (acks=all) and wait for delivery; returns seconds taken."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    t0 = time.monotonic()
    try:
        for topic, records in load.records.items():
            pending = [await producer.send(topic, value=v, key=k) for k, v in records]
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - t0


# ------------------------------------------------------------------ phases


def throughput(worker: Worker, expected: int, deadline_s: float) -> dict[str, Any]:
    """Start the worker on the backlog; time until every reading is counted."""
    t_spawn = time.monotonic()
    worker.start()
    t_healthy = wait_until(lambda: worker.alive() and worker.get("/healthz") is not None, 120, "worker /healthz", 0.05)
    t_first = wait_until(lambda: worker.alive() and worker.readings_total() > 0, deadline_s, "the first counted reading", 0.05)
    cpu0, first_count = worker.cpu_seconds(), worker.readings_total()
    # a scrape costs the worker a few ms of CPU: poll every POLL_S, not faster (resolution +-POLL_S)
    t_done = wait_until(lambda: worker.alive() and worker.readings_total() >= expected, deadline_s,
                        f"cityops_readings_total >= {expected}", POLL_S)
    cpu = worker.cpu_seconds() - cpu0
    final = worker.metrics()
    counted = sum(v for (name, _), v in final.items() if name == "cityops_readings_total")
    sustained_s = t_done - t_first
    return {"poll_s": POLL_S, **stage_breakdown(final),
        "expected_readings": expected, "counted_readings": counted,
        "startup_to_healthy_s": t_healthy - t_spawn, "healthy_to_first_count_s": t_first - t_healthy,
        "first_to_all_s": sustained_s, "healthy_to_all_s": t_done - t_healthy,
        "readings_per_s_sustained": (counted - first_count) / sustained_s if sustained_s > 0 else float("nan"),
        "readings_per_s_from_healthy": counted / (t_done - t_healthy),
        "worker_cpu_s": cpu, "worker_cpu_us_per_reading": cpu / max(counted - first_count, 1) * 1e6,
    }


def stage_breakdown(m: dict[tuple[str, str], float]) -> dict[str, Any]:
    """Batches, mean batch size and summed stage seconds per kind, from the worker's own metrics."""
    per_kind: dict[str, dict[str, float]] = {}
    for (name, labels), v in m.items():
        lab = dict(part.split("=", 1) for part in labels.split(",") if "=" in part)
        kind = lab.get("kind", "").strip('"')
        if name == "cityops_batch_messages_count":
            per_kind.setdefault(kind, {})["batches"] = v
        elif name == "cityops_batch_messages_sum":
            per_kind.setdefault(kind, {})["messages"] = v
        elif name == "cityops_stage_seconds_sum":
            per_kind.setdefault(kind, {})[f"{lab['stage'].strip(chr(34))}_s"] = v
        elif name in ("cityops_readings_total", "cityops_alerts_total", "cityops_budget_overruns_total"):
            key = name.removeprefix("cityops_").removesuffix("_total")
            per_kind.setdefault(kind, {})[key] = per_kind.get(kind, {}).get(key, 0.0) + v
    for d in per_kind.values():
        d["mean_batch_messages"] = d.get("messages", 0.0) / d["batches"] if d.get("batches") else 0.0
    return {"per_kind": per_kind}


@dataclass
class AlertWaiter:
    consumer: AIOKafkaConsumer
    seen: dict[tuple[str, int, str], tuple[float, Alert]] = field(default_factory=dict)

    async def wait(self, alarm_key: str, event_ms: int, status: str, deadline_s: float) -> tuple[float, Alert]:
        end = time.monotonic() + deadline_s
        key = (alarm_key, event_ms, status)
        while key not in self.seen:
            if time.monotonic() > end:
                raise TimeoutError(f"no {status} alert for {alarm_key} at {event_ms} within {deadline_s:.0f} s")
            batch = await self.consumer.getmany(timeout_ms=100)
            now = time.time()
            for recs in batch.values():
                for r in recs:
                    a = Alert.from_json(r.value)
                    self.seen[(a.alarm_key, a.event_time_ms, a.status)] = (now, a)
        return self.seen.pop(key)


async def latency(
    topology: Topology, bootstrap: str, gas_ids: Sequence[str], n: int, worker: Worker, jitter_s: float, seed: int,
    recorder: NotificationRecorder | None = None,
) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=50)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await asyncio.gather(consumer.start(), producer.start())
    try:
        alerts_topic = topology.spec.topics.alerts
        parts = [TopicPartition(alerts_topic, p) for p in range(topology.spec.topics.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:
            await consumer.position(tp)  # resolve now, before anything is sent
        waiter, topic = AlertWaiter(consumer), topology.kind("hazmat").topic
        rng = np.random.default_rng(seed)
        return {
            "back_to_back": await _samples(topic, gas_ids, n, producer, waiter, worker, lambda: 0.0, recorder),
            "random_arrival": await _samples(topic, gas_ids, n, producer, waiter, worker,
                                             lambda: float(rng.uniform(0, jitter_s)), recorder),
            "jitter_s": jitter_s,
        }
    finally:
        await asyncio.gather(consumer.stop(), producer.stop(), return_exceptions=True)


async def _samples(topic: str, gas_ids: Sequence[str], n: int, producer: AIOKafkaProducer,
                   waiter: AlertWaiter, worker: Worker, pause_s: Callable[[], float],
                   recorder: NotificationRecorder | None) -> dict[str, Any]:
    """``n`` alarms, one reading in flight at a time; ``pause_s()`` before each send
    (0: the next reading follows the previous alert at once). With a recorder, each
    alarm also waits for its firing webhook and CAP notifications."""
    to_hook: list[float] = []
    to_cap: list[float] = []
    fire: list[float] = []
    clear: list[float] = []
    to_detect: list[float] = []
    detect_to_read: list[float] = []
    for i in range(n):
        sid = gas_ids[i % len(gas_ids)]
        worker.alive()
        for lel, status, out in ((30.0, "firing", fire), (1.0, "resolved", clear)):
            await asyncio.sleep(pause_s())
            ts_ms = time.time_ns() // 1_000_000
            t_send = time.time()
            await producer.send_and_wait(topic, _gas(sid, lel, ts_ms), key=sid.encode())
            t_read, alert = await waiter.wait(f"{sid}:gas_lel_alarm", ts_ms, status, 30)
            out.append(t_read - t_send)
            if status == "firing":
                t_detect = datetime.fromisoformat(alert.detected_at).timestamp()
                to_detect.append(t_detect - t_send)
                detect_to_read.append(t_read - t_detect)
                if recorder is not None:
                    to_hook.append(await recorder.arrival("hook", alert.alert_id, 30) - t_send)
                    to_cap.append(await recorder.arrival("cap", alert.alert_id, 30) - t_send)
    out = {"samples": n, "firing_s": _pct(fire), "resolved_s": _pct(clear),
           "send_to_detected_at_s": _pct(to_detect), "detected_at_to_read_s": _pct(detect_to_read),
           "raw_firing_s": fire}
    if recorder is not None:
        out |= {"send_to_webhook_s": _pct(to_hook), "send_to_cap_s": _pct(to_cap)}
    return out


def _pct(xs: Sequence[float]) -> dict[str, float]:
    a = np.asarray(xs, np.float64)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "min": float(a.min()), "max": float(a.max()), "mean": float(a.mean())}


# ------------------------------------------------------------------ clean-up


async def delete_topics(bootstrap: str, suffix: str) -> list[str]:
    """Delete every topic whose name contains this run's unique suffix."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if suffix in t]
        if ours:
            await admin.delete_topics(ours)
        return ours
    finally:
        await admin.close()


def delete_redis_namespace(redis_url: str, namespace: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"cityops:{namespace}:*"))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


# ------------------------------------------------------------------ main


def parse_mix(text: str) -> dict[str, float]:
    mix = {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(",") if part.strip())}
    total = sum(mix.values())
    return {k: v / total for k, v in mix.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readings", type=int, default=200_000, help="readings to pre-load (default 200000)")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"share of readings per kind (default {DEFAULT_MIX})")
    p.add_argument("--latency-samples", type=int, default=60, help="gas alarms to time (default 60, >= 50 for a p95)")
    p.add_argument("--jitter-s", type=float, default=0.25,
                   help="random pause 0..J s before each latency sample of the random-arrival series (default 0.25)")
    p.add_argument("--profile-worker", type=Path, default=None, metavar="OUT.prof",
                   help="run the worker under cProfile (slower!) and print its top functions")
    p.add_argument("--deadline-s", type=float, default=900.0, help="give up on the throughput phase after this")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the topics, Redis keys and worker log")
    p.add_argument("--receivers", action="store_true",
                   help="point the worker's CAP and webhook receivers at a local recorder and time notifications")
    p.add_argument("--archiver", action="store_true",
                   help="run `cityops archive run` next to the worker (the readings archive's cost on the hot path)")
    p.add_argument("--delivery", choices=("worker", "separate"), default="worker",
                   help="with --receivers: who POSTs the outboxes, the worker or a `cityops deliver` process")
    a = p.parse_args(argv)
    cfg = stack.StackConfig.from_env(root=REPO / ".stack")
    status = stack.status(cfg)
    if not status.all_running:
        print(f"the local stack is not running:\n{status}\nstart it with `.venv/bin/cityops stack up`", file=sys.stderr)
        return 2
    suffix = uuid.uuid4().hex[:10]
    workdir = Path(tempfile.mkdtemp(prefix=f"cityops-bench-{suffix}-"))
    topo = isolated_topology(workdir, suffix)
    namespace = f"bench-{suffix}"
    env = {**os.environ, "CITYOPS_BOOTSTRAP": cfg.bootstrap, "CITYOPS_REDIS_URL": cfg.redis_url,
           "CITYOPS_APP_ID": f"cityops-bench-{suffix}", "CITYOPS_NAMESPACE": namespace,
           "CITYOPS_WEB_PORT": str(free_port()), "CITYOPS_DATA_DIR": str(workdir / "worker-data")}
    for name in ("CITYOPS_WEBHOOK_URL", "CITYOPS_CAP_URL"):
        env.pop(name, None)  # receivers only with --receivers
    recorder = None
    deliverer: subprocess.Popen[bytes] | None = None
    if a.receivers:
        recorder = NotificationRecorder()
        recorder.start()
        env |= recorder.env() | {"CITYOPS_DELIVERY": a.delivery}
        if a.delivery == "separate":
            with (workdir / "deliver.log").open("ab") as log:
                deliverer = subprocess.Popen(
                    [str(Path(sys.executable).with_name("cityops")), "deliver", "--topology", str(topo.path),
                     "--loglevel", "warning"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                    start_new_session=True)
    archiver: subprocess.Popen[bytes] | None = None
    if a.archiver:
        with (workdir / "archive.log").open("ab") as log:
            archiver = subprocess.Popen(
                [str(Path(sys.executable).with_name("cityops")), "archive", "run", "--topology", str(topo.path),
                 "--loglevel", "info"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                start_new_session=True)
    worker = Worker(topo, env, workdir / "worker.log", int(env["CITYOPS_WEB_PORT"]), a.profile_worker)
    result: dict[str, Any] = {"archiver": a.archiver, "environment": {**environment("not pinned (worker, Kafka and Redis share all cores)"),
                                              "kafka": cfg.kafka_version, "loadavg_before": os.getloadavg()}}
    try:
        result |= run(a, cfg, topo, worker, recorder)
    finally:
        worker.stop()
        if archiver is not None:
            result["archiver_cpu_s"] = process_cpu_seconds(archiver.pid)
            os.killpg(archiver.pid, signal.SIGTERM)
            archiver.wait(60)
            archived = sum(p.stat().st_size for p in (workdir / "worker-data").glob("**/*.parquet"))
            print(f"# archiver: {result['archiver_cpu_s']:.1f} s CPU, {archived / 1e6:.1f} MB of Parquet")
        if deliverer is not None:
            result["deliver_cpu_s"] = process_cpu_seconds(deliverer.pid)
            os.killpg(deliverer.pid, signal.SIGTERM)
            deliverer.wait(30)
        if a.profile_worker and a.profile_worker.exists():
            import pstats

            pstats.Stats(str(a.profile_worker)).strip_dirs().sort_stats("tottime").print_stats(30)
            pstats.Stats(str(a.profile_worker)).strip_dirs().sort_stats("cumulative").print_stats(40)
        if not a.keep:
            deleted = asyncio.run(delete_topics(cfg.bootstrap, suffix))
            keys = delete_redis_namespace(cfg.redis_url, namespace)
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"# cleaned up: worker stopped, {len(deleted)} topics and {keys} Redis keys deleted, {workdir} removed")
        else:
            print(f"# kept topics *{suffix}*, Redis namespace {namespace}, worker log {worker.log_path}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1))
        print(f"# wrote {a.json}")
    return 0


def run(a: argparse.Namespace, cfg: stack.StackConfig, topo: Topology, worker: Worker,
        recorder: NotificationRecorder | None = None) -> dict[str, Any]:
    stack.ensure_topics(cfg.bootstrap, topo.all_topics())
    gas_ids = [s.sensor_id for s in topo.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS")]
    t0 = time.monotonic()
    load = build_load(topo, a.readings, parse_mix(a.mix), gas_ids, a.seed)
    expected = sum(load.readings.values())
    print(f"# built {expected} readings in {load.n_records} Kafka records ({load.readings}) in {time.monotonic() - t0:.1f} s")
    produce_s = asyncio.run(produce_all(cfg.bootstrap, load))
    print(f"# pre-loaded into {len(load.records)} topics in {produce_s:.1f} s (acks=all)")
    tp = throughput(worker, expected, a.deadline_s)
    print(f"throughput: {tp['counted_readings']:.0f} readings; worker healthy after {tp['startup_to_healthy_s']:.1f} s; "
          f"first count +{tp['healthy_to_first_count_s']:.1f} s; all counted {tp['first_to_all_s']:.1f} s later -> "
          f"{tp['readings_per_s_sustained']:,.0f} readings/s sustained "
          f"({tp['readings_per_s_from_healthy']:,.0f}/s from healthy); worker CPU {tp['worker_cpu_us_per_reading']:.0f} µs/reading")
    for kind, d in sorted(tp["per_kind"].items()):
        stages = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in sorted(d.items()) if k.endswith("_s"))
        print(f"  {kind:<8} {d.get('readings', 0):>8.0f} readings in {d.get('batches', 0):.0f} batches "
              f"(mean {d['mean_batch_messages']:.0f} messages), {d.get('alerts', 0):.0f} alerts, "
              f"{d.get('budget_overruns', 0):.0f} budget overruns; stage time {stages}")
    lat = asyncio.run(latency(topo, cfg.bootstrap, gas_ids, a.latency_samples, worker, a.jitter_s, a.seed, recorder))
    for mode in ("back_to_back", "random_arrival"):
        m = lat[mode]
        f, r, d, w = m["firing_s"], m["resolved_s"], m["send_to_detected_at_s"], m["detected_at_to_read_s"]
        print(f"latency {mode} (gas >= 25 %LEL sent -> firing alert read back, n={m['samples']}): "
              f"p50 {f['p50'] * 1e3:.0f} ms, p95 {f['p95'] * 1e3:.0f} ms [min {f['min'] * 1e3:.0f}, max {f['max'] * 1e3:.0f}]; "
              f"clear p50 {r['p50'] * 1e3:.0f} / p95 {r['p95'] * 1e3:.0f} ms; split p50: send->detected_at {d['p50'] * 1e3:.0f} ms, "
              f"detected_at->read {w['p50'] * 1e3:.0f} ms")
        if "send_to_webhook_s" in m:
            h, c = m["send_to_webhook_s"], m["send_to_cap_s"]
            print(f"  notifications {mode}: reading sent -> webhook p50 {h['p50'] * 1e3:.0f} / p95 {h['p95'] * 1e3:.0f} ms, "
                  f"-> CAP p50 {c['p50'] * 1e3:.0f} / p95 {c['p95'] * 1e3:.0f} ms")
    return {"readings": a.readings, "mix": parse_mix(a.mix), "records": load.n_records, "per_kind": load.readings,
            "produce_s": produce_s, "throughput": tp, "latency": lat, "loadavg_after": os.getloadavg()}


if __name__ == "__main__":
    raise SystemExit(main())
