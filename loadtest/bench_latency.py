"""Gas reading -> firing alert latency under open-loop offered load, full topology.yaml.

Kafka (127.0.0.1:9092) and Redis (6379) must be running (`cityops stack up`), and
confluent-kafka must be in the venv (`.venv/bin/pip install -e '.[bench]'`). Every topic,
consumer group, Redis namespace and file carries this run's suffix and is removed at the end
(``--keep`` keeps them).

1. Ladder. One real `cityops worker` on a copy of topology.yaml (all kinds, all detectors and
   routes, receivers off) is warmed up (one reading per catalog sensor), then offered each
   rate of ``--rates`` in turn for ``--step-s`` seconds. The load is single-reading messages
   of the catalog's sensors, split by ``--mix`` (bench_e2e's DEFAULT_MIX), values from
   bench_pipeline's sensor models (normal ranges, ~0.5 % set-point crossings, ~0.3 % non-N
   flags, RFC 3339 or epoch-ms times per sensor). A producer *process* (confluent-kafka)
   sends every message at its scheduled wall time, whatever the worker does (open loop):
   an asyncio producer in this process could not offer 40k messages/s next to a worker on
   two cores. Meanwhile ``--probe-sensors`` gas heads, kept out of the background load, cross
   30 %LEL at Poisson times (``--probes-per-s``) and clear with 1 %LEL 0.5-1.5 s later; each
   crossing is timed from its send to its ``firing`` alert read back from the alerts topic
   (a consumer positioned before the first send). A step whose worker lag (readings sent -
   readings counted on /metrics) grows without bound is *saturated* and ends the ladder.
2. ``--with-backlog``. A fresh worker on fresh topics: ``--backlog`` air + traffic readings
   (catalog sensors, event times in the past, one period apart) are pre-loaded before the
   worker starts; once it counts its first reading, the same open-loop load plus probes is
   offered at ``--backlog-rate`` (default: half the highest rate the ladder's worker achieved)
   while the backlog drains. Reported: the gas latency while it drains and after, and how long
   the drain took.

Per step: achieved rates (producer and worker), latency p50/p95/p99/max, the worker's CPU
and RSS, the broker's, Redis's and the producer's CPU, and the machine's CPU used by other
processes (the machine is shared: they are named in the JSON).

    .venv/bin/python loadtest/bench_latency.py [--rates 1000,2000,5000,10000,15000,20000,40000] [--step-s 30]
        [--with-backlog] [--backlog 300000] [--backlog-rate R] [--json OUT] [--png OUT] [--keep]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # the producer and this process must not fan out over the worker's cores

import argparse
import json
import math
import shutil
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(REPO), str(REPO / "loadtest")) if p not in sys.path]

from bench_e2e import (  # noqa: E402
    DEFAULT_MIX,
    Worker,
    delete_redis_namespace,
    delete_topics,
    free_ports,
    isolated_topology,
    parse_mix,
    wait_until,
    worker_processes,
)
from bench_pipeline import MessageFactory, MessageMix, SensorModel, cpu_ticks, environment, rfc3339, sensor_clock, sensor_models  # noqa: E402

from streams import stack  # noqa: E402
from streams.topology import Topology, load_topology  # noqa: E402

DEFAULT_RATES = "1000,2000,5000,10000,15000,20000,40000"
PROBE_LEL, CLEAR_LEL = 30.0, 1.0  # GB/T 50493 first level is 25 %LEL; the route's deadband is 2
GAS_RULE = "gas_lel_alarm"
POLL_S = 1.0  # /metrics period during a step: a scrape costs the worker a few ms
PROGRESS_S = 0.2  # the producer's progress line period
DEFAULT_JSON = REPO / ".stack" / "bench" / "latency.json"
DEFAULT_PNG = REPO / "docs" / "img" / "latency_vs_load.png"


class BenchError(Exception):
    """A failure to report in one line."""


# ================================================================== process accounting (Linux /proc)


def proc_cpu_s(pid: int | None) -> float:
    """user + system CPU seconds of a process, every thread, the exited ones included."""
    if pid is None:
        return float("nan")
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def proc_mem_mb(pid: int | None, field_name: str = "VmRSS") -> float:
    """VmRSS (now) or VmHWM (peak) of a process, MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def proc_table() -> dict[int, float]:
    """CPU seconds of every process on the machine (to name who else used the cores)."""
    hz = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                out[int(d.name)] = (int(f[11]) + int(f[12])) / hz
            except (OSError, IndexError, ValueError):
                continue
    return out


def cmdline(pid: int, width: int = 90) -> str:
    try:
        text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        text = "(exited)"
    return text[:width]


@dataclass(frozen=True)
class CpuMark:
    """The machine's and every process's CPU at one instant."""

    t: float
    procs: dict[int, float]
    busy_s: float  # the machine's busy CPU seconds (all cores)

    @classmethod
    def take(cls) -> CpuMark:
        return cls(time.monotonic(), proc_table(), cpu_ticks()[0])


def cpu_between(a: CpuMark, b: CpuMark, ours: dict[str, int | None]) -> dict[str, Any]:
    """Cores used between two marks: ours by name, the machine's, everyone else's (top 4 named)."""
    dt = max(b.t - a.t, 1e-9)
    used = {pid: (cpu - a.procs.get(pid, 0.0)) / dt for pid, cpu in b.procs.items()}
    named = {name: round(used.get(pid, float("nan")), 3) if pid else float("nan") for name, pid in ours.items()}
    mine = {pid for pid in ours.values() if pid}
    busy = (b.busy_s - a.busy_s) / dt
    others = sorted(((c, pid) for pid, c in used.items() if pid not in mine and c > 0.02), reverse=True)[:4]
    return {"cores": named, "machine_busy_cores": round(busy, 3),
            "others_cores": round(busy - sum(v for v in named.values() if not math.isnan(v)), 3),
            "top_others": [{"pid": pid, "cores": round(c, 3), "cmd": cmdline(pid)} for c, pid in others]}


def machine_snapshot() -> list[dict[str, Any]]:
    """Who is using the machine over the next second (the run's header)."""
    a = CpuMark.take()
    time.sleep(1.0)
    top: list[dict[str, Any]] = cpu_between(a, CpuMark.take(), {})["top_others"]
    return top


# ================================================================== the open-loop producer (a child process)


class ProducerSpec(msgspec.Struct):
    """What the producer child offers; written as JSON for it."""

    bootstrap: str
    topology: str
    topics: dict[str, str]  # kind -> topic
    rate: float  # background readings/s, all kinds
    mix: dict[str, float]  # kind -> share
    duration_s: float  # it stops then, or on SIGTERM
    probe_sensors: list[str]
    probes_per_s: float
    probe_after_s: float  # no probe crossing before this (the step's warm-up)
    seed: int
    crossing_p: float
    flag_p: float


