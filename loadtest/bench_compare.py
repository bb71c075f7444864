"""Side-by-side throughput: cityops against bare Kafka clients, a naive Faust agent and
Quix Streams, on one pre-loaded backlog; then gas reading-to-alarm latency under load.

Kafka (127.0.0.1:9092) and Redis (6379) must be running (`cityops stack up`). Every
topic, consumer group and Redis namespace carries this run's suffix and is removed at
the end (``--keep`` keeps them).

1. Throughput. ``--readings`` readings of the four kinds (mix as bench_e2e.py, catalog
   sensors, generator of bench_pipeline.py) are pre-loaded twice: as gateway arrays of
   ``--gateway-size`` readings per Kafka message, and as one reading per message (the
   same readings, in event-time order). Each system then drains one shape's backlog in
   a consumer group of its own, as a subprocess:
     aiokafka        bare AIOKafkaConsumer.getmany + msgspec decode (fetch + decode only)
     confluent       bare confluent_kafka.Consumer.consume + msgspec decode (fetch + decode only)
     faust           a naive Faust agent: faust.Record, ``async for``, gas rule -> alerts topic
     quix            Quix Streams StreamingDataFrame: gas rule -> alerts topic (arrays exploded)
     cityops-1route  `cityops worker` on loadtest/topology_gas_route.yaml (only the gas set point)
     cityops-full    `cityops worker` on topology.yaml
   Throughput is measured from a system's first progress to its last reading done: a peer
   notes when its first fetch handed it records and when its count reached the pre-loaded
   one; cityops is polled on /metrics (every 50 ms until the first counted reading, then
   sparsely, tightly again near the end) until ``cityops_readings_total`` reaches it, the
   readings of that first poll left out. A reading counts in cityops only once its batch's
   alerts are acknowledged by Kafka and on the Redis board; the peers count a reading once
   their own code is done with it (their alerts are handed to their producer). Startup
   (imports, group join) is reported apart. CPU is the process's (every thread, from
   /proc/<pid>/task/*/schedstat) over the same span; RSS its peak (VmHWM).
   ``--repeats`` rounds, each running every shape x system (order rotated per round);
   medians are quoted, ratios are medians of per-round ratios.
2. Gas latency. A full-topology worker, caught up, gets an open-loop offered load of
   ``--latency-rate`` readings/s of all kinds (bench_pipeline's mix: 10 % gateway arrays,
   0.5 % crossings) for ``--latency-s`` s, while random gas heads cross 25 %LEL (then
   clear) at Poisson times; each crossing is timed from its send to its ``firing`` alert
   read back from the alerts topic.

    .venv/bin/python loadtest/bench_compare.py [--readings 200000] [--repeats 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(REPO), str(REPO / "loadtest")) if p not in sys.path]

from bench_e2e import DEFAULT_MIX, free_ports, parse_mix  # noqa: E402
from bench_pipeline import MessageFactory, MessageMix, Reading, environment, sensor_clock, sensor_models  # noqa: E402

from peers.common import GAS_SETPOINT, RESULT_PREFIX, peak_rss_mb, proc_cpu_s  # noqa: E402
from streams import stack  # noqa: E402
from streams.topology import Topology, load_topology  # noqa: E402

PEERS = REPO / "loadtest" / "peers"
ONE_ROUTE = REPO / "loadtest" / "topology_gas_route.yaml"
QUIX_PYTHON = REPO / ".stack" / "bench" / "quix-venv" / "bin" / "python"
SHAPES = ("gateway", "single")


@dataclass(frozen=True)
class System:
    name: str
    what: str
    script: str | None = None  # a peer under loadtest/peers/
    topology: Path | None = None  # a cityops worker on (a copy of) this topology
    processes: int = 1  # cityops worker --processes N (both cores of the node)


SYSTEMS = (
    System("aiokafka", "bare aiokafka getmany + msgspec (fetch+decode)", script="aiokafka_peer.py"),
    System("confluent", "bare confluent-kafka consume + msgspec (fetch+decode)", script="confluent_peer.py"),
    System("faust", "naive Faust agent, faust.Record, gas rule", script="faust_peer.py"),
    System("quix", "Quix Streams sdf, gas rule", script="quix_peer.py"),
    System("cityops-1route", "cityops worker, gas set-point route only", topology=ONE_ROUTE),
    System("cityops-full", "cityops worker, full topology.yaml", topology=REPO / "topology.yaml"),
    System("cityops-full-2p", "cityops worker --processes 2, full topology.yaml", topology=REPO / "topology.yaml",
           processes=2),
)
RATIOS = (("cityops-1route", "quix"), ("cityops-full", "quix"), ("cityops-1route", "faust"),
          ("cityops-full-2p", "cityops-full"))


class BenchError(Exception):
    """A failure to report in one line (no traceback)."""


# ------------------------------------------------------------------ the run's names


@dataclass
class RunNames:
    """Topics, groups, namespaces and files of this run: all carry ``suffix``."""

    suffix: str
    workdir: Path
    bootstrap: str
    redis_url: str
    partitions: int
    base_topics: dict[str, str]  # kind -> topic in topology.yaml

    def inputs(self, shape: str) -> dict[str, str]:
        return {k: f"{t}.cmp.{self.suffix}.{shape}" for k, t in self.base_topics.items()}

    def alerts(self, shape: str) -> str:
        return f"city.alerts.cmp.{self.suffix}.{shape}"

    def deadletter(self, shape: str) -> str:
        return f"city.deadletter.cmp.{self.suffix}.{shape}"

    def group(self, *parts: object) -> str:
        return "-".join(["cmp", self.suffix, *map(str, parts)])

    def all_topics(self, shapes: Sequence[str]) -> list[tuple[str, int]]:
        out = []
        for shape in shapes:
            out += [(t, self.partitions) for t in self.inputs(shape).values()]
            out += [(self.alerts(shape), self.partitions), (self.deadletter(shape), self.partitions)]
        return out

    def topology_copy(self, source: Path, shape: str, label: str) -> Path:
        """``source`` with this run's topics (everything else unchanged)."""
        data = yaml.safe_load(source.read_text())
        data["catalog"] = str((source.parent / data["catalog"]).resolve())
        for kind, spec in data["kinds"].items():
            spec["topic"] = self.inputs(shape)[kind]
        data["topics"] = {**data["topics"], "alerts": self.alerts(shape), "deadletter": self.deadletter(shape)}
        path = self.workdir / "topologies" / f"{label}-{shape}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
        load_topology(path)  # fail here, clearly, rather than in a worker's log
        return path