@dataclass
class SensorTemplate:
    """One sensor's message pieces: a message is head + ts + one of the tails."""

    key: bytes
    head: bytes
    epoch_ts: bool
    normal: list[bytes]
    crossing: list[bytes]
    flagged: list[bytes]


TEMPLATE_POOL = 64  # distinct normal value sets per sensor: no 10-in-a-row repeat for the `stuck` detectors


def sensor_template(m: SensorModel, rng: np.random.Generator) -> SensorTemplate:
    """Values drawn from bench_pipeline's models once; sent in rotation (a per-message
    rng draw per quantity would cost more CPU than the Kafka client)."""
    def tail(ranges: dict[str, tuple[float, float]], flag: str) -> bytes:
        values = {q: round(float(rng.uniform(lo, hi)), 2) for q, (lo, hi) in ranges.items()}
        return b',"values":' + msgspec.json.encode(values) + b',"flag":"' + flag.encode() + b'"}'

    crossing = [tail({**m.normal, **m.crossing}, "N") for _ in range(8)]
    flagged = [tail(m.normal, str(rng.choice(list("FMDCB")))) for _ in range(8)]
    return SensorTemplate(m.sensor_id.encode(), b'{"sensor_id":' + msgspec.json.encode(m.sensor_id) + b',"ts":',
                          m.epoch_ts, [tail(m.normal, "N") for _ in range(TEMPLATE_POOL)], crossing, flagged)


@dataclass
class KindStream:
    """One kind's share of the offered load: message m is due at m / rate seconds after the
    start and comes from sensor order[m % n], so each sensor reports at a fixed period
    (n / rate) with its event time = its scheduled send time."""

    topic: str
    rate: float
    sensors: list[SensorTemplate]
    order: list[int]
    last_ms: list[int]
    crossing_p: float
    flag_p: float
    sent: int = 0

    def emit(self, t0: float, elapsed: float, send: Callable[[str, bytes, bytes], None], rng: np.random.Generator) -> float:
        """Send every message due by ``elapsed``; returns how late the oldest of them was (s)."""
        due = int(self.rate * elapsed)  # message m is due at (m + 1) / rate
        if due <= self.sent:
            return 0.0
        late = elapsed - (self.sent + 1) / self.rate
        u = rng.random(due - self.sent).tolist()
        n = len(self.order)
        for j, m in enumerate(range(self.sent, due)):
            s = self.order[m % n]
            tpl = self.sensors[s]
            ts = max(int((t0 + (m + 1) / self.rate) * 1000), self.last_ms[s] + 1)  # strictly newer: never a late reading
            self.last_ms[s] = ts
            if u[j] < self.crossing_p:
                tail = tpl.crossing[m % len(tpl.crossing)]
            elif u[j] < self.crossing_p + self.flag_p:
                tail = tpl.flagged[m % len(tpl.flagged)]
            else:
                tail = tpl.normal[(m // n) % len(tpl.normal)]
            stamp = b"%d" % ts if tpl.epoch_ts else b'"' + rfc3339(ts).encode() + b'"'
            send(self.topic, tpl.key, tpl.head + stamp + tail)
        self.sent = due
        return late


def probe_plan(sensors: Sequence[str], start_s: float, end_s: float, per_s: float,
               rng: np.random.Generator) -> list[tuple[float, str, float]]:
    """(seconds after the start, sensor, %LEL): Poisson crossings of PROBE_LEL, each cleared
    0.5-1.5 s later; a sensor crosses again only after its clear (every crossing fires)."""
    out: list[tuple[float, str, float]] = []
    free_at = dict.fromkeys(sensors, 0.0)
    t = start_s + float(rng.exponential(1 / per_s))
    while per_s > 0 and t < end_s:
        sid = min(free_at, key=free_at.__getitem__)
        clear = t + float(rng.uniform(0.5, 1.5))
        if free_at[sid] <= t and clear < end_s:  # a crossing left uncleared would not fire in the next step
            out += [(t, sid, PROBE_LEL), (clear, sid, CLEAR_LEL)]
            free_at[sid] = clear + 0.2
        t += float(rng.exponential(1 / per_s))
    return sorted(out)


def kafka_conf(bootstrap: str, linger_ms: int) -> dict[str, Any]:
    # murmur2_random: Java's key partitioner, as the worker's aiokafka and every other loader here,
    # so a sensor's readings from any of them share a partition (librdkafka's default is CRC32)
    return {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": linger_ms, "batch.size": 1_000_000,
            "partitioner": "murmur2_random", "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1_048_576}


def child_main(spec_path: Path) -> int:
    """The producer process: offer the spec's load by the wall clock, print progress lines
    and one RESULT line."""
    from confluent_kafka import Producer

    spec = msgspec.json.decode(spec_path.read_bytes(), type=ProducerSpec)
    topo = load_topology(Path(spec.topology))
    rng = np.random.default_rng(spec.seed)
    probes_set = set(spec.probe_sensors)
    streams = []
    for kind, share in spec.mix.items():
        models = [m for m in sensor_models(topo, kind, rng) if m.sensor_id not in probes_set]
        order = rng.permutation(len(models)).tolist()
        streams.append(KindStream(spec.topics[kind], spec.rate * share, [sensor_template(m, rng) for m in models],
                                  order, [0] * len(models), spec.crossing_p, spec.flag_p))
    plan = probe_plan(spec.probe_sensors, spec.probe_after_s, spec.duration_s - 1.0, spec.probes_per_s, rng)
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None and len(errors) < 1000:
            errors.append(str(err))

    bulk, quick = Producer(kafka_conf(spec.bootstrap, 5)), Producer(kafka_conf(spec.bootstrap, 0))  # probes: no linger
    for p in (bulk, quick):
        p.list_topics(timeout=10)  # connected before the clock starts

    def send(topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                bulk.produce(topic, value=value, key=key, on_delivery=on_delivery)
                return
            except BufferError:
                bulk.poll(0.01)  # the local queue is full: the broker is behind; let deliveries drain

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    hazmat = spec.topics["hazmat"]
    sent_probes: list[tuple[str, int, float, float]] = []
    lateness: list[float] = []
    t0 = time.time()
    cpu0 = proc_cpu_s(os.getpid())
    print(f"START {t0!r}", flush=True)
    next_progress, i_probe = t0, 0
    def probe(sid: str, lel: float) -> None:
        ts_ms = time.time_ns() // 1_000_000
        t_send = time.time()
        quick.produce(hazmat, key=sid.encode(), on_delivery=on_delivery,
                      value=b'{"sensor_id":"%s","ts":%d,"values":{"gas_lel":%.1f},"flag":"N"}' % (sid.encode(), ts_ms, lel))
        quick.poll(0)
        sent_probes.append((sid, ts_ms, t_send, lel))

    while not stop.is_set():
        now = time.time()
        elapsed = now - t0
        if elapsed >= spec.duration_s:
            break
        lateness.append(max(s.emit(t0, elapsed, send, rng) for s in streams))
        while i_probe < len(plan) and plan[i_probe][0] <= elapsed:
            probe(plan[i_probe][1], plan[i_probe][2])
            i_probe += 1
        bulk.poll(0)
        if now >= next_progress:
            print("PROGRESS " + json.dumps({"t": now, "sent": {s.topic: s.sent for s in streams}}), flush=True)
            next_progress = now + PROGRESS_S
        time.sleep(0.001)
    t_end = time.time()
    for _, sid, lel in plan[i_probe:]:  # stopped early: clear the sensors still in alarm, for the next run
        if lel < PROBE_LEL and any(p[0] == sid for p in sent_probes):
            probe(sid, lel)
    left = bulk.flush(30) + quick.flush(30)
    late = np.asarray(lateness or [0.0])
    print("RESULT " + json.dumps({
        "t0": t0, "t_end": t_end, "sent": {s.topic: s.sent for s in streams}, "probes": sent_probes,
        "schedule_late_p99_ms": float(np.percentile(late, 99) * 1e3), "schedule_late_max_ms": float(late.max() * 1e3),
        "undelivered": left, "delivery_errors": len(errors), "first_errors": errors[:3],
        "cpu_s": proc_cpu_s(os.getpid()) - cpu0}), flush=True)
    return 0


class ProducerChild:
    """The parent's handle on a producer process: its progress, its result."""

    def __init__(self, spec: ProducerSpec, workdir: Path, label: str) -> None:
        spec_path = workdir / f"producer-{label}.json"
        spec_path.write_bytes(msgspec.json.encode(spec))
        self.kinds = {topic: kind for kind, topic in spec.topics.items()}
        self.log_path = workdir / f"producer-{label}.log"
        self.t0: float | None = None
        self.sent: dict[str, int] = {}  # kind -> readings, from the latest progress line
        self.result: dict[str, Any] | None = None
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, __file__, "--producer-child", str(spec_path)],
                                         stdout=subprocess.PIPE, stderr=log, cwd=REPO, start_new_session=True)
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes] | None) -> None:
        for raw in stream or ():
            word, _, rest = raw.decode().strip().partition(" ")
            if word == "START":
                self.t0 = float(rest)
            elif word == "PROGRESS":
                self.sent = {self.kinds[t]: n for t, n in json.loads(rest)["sent"].items()}
            elif word == "RESULT":
                self.result = json.loads(rest)
                self.sent = {self.kinds[t]: n for t, n in self.result["sent"].items()}

    def wait_started(self, deadline_s: float = 60.0) -> float:
        wait_until(lambda: self.t0 is not None or self._died(), deadline_s, "the producer to start", 0.02)
        if self.t0 is None:
            raise BenchError(f"the producer exited ({self.proc.returncode}):\n{self.log_path.read_text()[-2000:]}")
        return self.t0

    def _died(self) -> bool:
        return self.proc.poll() is not None and self.result is None

    def wait_result(self, deadline_s: float = 90.0) -> dict[str, Any]:
        self.proc.wait(deadline_s)
        self._reader.join(5)
        if self.result is None:
            raise BenchError(f"the producer gave no result ({self.proc.returncode}):\n{self.log_path.read_text()[-2000:]}")
        if self.result["undelivered"] or self.result["delivery_errors"]:
            raise BenchError(f"the producer could not deliver: {self.result['first_errors']}")
        return self.result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# ================================================================== the alerts topic


class AlertView(msgspec.Struct):
    alarm_key: str
    status: str
    event_time_ms: int
    detected_at: str  # when the worker's batch that raised it started


_ALERT = msgspec.json.Decoder(AlertView)


class AlertReader:
    """Reads the alerts topic in a thread from its end at creation: the read time of every
    gas firing, and a count of all alarm events."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, group: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        # no subscribe: explicit end offsets, so nothing sent after this is missed; the group
        # id is required by librdkafka but never joined or committed
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 10, "fetch.min.bytes": 1})
        tps = []
        for p in range(partitions):
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            tps.append(TopicPartition(topic, p, high))
        self.consumer.assign(tps)
        self.firings: dict[tuple[str, int], tuple[float, str]] = {}  # (alarm_key, event ms) -> (read time, detected_at)
        self.events = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self.consumer.poll(0.05)  # returns as soon as one is there (consume() waits for a full batch)
            if first is None:
                continue
            now = time.time()
            for msg in [first, *self.consumer.consume(2000, 0)]:
                if msg.error():
                    continue
                self.events += 1
                a = _ALERT.decode(msg.value() or b"{}")
                if a.status == "firing" and a.alarm_key.endswith(":" + GAS_RULE):
                    self.firings.setdefault((a.alarm_key, a.event_time_ms), (now, a.detected_at))

    def wait_for(self, probes: Sequence[Sequence[Any]], deadline_s: float) -> None:
        """Until every crossing in ``probes`` has its firing read, or the deadline."""
        keys = [(f"{p[0]}:{GAS_RULE}", p[1]) for p in probes if p[3] >= PROBE_LEL]
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and any(k not in self.firings for k in keys):
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.consumer.close()


def latency_stats(probes: Sequence[Sequence[Any]], firings: dict[tuple[str, int], tuple[float, str]],
                  t_from: float, t_to: float, budget_ms: float) -> dict[str, Any]:
    """Percentiles of send -> firing read back for the crossings sent in [t_from, t_to). A
    crossing whose firing was not read by the end counts as infinitely late, so a p99 is
    never flattered by alarms that did not come."""
    lat, det = [], []
    for sid, ts_ms, t_send, lel in probes:
        if lel < PROBE_LEL or not t_from <= t_send < t_to:
            continue
        hit = firings.get((f"{sid}:{GAS_RULE}", ts_ms))
        lat.append(hit[0] - t_send if hit else math.inf)
        if hit:
            det.append(datetime.fromisoformat(hit[1]).timestamp() - t_send)
    a = np.asarray(lat, np.float64) * 1e3
    if not len(a):
        return {"n": 0}

    def q(p: float) -> float:
        return float(np.percentile(a, p, method="higher"))  # an observed value (inf when one is missing)

    return {"n": len(a), "missing": int(np.isinf(a).sum()), "p50_ms": q(50), "p95_ms": q(95), "p99_ms": q(99),
            "max_ms": float(a.max()), "over_budget": int((a > budget_ms).sum()),
            "send_to_detected_p50_ms": float(np.percentile(det, 50) * 1e3) if det else math.nan,
            "send_to_detected_p99_ms": float(np.percentile(det, 99) * 1e3) if det else math.nan,
            "all_ms": sorted(round(float(v), 2) for v in a)}


# ================================================================== the worker's side


@dataclass(frozen=True)
class Scrape:
    raw: dict[tuple[str, str], float]  # the whole /metrics page
    t: float
    counted: dict[str, float]  # kind -> readings counted (valid) + dead-lettered
    alerts: float
    overruns: float  # batches over their kind's budget
    late: float
    cpu_s: float
    rss_mb: float

    @property
    def total(self) -> float:
        return sum(self.counted.values())


def scrape(worker: Worker) -> Scrape:
    counted: dict[str, float] = {}
    sums: dict[str, float] = {}
    raw = worker.metrics()
    for (name, labels), v in raw.items():
        if name in ("cityops_readings_total", "cityops_deadletters_total"):
            kind = labels.split('kind="', 1)[1].split('"', 1)[0]
            counted[kind] = counted.get(kind, 0.0) + v
        sums[name] = sums.get(name, 0.0) + v
    pids = worker.pids()  # the worker, and its processes with --worker-args "--isolate hazmat"
    return Scrape(raw, time.time(), counted, sums.get("cityops_alerts_total", 0.0), sums.get("cityops_budget_overruns_total", 0.0),
                  sums.get("cityops_late_readings_total", 0.0), sum(proc_cpu_s(p) for p in pids),
                  sum(proc_mem_mb(p) for p in pids))


def stage_deltas(a: Scrape, b: Scrape) -> dict[str, dict[str, float]]:
    """Per kind between two scrapes, from the worker's own histograms: batches, mean messages
    per batch, and mean ms per batch of each stage (decode, detect, alarm, sink and its
    steps, checkpoint): where a batch's time goes as the load rises."""
    def labels(text: str) -> dict[str, str]:
        return {k: v.strip('"') for k, v in (part.split("=", 1) for part in text.split(",") if "=" in part)}

    out: dict[str, dict[str, float]] = {}
    for (name, lab), v in b.raw.items():
        delta = v - a.raw.get((name, lab), 0.0)
        lb = labels(lab)
        if name == "cityops_batch_messages_count":
            out.setdefault(lb["kind"], {})["batches"] = delta
        elif name == "cityops_batch_messages_sum":
            out.setdefault(lb["kind"], {})["messages"] = delta
        elif name in ("cityops_stage_seconds_sum", "cityops_stage_seconds_count"):
            out.setdefault(lb["kind"], {})[f"{lb['stage']}{'_s' if name.endswith('sum') else '_n'}"] = delta
    for per_kind in out.values():
        for key in [k for k in per_kind if k.endswith("_s")]:
            n = per_kind.pop(key[:-2] + "_n", 0.0)
            per_kind[key[:-2] + "_ms_per_batch"] = 1e3 * per_kind.pop(key) / n if n else 0.0
        batches = per_kind.get("batches", 0.0)
        per_kind["mean_batch_messages"] = per_kind.get("messages", 0.0) / batches if batches else 0.0
    return out