def check_one_route(full: Path = REPO / "topology.yaml", one: Path = ONE_ROUTE) -> None:
    """The one-route topology must differ from topology.yaml only in detectors and routes."""
    a, b = yaml.safe_load(full.read_text()), yaml.safe_load(one.read_text())
    drift = [k for k in ("kinds", "input", "topics", "departments") if a.get(k) != b.get(k)]
    det = [d for d in a["detectors"] if d["name"] == "gas_lel"]
    route = [r for r in a["routes"] if r["rule"] == "gas_lel_alarm"]
    drift += ["detectors"] * (b["detectors"] != det) + ["routes"] * (b["routes"] != route)
    if drift:
        raise BenchError(f"{one.relative_to(REPO)} has drifted from topology.yaml in {', '.join(drift)}: update it")


# ------------------------------------------------------------------ the backlog


@dataclass
class Backlog:
    readings: dict[str, int] = field(default_factory=dict)  # kind -> readings (both shapes)
    records: dict[str, dict[str, list[tuple[bytes, bytes]]]] = field(default_factory=dict)  # shape -> kind -> (key, value)

    @property
    def total(self) -> int:
        return sum(self.readings.values())

    def messages(self, shape: str) -> int:
        return sum(map(len, self.records[shape].values()))


_ARRAY = msgspec.json.Decoder(list[Reading])
_ENCODE = msgspec.json.Encoder()


def event_ms(ts: str | int) -> int:
    return ts if isinstance(ts, int) else int(datetime.fromisoformat(ts).timestamp() * 1000)


def build_backlog(topo: Topology, total: int, mix: dict[str, float], gateway_size: int, seed: int) -> Backlog:
    """Per kind, whole gateway arrays (each one sensor's next ``gateway_size`` readings,
    one period apart, ending before now); the single shape is the same readings, one per
    message, sorted by event time (sensors interleave, each stays in order)."""
    rng = np.random.default_rng(seed)
    now_ms = time.time_ns() // 1_000_000
    out = Backlog(records={s: {} for s in SHAPES})
    for kind, share in mix.items():
        sensors = sensor_models(topo, kind, rng)
        n_arrays = max(1, round(total * share / gateway_size))
        start_ms, step_ms = sensor_clock(now_ms - 60_000, sensors[0].period_s, n_arrays * gateway_size / len(sensors),
                                         topo.spec.input.max_age_s)
        mix_k = MessageMix(array_p=1.0, array_len=(gateway_size, gateway_size))
        msgs, n, _ = MessageFactory(sensors, rng, start_ms, step_ms, mix_k).batch(n_arrays)
        arrays = [(m.key or b"", m.value) for m in msgs]
        singles = [(key, r) for key, value in arrays for r in _ARRAY.decode(value)]
        if max(event_ms(r.ts) for _, r in singles) > now_ms:
            raise BenchError(f"{kind}: generated event times ran past now; lower --readings or --gateway-size")
        singles.sort(key=lambda kr: event_ms(kr[1].ts))  # stable: a sensor's readings keep their order
        out.records["gateway"][kind] = arrays
        out.records["single"][kind] = [(key, _ENCODE.encode(r)) for key, r in singles]
        out.readings[kind] = n
    return out


def produce(bootstrap: str, topics: dict[str, str], records: dict[str, list[tuple[bytes, bytes]]]) -> float:
    """Pre-load (acks=all, Java's murmur2 key partitioning, as aiokafka and Faust do)."""
    from confluent_kafka import Producer

    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20, "batch.size": 1_000_000,
                         "partitioner": "murmur2_random", "message.max.bytes": 4_000_000})
    t0 = time.monotonic()
    for kind, recs in records.items():
        for key, value in recs:
            while True:
                try:
                    producer.produce(topics[kind], value=value, key=key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)  # local queue full: let deliveries drain
        producer.poll(0)
    if producer.flush(120) or errors:
        raise BenchError(f"pre-loading failed: {errors[:3] or 'undelivered records after 120 s'}")
    return time.monotonic() - t0


# ------------------------------------------------------------------ one measurement


@dataclass
class Sample:
    """One system draining one shape's backlog. The span runs from its first progress
    (a peer: its first fetch returned records; cityops: the first /metrics poll with a
    counted reading) to every reading done; rates and CPU are over that span."""

    system: str
    shape: str
    repeat: int
    readings: int  # all of them
    span_readings: int  # done within the span (cityops: less the readings counted at its start)
    span_messages: int
    elapsed_s: float
    cpu_s: float  # the process's CPU (every thread) over the span
    peak_rss_mb: float  # VmHWM at the end
    startup_s: float  # spawn -> first progress: imports, group join, first fetch
    all_inputs_s: float  # first progress -> every input topic progressing (staggered consumers show here)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def readings_per_s(self) -> float:
        return self.span_readings / self.elapsed_s

    @property
    def messages_per_s(self) -> float:
        return self.span_messages / self.elapsed_s

    @property
    def cpu_us_per_reading(self) -> float:
        return self.cpu_s / self.span_readings * 1e6

    @property
    def cores(self) -> float:
        """CPU-s per wall-s over the span: ~1 for a CPU-bound Python loop, well below 1
        for a process that waits (for the broker, a rebalance, a batch timer)."""
        return self.cpu_s / self.elapsed_s