def worker_log_findings(path: Path, limit: int = 8) -> dict[str, Any]:
    """Warnings, errors and tracebacks in the worker's log (it runs at --loglevel warning)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = [ln for ln in text.splitlines() if any(w in ln for w in ("WARN", "ERROR", "Error", "Traceback", "CRIT"))]
    return {"lines": len(text.splitlines()), "flagged": len(lines), "first": [ln[:300] for ln in lines[:limit]]}


# ================================================================== a run's shared parts


@dataclass
class Run:
    cfg: stack.StackConfig
    suffix: str
    workdir: Path
    mix: dict[str, float]
    a: argparse.Namespace
    namespaces: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    live: list[Worker] = field(default_factory=list)
    children: list[ProducerChild] = field(default_factory=list)
    log_findings: dict[str, Any] = field(default_factory=dict)

    def topology(self, label: str) -> Topology:
        """A topology.yaml copy on this run's own topics (created here)."""
        d = self.workdir / label
        d.mkdir(parents=True, exist_ok=True)
        topo = isolated_topology(d, f"{self.suffix}{label}")
        stack.ensure_topics(self.cfg.bootstrap, topo.all_topics())
        return topo

    def worker(self, topo: Topology, label: str) -> Worker:
        group = f"cityops-lat-{self.suffix}-{label}"
        self.groups.append(group)
        self.namespaces.append(group)
        args = tuple(shlex.split(self.a.worker_args))
        ports = worker_processes(args, list(topo.spec.kinds))
        port = free_ports(ports)
        env = {**os.environ, "CITYOPS_BOOTSTRAP": self.cfg.bootstrap, "CITYOPS_REDIS_URL": self.cfg.redis_url,
               "CITYOPS_APP_ID": group, "CITYOPS_NAMESPACE": group, "CITYOPS_WEB_PORT": str(port),
               "CITYOPS_DATA_DIR": str(self.workdir / label / "worker-data")}
        for name in ("CITYOPS_WEBHOOK_URL", "CITYOPS_CAP_URL", "CITYOPS_TOPOLOGY", "CITYOPS_DELIVERY"):
            env.pop(name, None)  # receivers off: this is the stream's latency, not HTTP's
        w = Worker(topo, env, self.workdir / label / "worker.log", port, args=args, ports=ports)
        self.live.append(w)
        return w

    def reader(self, topo: Topology) -> AlertReader:
        group = f"cityops-lat-{self.suffix}-reader-{len(self.groups)}"
        return AlertReader(self.cfg.bootstrap, topo.spec.topics.alerts, topo.spec.topics.partitions, group)

    def producer(self, topo: Topology, rate: float, duration_s: float, probes: list[str], label: str,
                 probe_after_s: float) -> ProducerChild:
        spec = ProducerSpec(self.cfg.bootstrap, str(topo.path), {k: topo.kind(k).topic for k in self.mix}, rate,
                            self.mix, duration_s, probes, self.a.probes_per_s, probe_after_s,
                            self.a.seed + len(self.children), self.a.crossing_p, self.a.flag_p)
        child = ProducerChild(spec, self.workdir, label)
        self.children.append(child)
        return child

    def ours(self, worker: Worker, child: ProducerChild | None) -> dict[str, int | None]:
        status = stack.status(self.cfg)
        children = {f"worker-p{i}": pid for i, pid in enumerate(worker.pids()[1:])}  # --worker-args "--isolate ..."
        return {"worker": worker.proc.pid if worker.proc else None, **children,
                "producer": child.proc.pid if child else None,
                "kafka": status.kafka.pid, "redis": status.redis.pid, "bench": os.getpid()}


def produce_records(bootstrap: str, records: Iterable[tuple[str, bytes, bytes]]) -> tuple[int, float]:
    """Send (topic, key, value) records, acks=all, and wait for all; (count, seconds)."""
    from confluent_kafka import Producer

    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(kafka_conf(bootstrap, 20))
    t0, n = time.monotonic(), 0
    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) or errors:
        raise BenchError(f"pre-loading failed: {errors[:3] or 'undelivered records after 120 s'}")
    return n, time.monotonic() - t0


def warm_up_records(topo: Topology, mix: dict[str, float], probes: Sequence[str], at_ms: int,
                    rng: np.random.Generator) -> list[tuple[str, bytes, bytes]]:
    """One reading per catalog sensor (the probes at CLEAR_LEL), at ``at_ms``: every sensor is
    known, and every probe clear, before anything is timed."""
    out = []
    for kind in mix:
        models = [m for m in sensor_models(topo, kind, rng) if m.sensor_id not in probes]
        factory = MessageFactory(models, rng, at_ms, 1, MessageMix(crossing_p=0.0, flag_p=0.0))
        out += [(topo.kind(kind).topic, m.key or b"", m.value) for m in factory.one_each()]
    out += [(topo.kind("hazmat").topic, sid.encode(),
             json.dumps({"sensor_id": sid, "ts": at_ms, "values": {"gas_lel": CLEAR_LEL}, "flag": "N"}).encode())
            for sid in probes]
    return out


def pick_probes(topo: Topology, n: int, rng: np.random.Generator) -> list[str]:
    heads = [s.sensor_id for s in topo.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS")]
    return sorted(rng.choice(heads, min(n, len(heads)), replace=False).tolist())


def start_worker(worker: Worker) -> float:
    """Spawn and wait for /healthz; returns the seconds it took."""
    t = time.monotonic()
    worker.start()
    wait_until(lambda: worker.alive() and worker.get("/healthz") is not None, 120, "worker /healthz", 0.05)
    return time.monotonic() - t


# ================================================================== 1. the ladder


@dataclass
class Ladder:
    run: Run
    topo: Topology
    worker: Worker
    reader: AlertReader
    probes: list[str]
    budget_ms: float
    expected: float = 0.0  # readings sent to the worker so far (warm-up and every finished step)


def open_ladder(run: Run) -> Ladder:
    topo = run.topology("ladder")
    rng = np.random.default_rng(run.a.seed)
    probes = pick_probes(topo, run.a.probe_sensors, rng)
    worker = run.worker(topo, "ladder")
    start_worker(worker)
    reader = run.reader(topo)
    warm = warm_up_records(topo, run.mix, probes, time.time_ns() // 1_000_000 - 1000, rng)
    produce_records(run.cfg.bootstrap, warm)
    wait_until(lambda: worker.alive() and scrape(worker).total >= len(warm), 120, "the warm-up readings", 0.2)
    return Ladder(run, topo, worker, reader, probes, float(topo.kind("hazmat").batch.budget_ms), float(len(warm)))


def lag_slope(series: Sequence[tuple[float, float]]) -> float:
    """Readings/s by which the lag grew over the second half of a step (least squares)."""
    if len(series) < 4:
        return 0.0
    half = series[len(series) // 2:]
    t, lag = np.asarray([s[0] for s in half]), np.asarray([s[1] for s in half])
    return float(np.polyfit(t - t[0], lag, 1)[0])


def run_step(ld: Ladder, rate: float) -> dict[str, Any]:
    """One offered rate: open-loop load for --step-s; measured after --warmup-s."""
    a, run = ld.run.a, ld.run
    child = run.producer(ld.topo, rate, a.step_s, ld.probes, f"step-{rate:.0f}", a.warmup_s)
    t0 = child.wait_started()
    time.sleep(max(0.0, t0 + a.warmup_s - time.time()))
    first, mark0 = scrape(ld.worker), CpuMark.take()
    series: list[tuple[float, float]] = []  # (time, lag in readings)
    peak_rss = first.rss_mb
    while child.proc.poll() is None:
        time.sleep(POLL_S)
        ld.worker.alive()
        s = scrape(ld.worker)
        peak_rss = max(peak_rss, s.rss_mb)
        series.append((s.t, ld.expected + sum(child.sent.values()) - s.total))
    res = child.wait_result()
    last, mark1 = scrape(ld.worker), CpuMark.take()
    cpu = cpu_between(mark0, mark1, run.ours(ld.worker, child))
    cpu["cores"]["producer"] = res["cpu_s"] / (res["t_end"] - res["t0"])  # it has exited by mark1
    sent = sum(res["sent"].values()) + sum(1 for p in res["probes"])
    ld.expected += sent
    lag_end = ld.expected - last.total
    caught = _catch_up(ld, a.catch_up_s)
    ld.reader.wait_for(res["probes"], a.settle_s if caught is not None else 2.0)
    window = last.t - first.t
    slope = lag_slope(series)
    # saturated: the lag grew through the step and the worker could not work it off soon after
    saturated = caught is None or (slope > 0.05 * rate and lag_end > rate)
    lat = latency_stats(res["probes"], ld.reader.firings, t0 + a.warmup_s, res["t_end"], ld.budget_ms)
    return {"offered_per_s": rate, "producer_per_s": sum(res["sent"].values()) / (res["t_end"] - res["t0"]),
            "worker_per_s": (last.total - first.total) / window, "window_s": window,
            "lag_end_readings": lag_end, "lag_slope_per_s": slope, "catch_up_s": caught, "saturated": saturated,
            "latency": lat, "worker_cpu_pct": 100 * (last.cpu_s - first.cpu_s) / window,
            "worker_rss_mb": last.rss_mb, "worker_peak_rss_mb": max(peak_rss, last.rss_mb),
            "worker_vmhwm_mb": sum(proc_mem_mb(p, "VmHWM") for p in ld.worker.pids()),
            "alarm_events_per_s": (last.alerts - first.alerts) / window, "budget_overruns": last.overruns - first.overruns,
            "late_readings": last.late - first.late, "cpu": cpu, "lag_series": series,
            "stages": stage_deltas(first, last),
            "producer": {k: res[k] for k in ("schedule_late_p99_ms", "schedule_late_max_ms", "cpu_s")}}


def _catch_up(ld: Ladder, deadline_s: float) -> float | None:
    """Seconds until the worker has counted everything sent; None if not within the deadline."""
    t = time.monotonic()
    try:
        wait_until(lambda: ld.worker.alive() and scrape(ld.worker).total >= ld.expected, deadline_s, "catch-up", 0.25)
    except TimeoutError:
        return None
    return time.monotonic() - t


def run_ladder(run: Run, rates: Sequence[float]) -> dict[str, Any]:
    ld = open_ladder(run)
    steps: list[dict[str, Any]] = []
    try:
        for rate in rates:
            step = run_step(ld, rate)
            steps.append(step)
            print_step(step, ld.budget_ms)
            if step["saturated"]:
                break
    finally:
        ld.reader.close()
        ld.worker.stop()
        run.log_findings["ladder"] = worker_log_findings(ld.worker.log_path)
    achieved = max((s["worker_per_s"] for s in steps), default=math.nan)
    return {"steps": steps, "probe_sensors": ld.probes, "max_worker_per_s": achieved,
            "saturated_at": next((s["offered_per_s"] for s in steps if s["saturated"]), None), "budget_ms": ld.budget_ms}


# ================================================================== 2. a backlog draining


def backlog_records(topo: Topology, total: int, mix: dict[str, float], seed: int) -> tuple[list[tuple[str, bytes, bytes]], int]:
    """``total`` air + traffic readings (their shares of ``mix``), single-reading messages of
    the catalog's sensors, each sensor's one period apart and ending a minute before now."""
    rng = np.random.default_rng(seed)
    now_ms = time.time_ns() // 1_000_000
    kinds = {k: mix.get(k, 0.0) for k in ("air", "traffic")}
    out: list[tuple[str, bytes, bytes]] = []
    n = 0
    for kind, share in kinds.items():
        target = round(total * share / sum(kinds.values()))
        sensors = sensor_models(topo, kind, rng)
        start_ms, step_ms = sensor_clock(now_ms - 60_000, sensors[0].period_s, target / len(sensors), topo.spec.input.max_age_s)
        factory = MessageFactory(sensors, rng, start_ms, step_ms, MessageMix(array_p=0.0))
        k = 0
        while k < target:
            msgs, got, _ = factory.batch(min(50_000, target - k))
            out += [(topo.kind(kind).topic, m.key or b"", m.value) for m in msgs]
            k += got
        n += k
    return out, n


def run_backlog(run: Run, rate: float, label: str) -> dict[str, Any]:
    """Pre-load the backlog, start a worker, offer ``rate`` while it drains."""
    a = run.a
    topo = run.topology(label)
    rng = np.random.default_rng(a.seed + 7)
    probes = pick_probes(topo, a.probe_sensors, rng)
    t = time.monotonic()
    records, n_backlog = backlog_records(topo, a.backlog, run.mix, a.seed + 8)
    warm = warm_up_records(topo, {k: v for k, v in run.mix.items() if k not in ("air", "traffic")}, probes,
                           time.time_ns() // 1_000_000 - 30_000, rng)
    n_pre, produce_s = produce_records(run.cfg.bootstrap, [*records, *warm])
    del records
    print(f"# backlog: {n_backlog} air+traffic readings (+{len(warm)} warm-up) built and pre-loaded in "
          f"{time.monotonic() - t:.1f} s (produce {produce_s:.1f} s)")
    worker = run.worker(topo, label)
    reader = run.reader(topo)
    budget = float(topo.kind("hazmat").batch.budget_ms)
    healthy_s = start_worker(worker)
    wait_until(lambda: worker.alive() and scrape(worker).total > 0, 120, "the first counted reading", 0.05)
    first, mark0 = scrape(worker), CpuMark.take()
    child = run.producer(topo, rate, a.backlog_max_s, probes, label, 0.0)
    try:
        t0 = child.wait_started()
        drained_at, peak_rss, series = _drain(worker, child, n_backlog, rate, run.mix, a.backlog_max_s)
        if drained_at is not None:  # some load after the drain, for the steady latency beside it
            time.sleep(max(0.0, drained_at + a.tail_s - time.time()))
        child.stop()
        res = child.wait_result()
        last, mark1 = scrape(worker), CpuMark.take()
        reader.wait_for(res["probes"], a.settle_s)
        cpu = cpu_between(mark0, mark1, run.ours(worker, child))
        cpu["cores"]["producer"] = res["cpu_s"] / (res["t_end"] - res["t0"])
    finally:
        child.kill()
        reader.close()
        worker.stop()
        run.log_findings[label] = worker_log_findings(worker.log_path)
    end = drained_at if drained_at is not None else res["t_end"]
    window = last.t - first.t
    return {"offered_per_s": rate, "backlog_readings": n_backlog, "pre_loaded_records": n_pre, "window_s": window,
            "producer_per_s": sum(res["sent"].values()) / (res["t_end"] - res["t0"]),
            "worker_healthy_s": healthy_s, "drained": drained_at is not None,
            "drain_s": (end - first.t), "backlog_drain_per_s": n_backlog / max(end - first.t, 1e-9),
            "latency_during_drain": latency_stats(res["probes"], reader.firings, t0, end, budget),
            "latency_after_drain": latency_stats(res["probes"], reader.firings, end, res["t_end"], budget)
            if drained_at is not None else {"n": 0},
            "worker_per_s": (last.total - first.total) / window, "worker_cpu_pct": 100 * (last.cpu_s - first.cpu_s) / window,
            "worker_peak_rss_mb": max(peak_rss, last.rss_mb),
            "worker_vmhwm_mb": sum(proc_mem_mb(p, "VmHWM") for p in worker.pids()),
            "alarm_events": last.alerts - first.alerts, "budget_overruns": last.overruns - first.overruns,
            "cpu": cpu, "remaining_series": series, "budget_ms": budget, "stages": stage_deltas(first, last)}


def _drain(worker: Worker, child: ProducerChild, n_backlog: int, rate: float, mix: dict[str, float],
           max_s: float) -> tuple[float | None, float, list[tuple[float, float]]]:
    """Poll until what is left of air + traffic (backlog + live sent - counted) is under a
    second of their live load: (drain end time or None, peak RSS, (time, left) series)."""
    slow = ("air", "traffic")
    allowance = max(500.0, rate * sum(mix.get(k, 0.0) for k in slow))
    end = time.monotonic() + max_s
    series: list[tuple[float, float]] = []
    peak = 0.0
    while time.monotonic() < end and child.proc.poll() is None:
        time.sleep(0.5)
        worker.alive()
        s = scrape(worker)
        peak = max(peak, s.rss_mb)
        left = n_backlog + sum(child.sent.get(k, 0) for k in slow) - sum(s.counted.get(k, 0.0) for k in slow)
        series.append((s.t, left))
        if left <= allowance:
            return s.t, peak, series
    return None, peak, series


# ================================================================== report


def fmt_ms(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return "never" if math.isinf(x) else f"{x:.0f}"


def print_step(s: dict[str, Any], budget_ms: float) -> None:
    lat, cpu = s["latency"], s["cpu"]
    flag = "SATURATED" if s["saturated"] else ("p99 ok" if lat.get("p99_ms", math.inf) <= budget_ms else "p99 OVER")
    print(f"{s['offered_per_s']:>8,.0f} {s['producer_per_s']:>9,.0f} {s['worker_per_s']:>9,.0f} "
          f"{lat.get('n', 0):>4} {fmt_ms(lat.get('p50_ms')):>6} {fmt_ms(lat.get('p95_ms')):>6} {fmt_ms(lat.get('p99_ms')):>6} "
          f"{fmt_ms(lat.get('max_ms')):>7} {s['worker_cpu_pct']:>5.0f} {s['worker_peak_rss_mb']:>6.0f} "
          f"{cpu['cores'].get('kafka', math.nan):>5.2f} {cpu['cores'].get('producer', math.nan):>5.2f} "
          f"{cpu['others_cores']:>6.2f} {s['lag_end_readings']:>9,.0f} {s['alarm_events_per_s']:>6.0f}  {flag}", flush=True)
    print("          batches: " + stage_line(s["stages"], s["window_s"]), flush=True)


def stage_line(stages: dict[str, dict[str, float]], window_s: float) -> str:
    """Per kind: batches/s, messages per batch, CPU stages and sink ms per batch."""
    parts = []
    for kind, d in sorted(stages.items()):
        cpu_ms = sum(d.get(f"{st}_ms_per_batch", 0.0) for st in ("decode", "detect", "alarm"))
        parts.append(f"{kind} {d.get('batches', 0) / window_s:.0f}/s x {d['mean_batch_messages']:.0f} msgs, "
                     f"cpu {cpu_ms:.1f} + sink {d.get('sink_ms_per_batch', 0.0):.1f} ms")
    return "; ".join(parts)


LADDER_HEADER = (f"{'offered':>8} {'producer':>9} {'worker':>9} {'n':>4} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>7} "
                 f"{'cpu%':>5} {'rssMB':>6} {'kafka':>5} {'prod':>5} {'others':>6} {'lag_end':>9} {'alarm/s':>6}")


def print_backlog(b: dict[str, Any]) -> None:
    d, af = b["latency_during_drain"], b["latency_after_drain"]
    state = f"drained in {b['drain_s']:.1f} s" if b["drained"] else f"NOT drained after {b['drain_s']:.0f} s"
    print(f"backlog {b['backlog_readings']:,} air+traffic readings, offered {b['offered_per_s']:,.0f}/s "
          f"(producer {b['producer_per_s']:,.0f}/s): {state} ({b['backlog_drain_per_s']:,.0f} backlog readings/s, "
          f"worker {b['worker_per_s']:,.0f} readings/s, CPU {b['worker_cpu_pct']:.0f} %, peak RSS {b['worker_peak_rss_mb']:.0f} MB, "
          f"others {b['cpu']['others_cores']:.2f} cores)")
    print("  batches: " + stage_line(b["stages"], b["window_s"]))
    for name, lat in (("during drain", d), ("after drain", af)):
        if lat.get("n"):
            print(f"  gas latency {name:<12} n={lat['n']:>4} p50 {fmt_ms(lat['p50_ms'])} p95 {fmt_ms(lat['p95_ms'])} "
                  f"p99 {fmt_ms(lat['p99_ms'])} max {fmt_ms(lat['max_ms'])} ms; over {b['budget_ms']:.0f} ms: {lat['over_budget']}, "
                  f"missing {lat['missing']}; send->detected_at p50 {fmt_ms(lat['send_to_detected_p50_ms'])} ms")


def plot(ladder: dict[str, Any] | None, backlogs: Sequence[dict[str, Any]], path: Path, note: str) -> None:
    """Latency percentiles vs offered load (log-log), the budget, the saturated region, and the
    worker's achieved rate beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = (ladder or {}).get("steps", [])
    fig, (ax, ax2) = plt.subplots(2, 1, sharex=True, figsize=(8.5, 7.5), gridspec_kw={"height_ratios": [3, 1.4]})
    x = [s["offered_per_s"] for s in steps]
    top = 1.0
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s-"), ("p99_ms", "^-"), ("max_ms", "x:")):
        y = [s["latency"].get(key, math.nan) for s in steps]
        finite = [v for v in y if math.isfinite(v)]
        top = max([top, *finite])
        ax.plot(x, [v if math.isfinite(v) else math.nan for v in y], style, label=key.split("_")[0])
    for b in backlogs:
        d = b["latency_during_drain"]
        if d.get("n") and math.isfinite(d["p99_ms"]):
            ax.plot([b["offered_per_s"]], [d["p99_ms"]], "D", ms=8,
                    label=f"p99 while a {b['backlog_readings'] / 1000:.0f}k air+traffic backlog drains "
                          f"({b['offered_per_s']:,.0f}/s offered)")
    budget = (ladder or {}).get("budget_ms") or (backlogs[0]["budget_ms"] if backlogs else 100.0)
    ax.axhline(budget, ls="--", color="red", label=f"hazmat budget {budget:.0f} ms")
    sat = [s["offered_per_s"] for s in steps if s["saturated"]]
    if sat:
        ok = [s["offered_per_s"] for s in steps if not s["saturated"]]
        edge = math.sqrt(max(ok) * sat[0]) if ok else sat[0] / 1.5
        ax.axvspan(edge, sat[0] * 1.5, color="grey", alpha=0.2, label="worker saturated (lag grows)")
        ax2.axvspan(edge, sat[0] * 1.5, color="grey", alpha=0.2)
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.0f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(top=top * 2)
    ax.set_ylabel("gas reading sent -> firing alert read (ms)")
    ax.set_title("cityops worker, full topology.yaml: gas alarm latency vs open-loop offered load", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax2.plot(x, [s["worker_per_s"] for s in steps], "o-", label="worker achieved (readings/s)")
    ax2.plot(x, x, "k:", label="offered")
    ax2.set_yscale("log")
    ax2.set_xlabel("offered load (readings/s, single-reading messages, all kinds)")
    ax2.set_ylabel("readings/s")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8, loc="upper left")
    for axis in (ax.yaxis, ax2.xaxis, ax2.yaxis):  # after set_yscale, which resets them
        axis.set_major_formatter(plain)
    import textwrap

    fig.text(0.01, 0.005, textwrap.fill(note, 150), fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def jsonable(x: Any) -> Any:
    """inf/nan -> None (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    return x


# ================================================================== main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--rates", default=DEFAULT_RATES, help=f"offered readings/s, ascending (default {DEFAULT_RATES}; '' skips the ladder)")
    p.add_argument("--step-s", type=float, default=30.0, help="seconds of load per rate (default 30)")
    p.add_argument("--warmup-s", type=float, default=5.0, help="first seconds of a step not measured (default 5)")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"share of readings per kind (default {DEFAULT_MIX})")
    p.add_argument("--probe-sensors", type=int, default=24, help="gas heads used as probes, out of the background (default 24)")
    p.add_argument("--probes-per-s", type=float, default=10.0, help="gas crossings per second (Poisson, default 10)")
    p.add_argument("--crossing-p", type=float, default=MessageMix().crossing_p,
                   help="background readings across a set point (default bench_pipeline's %(default)s)")
    p.add_argument("--flag-p", type=float, default=MessageMix().flag_p, help="background readings with a non-N flag")
    p.add_argument("--catch-up-s", type=float, default=20.0, help="after a step, how long the worker may take to catch up")
    p.add_argument("--settle-s", type=float, default=10.0, help="how long to wait for the last probes' alerts")
    p.add_argument("--with-backlog", action="store_true", help="also: offer load while a pre-loaded backlog drains")
    p.add_argument("--backlog", type=int, default=300_000, help="air + traffic readings pre-loaded (default 300000)")
    p.add_argument("--backlog-rate", default="half",
                   help="offered readings/s during the drain, comma-separated for several drains; 'half' is half the "
                        "ladder's highest achieved rate (default half)")
    p.add_argument("--backlog-max-s", type=float, default=240.0, help="give up on the drain after this (default 240)")
    p.add_argument("--tail-s", type=float, default=10.0, help="load kept on after the drain (default 10)")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"(default {DEFAULT_JSON.relative_to(REPO)})")
    p.add_argument("--png", type=Path, default=DEFAULT_PNG, help=f"(default {DEFAULT_PNG.relative_to(REPO)})")
    p.add_argument("--keep", action="store_true", help="keep topics, Redis keys, groups and logs")
    p.add_argument("--worker-args", default="", help="more `cityops worker` options, e.g. '--isolate hazmat'")
    p.add_argument("--producer-child", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.rate_list = [float(r) for r in a.rates.split(",") if r.strip()]
    if a.rate_list != sorted(a.rate_list):
        p.error("--rates must ascend: the ladder stops at the first saturated rate")
    a.backlog_rates = [r.strip() for r in a.backlog_rate.split(",") if r.strip()]
    if any(r != "half" and not r.replace(".", "", 1).isdigit() for r in a.backlog_rates):
        p.error("--backlog-rate takes numbers or 'half'")
    if a.with_backlog and not a.rate_list and "half" in a.backlog_rates:
        p.error("--with-backlog without a ladder needs numeric --backlog-rate values")
    return a


def code_version() -> str:
    """The commit the worker ran, and whether the work tree differed from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "streams", "detectors", "sinks", "topology.yaml")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes to the worker" if dirty else "")


def preflight() -> stack.StackConfig:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise BenchError("confluent-kafka is missing: .venv/bin/pip install -e '.[bench]'") from None
    cfg = stack.StackConfig.from_env(root=REPO / ".stack")
    status = stack.status(cfg)
    if not status.all_running:
        raise BenchError(f"the local stack is not running:\n{status}\nstart it with `.venv/bin/cityops stack up`")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    if a.producer_child:
        return child_main(a.producer_child)
    try:
        cfg = preflight()
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 2
    suffix = uuid.uuid4().hex[:10]
    run = Run(cfg, suffix, Path(tempfile.mkdtemp(prefix=f"cityops-latency-{suffix}-")), parse_mix(a.mix), a)
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(a).items()},
                              "environment": {**environment("not pinned (worker, producer, Kafka, Redis share the cores)"),
                                              "kafka": cfg.kafka_version, "code": code_version(),
                                              "others_before": machine_snapshot()}}
    print(f"# run {suffix} on {result['environment']['code']}: mix {run.mix}, {a.probe_sensors} probe gas heads at {a.probes_per_s:g}/s; "
          f"load avg {os.getloadavg()}; busiest other processes: "
          + "; ".join(f"{o['cores']:.2f} cores {o['cmd'][:60]}" for o in result["environment"]["others_before"]))
    code = 0
    try:
        if a.rate_list:
            print(LADDER_HEADER + "   (rates readings/s, latency ms, CPU in cores except cpu%)", flush=True)
            result["ladder"] = run_ladder(run, a.rate_list)
        if a.with_backlog:
            result["backlog"] = []
            for text in a.backlog_rates:
                rate = result["ladder"]["max_worker_per_s"] / 2 if text == "half" else float(text)
                result["backlog"].append(run_backlog(run, rate, f"backlog{rate:.0f}"))
                print_backlog(result["backlog"][-1])
    except (BenchError, TimeoutError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        cleanup(run)
    result["worker_logs"] = run.log_findings
    result["environment"]["loadavg_after"] = os.getloadavg()
    summarise(result)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(jsonable(result), indent=1))
    print(f"# wrote {a.json}")
    if "ladder" in result or "backlog" in result:
        note = (f"{result['environment']['date_utc']}, cityops {result['environment']['code']}, "
                f"{result['environment']['nproc']} cores shared with other work; "
                f"mix {a.mix}; {a.step_s:g} s per rate; {a.probes_per_s:g} gas crossings/s")
        plot(result.get("ladder"), result.get("backlog", []), a.png, note)
        print(f"# plotted {a.png}")
    return code


def summarise(result: dict[str, Any]) -> None:
    ladder = result.get("ladder")
    if ladder:
        budget = ladder["budget_ms"]
        fine = [s["offered_per_s"] for s in ladder["steps"] if not s["saturated"] and s["latency"].get("p99_ms", math.inf) <= budget]
        print(f"ladder: highest worker rate {ladder['max_worker_per_s']:,.0f} readings/s; saturated at "
              f"{ladder['saturated_at'] or 'none of the rates'}; p99 <= {budget:.0f} ms at offered {fine or 'none'}")
    for name, f in result["worker_logs"].items():
        if f["flagged"]:
            print(f"worker log ({name}): {f['flagged']} warning/error lines, first: {f['first'][:3]}")


def delete_groups(bootstrap: str, names: Sequence[str]) -> int:
    """Delete the groups the broker knows that are one of ``names`` or ``<name>.<kind>`` (a
    worker's consumer group per kind). Only known ones: the alert readers' ids are never
    joined, and deleting a group that does not exist can wait forever."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    known = {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result(timeout=15).valid}
    ours = sorted(g for g in known if any(g == n or g.startswith(n + ".") for n in names))
    done = 0
    for fut in (admin.delete_consumer_groups(ours, request_timeout=10).values() if ours else ()):
        try:
            fut.result(timeout=15)
            done += 1
        except Exception:  # members still leaving: reported by the count
            pass
    return done


def cleanup(run: Run) -> None:
    for child in run.children:
        child.kill()
    for w in run.live:
        w.stop()
    if run.a.keep:
        print(f"# kept topics *{run.suffix}*, groups/namespaces {run.groups}, files {run.workdir}")
        return
    import asyncio

    deleted = asyncio.run(delete_topics(run.cfg.bootstrap, run.suffix))
    keys = sum(delete_redis_namespace(run.cfg.redis_url, ns) for ns in run.namespaces)
    groups = delete_groups(run.cfg.bootstrap, run.groups)
    shutil.rmtree(run.workdir, ignore_errors=True)
    print(f"# cleaned up: {len(deleted)} topics, {groups} consumer groups, {keys} Redis keys, {run.workdir}")


if __name__ == "__main__":
    raise SystemExit(main())