class GroupAdmin:
    """Deletes this run's consumer groups at the end (confluent AdminClient)."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    def delete(self, groups: Sequence[str]) -> int:
        if not groups:
            return 0
        done = 0
        for fut in self.admin.delete_consumer_groups(list(groups), request_timeout=10).values():
            try:
                fut.result()
                done += 1
            except Exception:  # never formed, or members still leaving: nothing of ours to keep anyway
                pass
        return done


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the child's process group, SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def tail(path: Path, n: int = 1500) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@dataclass
class Harness:
    names: RunNames
    backlog: Backlog
    quix_python: Path
    deadline_s: float
    groups: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    live: list[subprocess.Popen[bytes]] = field(default_factory=list)
    topologies: dict[tuple[str, str], Path] = field(default_factory=dict)

    def spawn(self, cmd: list[str], env: dict[str, str], label: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        logs = self.names.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out, err = logs / f"{label}.out", logs / f"{label}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(cmd, stdout=o, stderr=e, env=env, cwd=REPO, start_new_session=True)
        self.live.append(proc)
        return proc, out, err

    def run(self, system: System, shape: str, repeat: int) -> Sample:
        return self.run_peer(system, shape, repeat) if system.script else self.run_cityops(system, shape, repeat)

    # -- peers

    def run_peer(self, system: System, shape: str, repeat: int) -> Sample:
        group = self.names.group(system.name, shape, repeat)
        self.groups.append(group)
        python = str(self.quix_python) if system.name == "quix" else sys.executable
        cmd = [python, str(PEERS / str(system.script)), "--bootstrap", self.names.bootstrap,
               "--topics", ",".join(self.names.inputs(shape).values()), "--group", group,
               "--alerts", self.names.alerts(shape), "--expected", str(self.backlog.total), "--shape", shape,
               "--deadline-s", str(self.deadline_s)]
        (self.names.workdir / "peer-data").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "BENCH_PEER_DATA": str(self.names.workdir / "peer-data"), "PYTHONUNBUFFERED": "1"}
        t_spawn = time.time()
        proc, out, err = self.spawn(cmd, env, group)
        try:
            proc.wait(self.deadline_s + 60)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{system.name} ({shape}) did not exit; log: {err}") from None
        finally:
            stop_process(proc)
        res = next((json.loads(line.split(RESULT_PREFIX, 1)[1]) for line in out.read_text(errors="replace").splitlines()
                    if RESULT_PREFIX in line), None)  # Faust may put terminal escapes before it
        if res is None or not res.get("ok"):
            why = (res or {}).get("error") or f"exit code {proc.returncode}"
            raise BenchError(f"{system.name} ({shape}) failed: {why}\n{tail(err)}")
        firsts = res["topic_first"].values()
        all_in = max(firsts) - res["t_first"] if len(firsts) == len(self.names.base_topics) else float("nan")
        return Sample(system.name, shape, repeat, res["readings"], res["readings"], res["messages"],
                      res["t_done"] - res["t_first"], res["cpu_done_s"] - res["cpu_first_s"], res["rss_mb"],
                      res["t_first"] - t_spawn, all_in, {"alerts": res["alerts"], "versions": res["versions"]})

    # -- cityops

    def worker_env(self, group: str) -> dict[str, str]:
        (self.names.workdir / "worker-data").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CITYOPS_BOOTSTRAP": self.names.bootstrap, "CITYOPS_REDIS_URL": self.names.redis_url,
               "CITYOPS_APP_ID": group, "CITYOPS_NAMESPACE": group,
               "CITYOPS_DATA_DIR": str(self.names.workdir / "worker-data" / group)}
        for name in ("CITYOPS_WEBHOOK_URL", "CITYOPS_CAP_URL", "CITYOPS_WEB_PORT", "CITYOPS_TOPOLOGY", "CITYOPS_DELIVERY"):
            env.pop(name, None)  # receivers off: this is about the stream, not HTTP
        return env

    def start_worker(self, topology: Path, group: str,
                     processes: int = 1) -> tuple[subprocess.Popen[bytes], Path, Metrics]:
        # the worker's consumer groups, one per kind (Settings.consumer_group)
        self.groups.extend(f"{group}.{kind}" for kind in load_topology(topology).spec.kinds)
        self.namespaces.append(group)
        port = free_ports(processes)
        cityops = str(Path(sys.executable).with_name("cityops"))
        cmd = [cityops, "worker", "--topology", str(topology), "--web-port", str(port), "--loglevel", "warning"]
        if processes > 1:  # process i serves port + i
            cmd += ["--processes", str(processes)]
        proc, _, err = self.spawn(cmd, self.worker_env(group), group)
        return proc, err, Metrics(port, proc, err, len(self.names.base_topics), processes)

    def run_cityops(self, system: System, shape: str, repeat: int) -> Sample:
        key = (system.name, shape)
        if key not in self.topologies:
            self.topologies[key] = self.names.topology_copy(system.topology or REPO / "topology.yaml", shape, system.name)
        group = self.names.group(system.name, shape, repeat)
        t_spawn = time.time()
        proc, _, metrics = self.start_worker(self.topologies[key], group, system.processes)
        try:
            first, last = metrics.drain(self.backlog.total, self.deadline_s)
            rss = sum(peak_rss_mb(pid) for pid in family(proc.pid))
        finally:
            stop_process(proc)
        return Sample(system.name, shape, repeat, int(last.readings), int(last.readings - first.readings),
                      int(last.messages - first.messages), last.t - first.t, last.cpu_s - first.cpu_s, rss,
                      first.t - t_spawn, metrics.all_kinds_at - first.t, {"alerts": last.alerts, "readings_at_first_count": first.readings,
                                          "metric_polls": metrics.polls,
                                          "progress": [(round(t - t_spawn, 3), n) for t, n in metrics.series]})


@dataclass(frozen=True)
class Counts:
    t: float  # wall time of the scrape
    readings: float
    kinds: dict[str, float]  # readings per kind
    messages: float
    alerts: float
    cpu_s: float  # the worker's CPU right after the scrape


@dataclass
class Metrics:
    """A worker's /metrics, summed over label sets."""

    port: int
    proc: subprocess.Popen[bytes]
    err: Path
    n_kinds: int
    processes: int = 1  # worker processes serving port, port + 1, ...
    polls: int = 0
    series: list[tuple[float, float]] = field(default_factory=list)  # (wall time, readings) per poll
    all_kinds_at: float = float("nan")  # the first scrape where every kind had counted readings

    def scrape(self) -> Counts:
        sums: dict[str, float] = {}
        kinds: dict[str, float] = {}
        text = "\n".join(self.texts())
        t = time.time()
        self.polls += 1
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name_labels, value = line.rsplit(" ", 1)
                name, _, labels = name_labels.partition("{")
                sums[name] = sums.get(name, 0.0) + float(value)
                if name == "cityops_readings_total":
                    kind = next((x.split("=", 1)[1].strip('"') for x in labels.rstrip("}").split(",")
                                 if x.startswith("kind=")), "")
                    kinds[kind] = kinds.get(kind, 0.0) + float(value)
        if math.isnan(self.all_kinds_at) and sum(1 for v in kinds.values() if v > 0) >= self.n_kinds:
            self.all_kinds_at = t
        try:
            cpu_s = sum(proc_cpu_s(pid) for pid in family(self.proc.pid))
        except OSError:  # the worker is gone: say so, with its log (one run failed here with a bare /proc error)
            self.alive()
            raise
        return Counts(t, sums.get("cityops_readings_total", 0.0), kinds, sums.get("cityops_messages_total", 0.0),
                      sums.get("cityops_alerts_total", 0.0), cpu_s)

    def texts(self) -> list[str]:
        """Every worker process's /metrics ("" for one not serving yet)."""
        out = []
        for port in range(self.port, self.port + self.processes):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    out.append(resp.read().decode())
            except OSError:
                out.append("")
        return out

    def stages(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(kind, stage) -> (seconds, batches) so far, from cityops_stage_seconds (its "sink:<step>"
        stages say which sink step holds batches up)."""
        out: dict[tuple[str, str], tuple[float, float]] = {}
        for line in "\n".join(self.texts()).splitlines():
            for suffix, slot in (("_sum", 0), ("_count", 1)):
                if line.startswith(f"cityops_stage_seconds{suffix}{{"):
                    labels, value = line[line.index("{") + 1:].rsplit("} ", 1)
                    parts = dict(x.split("=", 1) for x in labels.split(","))
                    key = (parts["kind"].strip('"'), parts["stage"].strip('"'))
                    pair = list(out.get(key, (0.0, 0.0)))
                    pair[slot] += float(value)  # summed over the worker processes
                    out[key] = (pair[0], pair[1])
        return out

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"the worker exited ({self.proc.returncode})\n{tail(self.err)}")

    def drain(self, expected: int, deadline_s: float, already: float = 0.0) -> tuple[Counts, Counts]:
        """(first scrape with progress past ``already``, first with ``expected`` readings).
        Polls every 50 ms until the first progress; then, since a scrape costs the worker CPU,
        sparsely (0.5 s) while much is left and every 50 ms near the end, from the rate so far,
        so the end is known to about 50 ms for a few dozen scrapes per run."""
        end = time.monotonic() + deadline_s
        first: Counts | None = None
        while time.monotonic() < end:
            self.alive()
            c = self.scrape()
            self.series.append((c.t, c.readings))
            if c.readings >= expected:
                return first or c, c
            if first is None:
                first = c if c.readings > already else None
                time.sleep(0.05)
                continue
            rate = (c.readings - first.readings) / (c.t - first.t) if c.t > first.t else 0.0
            left_s = (expected - c.readings) / rate if rate > 0 else float("inf")
            time.sleep(min(0.5, max(0.05, left_s / 3)))
        raise BenchError(f"cityops_readings_total did not reach {expected} within {deadline_s:.0f} s")


def family(pid: int) -> list[int]:
    """A process and its children (cityops worker --processes N is a parent of N workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


# ------------------------------------------------------------------ gas latency (open loop)


class AlertView(msgspec.Struct):
    alarm_key: str
    status: str
    event_time_ms: int
    detected_at: str  # when the worker's batch that raised it started (RFC 3339)


_ALERT = msgspec.json.Decoder(AlertView)
_ONE_OR_MANY = msgspec.json.Decoder(Reading | list[Reading])


@dataclass(frozen=True)
class Send:
    at: float  # planned wall time
    topic: str
    key: bytes
    value: bytes = b""  # background reading(s); empty for a probe (built at send time)
    probe: str = ""  # gas sensor of a probe
    lel: float = 0.0


@dataclass
class CityLoad:
    """The city's sensors (less the probe heads), offering ``rate`` readings/s split by
    ``mix``: each sensor's readings one step apart, the step set so its clock runs at about
    wall speed; bench_pipeline's message mix (10 % gateway arrays of 5-20, 0.5 % crossings)."""

    models: dict[str, list[Any]]  # kind -> bench_pipeline SensorModel
    topics: dict[str, str]
    rate: float
    mix: dict[str, float]
    rng: np.random.Generator

    def step_ms(self, kind: str) -> int:
        return max(1, round(1000 * len(self.models[kind]) / (self.rate * self.mix[kind])))

    def warm_up(self, now: float) -> list[Send]:
        """One reading per sensor, just before ``now``: every sensor known before the timing."""
        out = []
        for kind in self.mix:
            step = self.step_ms(kind)
            factory = MessageFactory(self.models[kind], self.rng, int(now * 1000) - step, step)
            out += [Send(now, self.topics[kind], m.key or b"", m.value) for m in factory.one_each()]
        return out

    def plan(self, start: float, duration: float) -> tuple[list[Send], int]:
        """Messages with their send time, the newest event time they carry (a gateway
        sends an array once its last reading is taken); and how many readings."""
        sends, n = [], 0
        for kind in self.mix:
            step = self.step_ms(kind)
            factory = MessageFactory(self.models[kind], self.rng, int(start * 1000), step, MessageMix())
            while True:
                msgs, _, _ = factory.batch(max(len(self.models[kind]), 64))
                for m in msgs:
                    value = _ONE_OR_MANY.decode(m.value)
                    readings = value if isinstance(value, list) else [value]
                    at = max(event_ms(r.ts) for r in readings) / 1000
                    if at < start + duration:
                        sends.append(Send(at, self.topics[kind], m.key or b"", m.value))
                        n += len(readings)
                if min(factory._next_ms) / 1000 >= start + duration:  # every sensor's clock is past the end
                    break
        return sends, n


def probes(topic: str, sensors: Sequence[str], start: float, duration: float, per_s: float,
           rng: np.random.Generator) -> list[Send]:
    """Poisson crossings of 30 %LEL on the probe sensors, each cleared with 1 %LEL 0.5-1.5 s
    later; a sensor fires again only after its clear (so every crossing is a new firing)."""
    out: list[Send] = []
    free_at = dict.fromkeys(sensors, 0.0)
    t = start + float(rng.exponential(1 / per_s))
    while t < start + duration - 2.0:
        sid = min(free_at, key=lambda s: free_at[s])
        if free_at[sid] <= t:
            clear = t + float(rng.uniform(0.5, 1.5))
            out += [Send(t, topic, sid.encode(), probe=sid, lel=30.0), Send(clear, topic, sid.encode(), probe=sid, lel=1.0)]
            free_at[sid] = clear + 0.2
        t += float(rng.exponential(1 / per_s))
    return out


def gas_reading(sensor_id: str, lel: float, ts_ms: int) -> bytes:
    return json.dumps({"sensor_id": sensor_id, "ts": ts_ms, "values": {"gas_lel": lel}, "flag": "N"}).encode()


async def send_now(bootstrap: str, sends: Sequence[Send]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for s in sends:
            await producer.send(s.topic, s.value, key=s.key)
        await producer.flush()
    finally:
        await producer.stop()


async def open_loop(bootstrap: str, alerts_topic: str, partitions: int, plan: Sequence[Send],
                    settle_s: float) -> dict[str, Any]:
    """Send ``plan`` at its planned times whatever the worker does (open loop); read the
    alerts topic meanwhile and time each probe's send -> its ``firing`` alert read back."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    bulk = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    quick = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)  # the probes: no linger
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=20)
    await asyncio.gather(bulk.start(), quick.start(), consumer.start())
    sent: dict[tuple[str, int], float] = {}  # (alarm_key, event ms) -> send wall time
    latency: dict[tuple[str, int], float] = {}
    to_detect: list[float] = []  # send -> detected_at: waiting for and in the worker's batch
    seen = 0
    stop = asyncio.Event()

    async def read_alerts() -> None:
        nonlocal seen
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=20)
            now = time.time()
            for recs in batch.values():
                for rec in recs:
                    seen += 1
                    a = _ALERT.decode(rec.value)
                    key = (a.alarm_key, a.event_time_ms)
                    if a.status == "firing" and key in sent and key not in latency:
                        latency[key] = now - sent[key]
                        to_detect.append(datetime.fromisoformat(a.detected_at).timestamp() - sent[key])

    try:
        tps = [TopicPartition(alerts_topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolved before anything is sent
        reader = asyncio.create_task(read_alerts())
        lag: list[float] = []
        t_begin = time.time()
        for s in plan:
            delay = s.at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lag.append(time.time() - s.at)
            if s.probe:
                ts_ms = time.time_ns() // 1_000_000
                if s.lel >= GAS_SETPOINT:
                    sent[(f"{s.probe}:gas_lel_alarm", ts_ms)] = time.time()
                await quick.send(s.topic, gas_reading(s.probe, s.lel, ts_ms), key=s.key)
            else:
                await bulk.send(s.topic, s.value, key=s.key)
        await asyncio.gather(bulk.flush(), quick.flush())
        t_sent = time.time()
        end = time.monotonic() + settle_s
        while len(latency) < len(sent) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        stop.set()
        await reader
    finally:
        await asyncio.gather(bulk.stop(), quick.stop(), consumer.stop(), return_exceptions=True)
    lag_a = np.asarray(lag)
    return {"crossings": len(sent), "firing_alerts_matched": len(latency), "alerts_read": seen,
            "send_s": t_sent - t_begin, "send_lag_p99_ms": float(np.percentile(lag_a, 99) * 1e3),
            "send_lag_max_ms": float(lag_a.max() * 1e3), "latency_s": sorted(latency.values()),
            "send_to_detected_at_p50_ms": pct(to_detect, 50) * 1e3, "send_to_detected_at_p95_ms": pct(to_detect, 95) * 1e3}


def pct(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def gas_latency(h: Harness, topo_path: Path, a: argparse.Namespace, mix: dict[str, float]) -> dict[str, Any]:
    topo = load_topology(topo_path)
    rng = np.random.default_rng(a.seed + 1)
    heads = [s.sensor_id for s in topo.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS")]
    probe_ids = sorted(rng.choice(heads, min(a.probe_sensors, len(heads)), replace=False).tolist())
    models = {k: [m for m in sensor_models(topo, k, rng) if m.sensor_id not in probe_ids] for k in mix}
    city = CityLoad(models, {k: topo.kind(k).topic for k in mix}, a.latency_rate, mix, rng)
    hazmat = city.topics["hazmat"]
    proc, _, metrics = h.start_worker(topo_path, h.names.group("latency"))
    try:
        now = time.time()
        warm = city.warm_up(now) + [Send(now, hazmat, sid.encode(), gas_reading(sid, 1.0, int(now * 1000) - 1))
                                    for sid in probe_ids]
        asyncio.run(send_now(h.names.bootstrap, warm))
        metrics.drain(len(warm), 180)  # started, assigned, caught up, every sensor known
        start = time.time() + 3.0  # room to build the plan
        plan, n_city = city.plan(start, a.latency_s)
        plan += probes(hazmat, probe_ids, start + a.warmup_s, a.latency_s - a.warmup_s, a.probes_per_s, rng)
        plan.sort(key=lambda s: s.at)
        n_sent = len(warm) + n_city + sum(1 for s in plan if s.probe)
        before, stages0 = metrics.scrape(), metrics.stages()
        res = asyncio.run(open_loop(h.names.bootstrap, topo.spec.topics.alerts, h.names.partitions, plan, 15.0))
        busy, stages1 = metrics.scrape(), metrics.stages()
        try:
            counted = metrics.drain(n_sent, 60)[1]
        except BenchError:  # some reading not counted: say so in the result, keep the latencies
            counted = metrics.scrape()
    finally:
        stop_process(proc)
    lat = res.pop("latency_s")
    return {**res, "offered_readings_per_s": n_city / a.latency_s, "duration_s": a.latency_s,
            "readings_sent": n_sent, "readings_counted": counted.readings, "probe_sensors": probe_ids,
            "worker_cores": (busy.cpu_s - before.cpu_s) / (busy.t - before.t),
            "alarm_events": busy.alerts - before.alerts,
            "p50_ms": pct(lat, 50) * 1e3, "p95_ms": pct(lat, 95) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
            "max_ms": max(lat, default=float("nan")) * 1e3, "latency_ms": [x * 1e3 for x in lat],
            "stages": stage_means(stages0, stages1)}


def stage_means(before: dict[tuple[str, str], tuple[float, float]],
                after: dict[tuple[str, str], tuple[float, float]]) -> dict[str, dict[str, Any]]:
    """Per kind over the window: batches, and mean ms per batch of each stage."""
    out: dict[str, dict[str, Any]] = {}
    for (kind, stage), (total, n) in sorted(after.items()):
        t0, n0 = before.get((kind, stage), (0.0, 0.0))
        if n - n0 > 0:
            row = out.setdefault(kind, {"batches": 0.0, "mean_ms": {}})
            row["batches"] = max(row["batches"], n - n0)
            row["mean_ms"][stage] = (total - t0) / (n - n0) * 1e3
    return out


# ------------------------------------------------------------------ report


def summarise(samples: Sequence[Sample], systems: Sequence[System], shapes: Sequence[str]) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for shape in shapes:
        for sys_ in systems:
            ss = [s for s in samples if s.system == sys_.name and s.shape == shape]
            if not ss:
                continue
            rate = [s.readings_per_s for s in ss]
            rows[f"{shape}/{sys_.name}"] = {
                "shape": shape, "system": sys_.name, "what": sys_.what, "n": len(ss),
                "readings_per_s": statistics.median(rate), "readings_per_s_min": min(rate), "readings_per_s_max": max(rate),
                "messages_per_s": statistics.median(s.messages_per_s for s in ss),
                "cpu_us_per_reading": statistics.median(s.cpu_us_per_reading for s in ss),
                "cores": statistics.median(s.cores for s in ss),
                "peak_rss_mb": statistics.median(s.peak_rss_mb for s in ss),
                "startup_s": statistics.median(s.startup_s for s in ss),
                "all_inputs_s": statistics.median(s.all_inputs_s for s in ss),
            }
    return rows


def ratios(samples: Sequence[Sample], shapes: Sequence[str]) -> dict[str, Any]:
    """Per round (the two runs closest in time), then the median over rounds."""
    out: dict[str, Any] = {}
    by = {(s.system, s.shape, s.repeat): s for s in samples}
    for num, den in RATIOS:
        for shape in shapes:
            pairs = [(by[(num, shape, r)], by[(den, shape, r)]) for (sn, sh, r) in by
                     if sn == num and sh == shape and (den, shape, r) in by]
            if not pairs:
                continue
            speed = [a.readings_per_s / b.readings_per_s for a, b in pairs]
            cpu = [b.cpu_us_per_reading / a.cpu_us_per_reading for a, b in pairs]
            out[f"{num}/{den}/{shape}"] = {"numerator": num, "denominator": den, "shape": shape, "n": len(pairs),
                                           "readings_per_s": statistics.median(speed), "min": min(speed), "max": max(speed),
                                           "readings_per_cpu_s": statistics.median(cpu)}
    return out


def print_table(rows: dict[str, Any], rats: dict[str, Any], shapes: Sequence[str], backlog: Backlog) -> None:
    print(f"\n{'shape':<8} {'system':<15} {'readings/s  median [min-max]':>31} {'msgs/s':>9} "
          f"{'CPU µs/reading':>14} {'cores':>5} {'peak RSS MB':>11} {'startup s':>9} {'all in s':>8}  what")
    for shape in shapes:
        print(f"-- {shape}: {backlog.total:,} readings in {backlog.messages(shape):,} messages")
        for r in (r for r in rows.values() if r["shape"] == shape):
            span = f"{r['readings_per_s']:>9,.0f} [{r['readings_per_s_min']:,.0f}-{r['readings_per_s_max']:,.0f}]"
            print(f"{shape:<8} {r['system']:<15} {span:>31} {r['messages_per_s']:>9,.0f} "
                  f"{r['cpu_us_per_reading']:>14.2f} {r['cores']:>5.2f} {r['peak_rss_mb']:>11.0f} "
                  f"{r['startup_s']:>9.1f} {r['all_inputs_s']:>8.2f}  {r['what']}")
    print("cores: CPU-s per wall-s over the span (~1: a CPU-bound Python loop; well below: waiting). startup: spawn ->"
          " first progress. all in: first progress -> every input topic progressing.")
    print(f"\n{'ratio (median of per-round ratios)':<36} {'shape':<8} {'readings/s [min-max]':>22} {'readings per CPU-s':>19}")
    for r in rats.values():
        label = f"{r['numerator']} / {r['denominator']}"
        span = f"{r['readings_per_s']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"
        print(f"{label:<36} {r['shape']:<8} {span:>22} {r['readings_per_cpu_s']:>18.2f}x")


def print_latency(lat: dict[str, Any]) -> None:
    print(f"\ngas latency: cityops full topology, open loop {lat['offered_readings_per_s']:,.0f} readings/s offered for "
          f"{lat['duration_s']:.0f} s (sender lag p99 {lat['send_lag_p99_ms']:.0f} ms); worker {lat['worker_cores']:.2f} cores, "
          f"{lat['alarm_events']:.0f} alarm events")
    print(f"  gas reading crossing 25 %LEL sent -> its firing alert read back ({lat['firing_alerts_matched']} of "
          f"{lat['crossings']} crossings): p50 {lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms, "
          f"p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms")
    print(f"  sent -> the alert's detected_at (its batch's start in the worker): p50 "
          f"{lat['send_to_detected_at_p50_ms']:.0f} ms, p95 {lat['send_to_detected_at_p95_ms']:.0f} ms")
    for kind, row in lat.get("stages", {}).items():
        means = ", ".join(f"{stage} {ms:.1f}" for stage, ms in row["mean_ms"].items())
        print(f"  {kind:<8} {row['batches']:.0f} batches; mean ms per batch: {means}")


# ------------------------------------------------------------------ clean-up


def cleanup(h: Harness | None, names: RunNames, keep: bool) -> None:
    for proc in h.live if h else []:
        stop_process(proc, 5.0)
    if keep:
        print(f"# kept topics *{names.suffix}*, groups and Redis namespaces cmp-{names.suffix}-*, files in {names.workdir}")
        return
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": names.bootstrap})
    ours = [t for t in admin.list_topics(timeout=10).topics if names.suffix in t]
    for fut in admin.delete_topics(ours, operation_timeout=30).values() if ours else []:
        try:
            fut.result()
        except Exception as exc:  # report, keep cleaning
            print(f"# could not delete a topic: {exc}", file=sys.stderr)
    groups = GroupAdmin(names.bootstrap).delete(h.groups) if h else 0
    keys = delete_namespaces(names.redis_url, f"cityops:cmp-{names.suffix}-")
    shutil.rmtree(names.workdir, ignore_errors=True)
    print(f"# cleaned up: {len(ours)} topics, {groups} consumer groups, {keys} Redis keys, {names.workdir}")


def delete_namespaces(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        n = 0
        for chunk in _chunks(client.scan_iter(match=f"{prefix}*", count=1000), 500):
            n += int(client.unlink(*chunk))
        return n
    finally:
        client.close()


def _chunks(it: Iterator[Any], n: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for x in it:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readings", type=int, default=200_000, help="readings per shape (default 200000)")
    p.add_argument("--gateway-size", type=int, default=50, help="readings per gateway array (default 50)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; medians are quoted (default 3)")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"share of readings per kind (default {DEFAULT_MIX})")
    p.add_argument("--systems", default=",".join(s.name for s in SYSTEMS), help="comma-separated subset")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset of gateway,single")
    p.add_argument("--latency-s", type=float, default=60.0, help="gas latency phase length (0: skip; default 60)")
    p.add_argument("--latency-rate", type=float, default=2000.0, help="offered readings/s in that phase (default 2000)")
    p.add_argument("--probes-per-s", type=float, default=4.0, help="gas crossings per second (Poisson; default 4)")
    p.add_argument("--probe-sensors", type=int, default=16, help="gas heads that cross (default 16)")
    p.add_argument("--warmup-s", type=float, default=5.0, help="load before the first crossing (default 5)")
    p.add_argument("--deadline-s", type=float, default=240.0, help="give up on one run after this (default 240)")
    p.add_argument("--quix-python", type=Path, default=QUIX_PYTHON, help="python of the Quix Streams venv")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep topics, groups, Redis keys and logs")
    a = p.parse_args(argv)
    unknown = set(a.systems.split(",")) - {s.name for s in SYSTEMS} | set(a.shapes.split(",")) - set(SHAPES)
    if unknown or a.repeats < 1 or a.readings < a.gateway_size:
        p.error(f"bad --systems/--shapes {sorted(unknown)}" if unknown else "need --repeats >= 1, --readings >= --gateway-size")
    return a


def source_state() -> dict[str, Any]:
    """Which worker code is measured: the commit, and files changed but not committed."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.rstrip("\n")

    dirty = git("status", "--porcelain", "--", "streams", "detectors", "sinks").splitlines()
    return {"commit": git("rev-parse", "HEAD") or "unknown", "uncommitted": [ln[3:] for ln in dirty]}


def preflight(a: argparse.Namespace, systems: Sequence[System]) -> stack.StackConfig:
    cfg = stack.StackConfig.from_env(root=REPO / ".stack")
    status = stack.status(cfg)
    if not status.all_running:
        raise BenchError(f"the local stack is not running:\n{status}\nstart it with `.venv/bin/cityops stack up` (or `make bench`)")
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise BenchError("confluent-kafka is missing: `.venv/bin/pip install -e '.[bench]'` (or `make bench`)") from None
    if any(s.name == "quix" for s in systems) and not a.quix_python.exists():
        raise BenchError(f"the Quix Streams peer needs its own venv at {a.quix_python} "
                         "(`make bench` builds it from loadtest/peers/quix-requirements.txt); or leave out --systems quix")
    check_one_route()
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    systems = [s for s in SYSTEMS if s.name in a.systems.split(",")]
    shapes = [s for s in SHAPES if s in a.shapes.split(",")]
    try:
        cfg = preflight(a, systems)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    topo = load_topology(REPO / "topology.yaml")
    suffix = uuid.uuid4().hex[:8]
    names = RunNames(suffix, Path(tempfile.mkdtemp(prefix=f"cityops-cmp-{suffix}-")), cfg.bootstrap, cfg.redis_url,
                     topo.spec.topics.partitions, {k: topo.kind(k).topic for k in topo.spec.kinds})
    result: dict[str, Any] = {"argv": sys.argv[1:], "environment": {
        **environment("not pinned: every process shares all cores"), "kafka": cfg.kafka_version,
        "confluent-kafka": metadata.version("confluent-kafka"), "loadavg_before": os.getloadavg()},
        "cityops_source": source_state()}
    src = result["cityops_source"]
    print(f"# cityops at {src['commit'][:10]}" + (f", with {len(src['uncommitted'])} uncommitted files under "
          f"streams/ detectors/ sinks/ (measured as they are)" if src["uncommitted"] else ""), flush=True)
    h: Harness | None = None
    t_start = time.monotonic()
    try:
        h = prepare(a, names, topo, shapes)
        result |= measure(a, h, systems, shapes)
        if a.latency_s > 0:
            lat_topo = names.topology_copy(REPO / "topology.yaml", "lat", "latency")
            print(f"# gas latency: {a.latency_rate:,.0f} readings/s offered for {a.latency_s:.0f} s ...", flush=True)
            result["gas_latency"] = gas_latency(h, lat_topo, a, parse_mix(a.mix))
            print_latency(result["gas_latency"])
    except (BenchError, stack.StackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # e.g. the broker went away mid-run: one line, no traceback (BENCH_DEBUG=1 for it)
        if os.environ.get("BENCH_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc} (BENCH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    finally:
        try:
            cleanup(h, names, a.keep)
        except Exception as exc:  # the stack went away meanwhile: say so, no traceback
            print(f"# clean-up incomplete ({exc}); topics/keys carry the suffix {suffix}", file=sys.stderr)
    result |= {"wall_s": time.monotonic() - t_start, "loadavg_after": os.getloadavg()}
    print(f"# total {result['wall_s'] / 60:.1f} min; load average now {os.getloadavg()[0]:.1f} "
          "(the machine is shared: compare the ratios of one run, not absolute figures across runs)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1))
        print(f"# wrote {a.json}")
    return 0


def prepare(a: argparse.Namespace, names: RunNames, topo: Topology, shapes: Sequence[str]) -> Harness:
    t0 = time.monotonic()
    backlog = build_backlog(topo, a.readings, parse_mix(a.mix), a.gateway_size, a.seed)
    print(f"# built {backlog.total:,} readings {backlog.readings}: "
          + ", ".join(f"{s} {backlog.messages(s):,} messages" for s in shapes) + f" ({time.monotonic() - t0:.1f} s)", flush=True)
    stack.ensure_topics(names.bootstrap, names.all_topics([*shapes, *(["lat"] if a.latency_s > 0 else [])]))
    for shape in shapes:
        secs = produce(names.bootstrap, names.inputs(shape), backlog.records[shape])
        print(f"# pre-loaded {shape} in {secs:.1f} s (acks=all)", flush=True)
    return Harness(names, backlog, a.quix_python, a.deadline_s)


def measure(a: argparse.Namespace, h: Harness, systems: Sequence[System], shapes: Sequence[str]) -> dict[str, Any]:
    samples: list[Sample] = []
    for r in range(a.repeats):
        order = [*systems[r % len(systems):], *systems[: r % len(systems)]]  # rotate: no system always first
        for shape in shapes:
            for system in order:
                s = h.run(system, shape, r)
                samples.append(s)
                print(f"# round {r + 1}/{a.repeats} {shape:<7} {system.name:<15} {s.readings_per_s:>9,.0f} readings/s "
                      f"{s.messages_per_s:>8,.0f} msgs/s {s.cpu_us_per_reading:>6.2f} µs CPU/reading {s.cores:.2f} cores "
                      f"{s.peak_rss_mb:>5.0f} MB (span {s.elapsed_s:.2f} s, startup {s.startup_s:.1f} s, all inputs +{s.all_inputs_s:.2f} s)",
                      flush=True)
    rows, rats = summarise(samples, systems, shapes), ratios(samples, shapes)
    print_table(rows, rats, shapes, h.backlog)
    return {"readings": h.backlog.total, "per_kind": h.backlog.readings, "gateway_size": a.gateway_size,
            "messages": {s: h.backlog.messages(s) for s in shapes}, "repeats": a.repeats,
            "table": rows, "ratios": rats, "samples": [asdict(s) for s in samples]}


if __name__ == "__main__":
    raise SystemExit(main())
