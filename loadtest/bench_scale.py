"""Worker throughput and memory by number of sensors: 1k, 10k, 100k, 1M.

Kafka (127.0.0.1:9092) and Redis (6379) must be running (`cityops stack up`), and
confluent-kafka must be in the venv (`.venv/bin/pip install -e '.[bench]'`). Every topic,
consumer group and Redis namespace carries this run's suffix and is removed after each case
(``--keep`` keeps them).

Per kind of ``--kinds`` and per count of ``--sensors``: a copy of topology.yaml (all
detectors and routes of every kind, receivers off) on the case's own topics, with
``input.max_unknown_sensors`` raised to ``--max-unknown``, so sensors beyond the catalog
(``BENCH-<KIND>-<i>``) are tracked like catalog ones, with the kind's defaults. Every sensor
sends ``--readings-per-sensor`` readings (more for the small cases, so that every case has at
least ``--min-readings``), one reporting period apart and ending before now, values in
bench_pipeline's normal ranges for the kind. They travel as gateway uploads: a gateway is
``--gateway-size`` sensors, and each upload is a JSON array with one reading of each of its
sensors, keyed by the gateway (so its uploads stay in order on one partition); uploads go
round by round. The backlog is pre-loaded, then a real `cityops worker` drains it.

Reported per case: readings/s from the first counted reading to the last (/metrics
``cityops_readings_total``, counted once a batch's outputs are durable), the worker's peak
RSS (VmHWM) and CPU, ``cityops_detector_state_bytes`` (checkpoint record x sensors) and
``cityops_sensors_tracked``, the Redis memory of the case's namespace (MEMORY USAGE of its
keys: the per-sensor checkpoint hash), and, unless ``--no-restart``, how long a restarted
worker takes to restore that state and count one new upload.

    .venv/bin/python loadtest/bench_scale.py [--sensors 1000,10000,100000,1000000] [--kinds hazmat]
        [--readings-per-sensor 5] [--min-readings 500000] [--gateway-size 50] [--json OUT] [--keep]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import asyncio
import json
import math
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(REPO), str(REPO / "loadtest")) if p not in sys.path]

from bench_e2e import Worker, delete_topics, free_port, isolated_topology, wait_until  # noqa: E402
from bench_latency import (  # noqa: E402
    BenchError,
    CpuMark,
    code_version,
    cpu_between,
    delete_groups,
    jsonable,
    kafka_conf,
    machine_snapshot,
    preflight,
    proc_cpu_s,
    proc_mem_mb,
    worker_log_findings,
)
from bench_pipeline import environment, sensor_models  # noqa: E402

from streams import stack  # noqa: E402
from streams.topology import Topology, load_topology  # noqa: E402

DEFAULT_SENSORS = "1000,10000,100000,1000000"
DEFAULT_JSON = REPO / ".stack" / "bench" / "scale.json"
POLL_S = 0.25  # /metrics period while draining: a scrape costs the worker a few ms of CPU


# ------------------------------------------------------------------ the backlog


@dataclass(frozen=True)
class Plan:
    kind: str
    sensors: int
    rounds: int  # readings per sensor
    gateway_size: int

    @property
    def readings(self) -> int:
        return self.sensors * self.rounds

    @property
    def gateways(self) -> int:
        return math.ceil(self.sensors / self.gateway_size)


def reading_format(topo: Topology, kind: str) -> tuple[str, list[tuple[float, float]]]:
    """A %-format for one reading of an unknown sensor of ``kind`` (sensor id, epoch ms, then
    one value per quantity) and each quantity's normal range (bench_pipeline's model of a
    sensor without catalog limits)."""
    model = sensor_models(topo, kind, np.random.default_rng(0), n_unknown=1)[0]
    values = ",".join(f'"{q}":%.2f' for q in model.normal)
    return '{"sensor_id":"%s","ts":%d,"values":{' + values + '},"flag":"N"}', list(model.normal.values())


def uploads(topo: Topology, plan: Plan, seed: int) -> Iterator[tuple[bytes, bytes, int]]:
    """(gateway key, JSON array, readings) round by round: each round every gateway uploads
    one reading of each of its sensors. Sensor s reads at phase[s] + r * period, the last
    round a period before now."""
    rng = np.random.default_rng(seed)
    fmt, ranges = reading_format(topo, plan.kind)
    prefix = f"BENCH-{plan.kind.upper()}-"
    ids = [f"{prefix}{i:07d}" for i in range(plan.sensors)]
    period_ms = int(topo.kind(plan.kind).expected_period_s * 1000)
    start_ms = time.time_ns() // 1_000_000 - (plan.rounds + 1) * period_ms
    phase = rng.integers(0, period_ms, plan.sensors)
    lo, hi = np.asarray([r[0] for r in ranges]), np.asarray([r[1] for r in ranges])
    g = plan.gateway_size
    for r in range(plan.rounds):
        ts = (start_ms + r * period_ms + phase).tolist()
        values = np.round(rng.uniform(lo, hi, (plan.sensors, len(ranges))), 2).tolist()
        for first in range(0, plan.sensors, g):
            last = min(first + g, plan.sensors)
            body = ",".join([fmt % (ids[s], ts[s], *values[s]) for s in range(first, last)])
            yield f"GW-{plan.kind}-{first // g:06d}".encode(), ("[" + body + "]").encode(), last - first


def preload(bootstrap: str, topic: str, topo: Topology, plan: Plan, seed: int) -> dict[str, Any]:
    """Generate and send the uploads as they are made (1M sensors never sit in memory)."""
    from confluent_kafka import Producer

    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer({**kafka_conf(bootstrap, 20), "compression.type": "none", "message.max.bytes": 4_000_000})
    t0 = time.monotonic()
    readings = messages = size = 0
    for key, value, n in uploads(topo, plan, seed):
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        readings, messages, size = readings + n, messages + 1, size + len(value)
        if messages % 1000 == 0:
            producer.poll(0)
    if producer.flush(300) or errors:
        raise BenchError(f"pre-loading failed: {errors[:3] or 'undelivered records after 300 s'}")
    return {"readings": readings, "messages": messages, "mb": size / 1e6, "seconds": time.monotonic() - t0}


# ------------------------------------------------------------------ the worker


def scale_topology(workdir: Path, suffix: str, max_unknown: int) -> Topology:
    """topology.yaml on the case's own topics, with room for ``max_unknown`` unknown sensors."""
    topo = isolated_topology(workdir, suffix)
    data = yaml.safe_load(topo.path.read_text())
    data["input"]["max_unknown_sensors"] = max_unknown
    topo.path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return load_topology(topo.path)


def metric(worker: Worker, name: str, **labels: str) -> float:
    """Sum of ``name`` over the label sets that carry ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for (n, lab), v in worker.metrics().items() if n == name and all(w in lab for w in want))


@dataclass
class Drain:
    t_first: float
    t_done: float
    counted_first: float
    counted: float
    cpu_s: float
    peak_rss_mb: float


class Stalled(BenchError):
    """The worker stopped making progress (its log says why)."""


def drain(worker: Worker, kind: str, expected: int, deadline_s: float, stall_s: float) -> Drain:
    """Poll /metrics until ``expected`` readings of ``kind`` are counted (valid or dead-lettered);
    Stalled when the count has not moved for ``stall_s``."""
    pid = worker.proc.pid if worker.proc else None

    def counted() -> float:
        return metric(worker, "cityops_readings_total", kind=kind) + metric(worker, "cityops_deadletters_total", kind=kind)

    wait_until(lambda: worker.alive() and counted() > 0, deadline_s, "the first counted reading", 0.05)
    t_first, first, cpu0 = time.monotonic(), counted(), proc_cpu_s(pid)
    peak = proc_mem_mb(pid)
    end = time.monotonic() + deadline_s
    last_n, last_move = first, time.monotonic()
    while True:
        worker.alive()
        n = counted()
        now = time.monotonic()
        peak = max(peak, proc_mem_mb(pid))
        if n >= expected:
            return Drain(t_first, now, first, n, proc_cpu_s(pid) - cpu0, peak)
        if n > last_n:
            last_n, last_move = n, now
        elif now - last_move > stall_s:
            raise Stalled(f"{kind}: stuck at {n:,.0f} of {expected:,} readings for {stall_s:.0f} s (peak RSS {peak:,.0f} MB)")
        if now > end:
            raise BenchError(f"{kind}: {n:,.0f} of {expected:,} readings counted after {deadline_s:.0f} s")
        time.sleep(POLL_S)


def unlink_namespace(redis_url: str, namespace: str) -> int:
    """UNLINK the namespace's keys: Redis frees a GB-sized state hash in the background,
    where DEL would block the server (shared with everything else) for seconds."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=60)
    try:
        keys = list(client.scan_iter(match=f"cityops:{namespace}:*", count=1000))
        return sum(int(client.unlink(*keys[i:i + 500])) for i in range(0, len(keys), 500))
    finally:
        client.close()


def redis_bytes(redis_url: str, namespace: str) -> dict[str, int]:
    """MEMORY USAGE (all samples) of each key of the namespace, and the server's used_memory."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=60)
    try:
        keys = {k.decode(): int(client.memory_usage(k, samples=0) or 0) for k in client.scan_iter(match=f"cityops:{namespace}:*")}
        return {"namespace": sum(keys.values()), "largest_key": max(keys.values(), default=0),
                "keys": len(keys), "used_memory": int(client.info("memory")["used_memory"])}
    finally:
        client.close()


def restart(worker: Worker, bootstrap: str, topo: Topology, plan: Plan, seed: int, deadline_s: float) -> dict[str, float]:
    """Stop the worker and start it again on the same group and namespace; time until it has
    restored the kind's state and counted one new upload (sent once it is healthy)."""
    worker.stop()
    t0 = time.monotonic()
    worker.start()
    wait_until(lambda: worker.alive() and worker.get("/healthz") is not None, deadline_s, "worker /healthz", 0.05)
    t_healthy = time.monotonic()
    key, value, n = next(uploads(topo, Plan(plan.kind, min(plan.sensors, plan.gateway_size), 1, plan.gateway_size), seed))
    now_ms = time.time_ns() // 1_000_000  # newer than anything its sensors sent: not a late reading
    fresh = json.dumps([{**r, "ts": now_ms} for r in json.loads(value)]).encode()
    from confluent_kafka import Producer

    producer = Producer({**kafka_conf(bootstrap, 0), "log_level": 3})  # no notice about its idle background queue
    producer.produce(topo.kind(plan.kind).topic, value=fresh, key=key)
    producer.flush(30)
    # a new process: its counters start at 0
    wait_until(lambda: worker.alive() and metric(worker, "cityops_readings_total", kind=plan.kind) >= n,
               deadline_s, "the new upload after the restart", 0.05)
    pid = worker.proc.pid if worker.proc else None
    return {"spawn_to_healthy_s": t_healthy - t0, "spawn_to_new_upload_counted_s": time.monotonic() - t0,
            "rss_after_restore_mb": proc_mem_mb(pid), "peak_rss_after_restore_mb": proc_mem_mb(pid, "VmHWM")}


def record_bytes(topo: Topology, kind: str) -> int:
    """Bytes of one sensor's checkpoint record for ``kind`` (every detector's and route's state)."""
    from streams.checkpoint import KindCheckpoint
    from streams.pipeline import KindPipeline

    pipeline = KindPipeline(topo, kind)
    return int(KindCheckpoint("bench", kind, pipeline.stateful_parts(), pipeline.index).dtype.itemsize)


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return math.inf


def too_big(kind: str, n: int, done: Sequence[dict[str, Any]], share: float) -> str:
    """Why a case is not run ('' to run it): its worker peak RSS, extrapolated linearly in
    sensors from the two largest cases of the kind measured so far, plus its Redis state,
    would not fit in ``share`` of the machine's available memory (shared with other work)."""
    if len(done) < 2:
        return ""
    a, b = done[-2], done[-1]
    per_sensor_mb = (b["worker_peak_rss_mb"] - a["worker_peak_rss_mb"]) / (b["sensors"] - a["sensors"])
    worker_mb = b["worker_peak_rss_mb"] + per_sensor_mb * (n - b["sensors"])
    redis_mb = b["redis_namespace_mb"] / b["sensors"] * n
    budget = share * mem_available_mb()
    if worker_mb + redis_mb <= budget:
        return ""
    return (f"projected worker peak RSS {worker_mb / 1024:.1f} GB ({per_sensor_mb * 1024:.1f} kB per sensor beyond "
            f"{b['sensors']:,}) + Redis state {redis_mb / 1024:.1f} GB > {share:.0%} of MemAvailable ({budget / 1024:.1f} GB)")


def tail_lines(path: Path, n: int) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-n:] if path.exists() else []


# ------------------------------------------------------------------ one case


@dataclass
class Case:
    cfg: stack.StackConfig
    suffix: str
    workdir: Path
    a: argparse.Namespace

    def run(self, kind: str, n_sensors: int) -> dict[str, Any]:
        a = self.a
        rounds = max(a.readings_per_sensor, math.ceil(a.min_readings / n_sensors))
        plan = Plan(kind, n_sensors, rounds, a.gateway_size)
        label = f"{kind[:2]}{n_sensors}"
        d = self.workdir / label
        d.mkdir(parents=True, exist_ok=True)
        topo = scale_topology(d, f"{self.suffix}{label}", a.max_unknown)
        stack.ensure_topics(self.cfg.bootstrap, topo.all_topics())
        group = f"cityops-scale-{self.suffix}-{label}"
        env = {**os.environ, "CITYOPS_BOOTSTRAP": self.cfg.bootstrap, "CITYOPS_REDIS_URL": self.cfg.redis_url,
               "CITYOPS_APP_ID": group, "CITYOPS_NAMESPACE": group, "CITYOPS_WEB_PORT": str(free_port()),
               "CITYOPS_DATA_DIR": str(d / "worker-data")}
        for name in ("CITYOPS_WEBHOOK_URL", "CITYOPS_CAP_URL", "CITYOPS_TOPOLOGY", "CITYOPS_DELIVERY"):
            env.pop(name, None)
        worker = Worker(topo, env, d / "worker.log", int(env["CITYOPS_WEB_PORT"]))
        out: dict[str, Any] = {"kind": kind, "sensors": n_sensors, "readings_per_sensor": rounds,
                               "gateway_size": a.gateway_size}
        try:
            out["state_record_bytes"] = record_bytes(topo, kind)
            out["preload"] = preload(self.cfg.bootstrap, topo.kind(kind).topic, topo, plan, a.seed)
            redis_before = redis_bytes(self.cfg.redis_url, group)["used_memory"]
            mark0 = CpuMark.take()
            t_spawn = time.monotonic()
            worker.start()
            dr = drain(worker, kind, out["preload"]["readings"], a.deadline_s, a.stall_s)
            mark1 = CpuMark.take()
            pid = worker.proc.pid if worker.proc else None
            span = dr.t_done - dr.t_first
            time.sleep(2.5)  # the last batches' state reaches Redis with the next commit (at most 1 s later)
            rb = redis_bytes(self.cfg.redis_url, group)
            out |= {
                "spawn_to_first_count_s": dr.t_first - t_spawn, "drain_s": span,
                "readings_per_s": (dr.counted - dr.counted_first) / span if span > 0 else math.nan,
                "worker_cpu_s": dr.cpu_s, "worker_cores": dr.cpu_s / span if span > 0 else math.nan,
                "worker_peak_rss_mb": max(dr.peak_rss_mb, proc_mem_mb(pid, "VmHWM")),
                "worker_rss_end_mb": proc_mem_mb(pid),
                "state_bytes": metric(worker, "cityops_detector_state_bytes", kind=kind),
                "sensors_tracked": metric(worker, "cityops_sensors_tracked", kind=kind),
                "unknown_readings": metric(worker, "cityops_unknown_sensor_readings_total", kind=kind),
                "deadletters": metric(worker, "cityops_deadletters_total", kind=kind),
                "alerts": metric(worker, "cityops_alerts_total", kind=kind),
                "batches": metric(worker, "cityops_batch_messages_count", kind=kind),
                # where the drain's time went, from the worker's own histograms (seconds summed over batches)
                "stage_s": {stage: metric(worker, "cityops_stage_seconds_sum", kind=kind, stage=stage)
                            for stage in ("decode", "detect", "alarm", "sink", "sink:checkpoint")},
                "checkpoints": metric(worker, "cityops_stage_seconds_count", kind=kind, stage="sink:checkpoint"),
                "redis_namespace_mb": rb["namespace"] / 1e6, "redis_largest_key_mb": rb["largest_key"] / 1e6,
                "redis_used_memory_delta_mb": (rb["used_memory"] - redis_before) / 1e6,
                "cpu": cpu_between(mark0, mark1, {"worker": pid, "kafka": stack.status(self.cfg).kafka.pid,
                                                  "redis": stack.status(self.cfg).redis.pid, "bench": os.getpid()}),
            }
            if not a.no_restart:
                try:
                    out["restart"] = restart(worker, self.cfg.bootstrap, topo, plan, a.seed + 1, a.stall_s)
                except (TimeoutError, RuntimeError) as exc:  # the drain's figures stand; the restore did not
                    out["restart"] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        except (BenchError, TimeoutError, RuntimeError) as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            worker.stop()
            out["worker_log"] = worker_log_findings(worker.log_path)
            out["worker_log"]["last"] = [ln[:300] for ln in tail_lines(worker.log_path, 5)]
            if not a.keep:  # free Redis memory and the broker's disk before the next case
                asyncio.run(delete_topics(self.cfg.bootstrap, f"{self.suffix}{label}"))
                out["redis_keys_deleted"] = unlink_namespace(self.cfg.redis_url, group)
                delete_groups(self.cfg.bootstrap, [group])
        return out


# ------------------------------------------------------------------ report


HEADER = (f"{'kind':<7} {'sensors':>9} {'r/sensor':>8} {'readings':>10} {'readings/s':>10} {'drain_s':>7} "
          f"{'cores':>5} {'peakRSS':>8} {'state_MB':>8} {'B/sensor':>8} {'redis_MB':>8} {'ckpt_s':>6} {'restart_s':>9} {'others':>6}")


def print_row(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"{r['kind']:<7} {r['sensors']:>9,}  FAILED: {r['error']}\n  worker log ends: {r['worker_log']['last'][-3:]}",
              flush=True)
        return
    restart_s = r.get("restart", {}).get("spawn_to_new_upload_counted_s", math.nan)
    print(f"{r['kind']:<7} {r['sensors']:>9,} {r['readings_per_sensor']:>8} {r['preload']['readings']:>10,} "
          f"{r['readings_per_s']:>10,.0f} {r['drain_s']:>7.1f} {r['worker_cores']:>5.2f} {r['worker_peak_rss_mb']:>7.0f}M "
          f"{r['state_bytes'] / 1e6:>8.1f} {r['state_bytes'] / max(r['sensors_tracked'], 1):>8.0f} "
          f"{r['redis_namespace_mb']:>8.1f} {r['stage_s']['sink:checkpoint']:>6.1f} {restart_s:>9.1f} "
          f"{r['cpu']['others_cores']:>6.2f}", flush=True)
    if "error" in r.get("restart", {}):
        print(f"  restart FAILED: {r['restart']['error'][:300]}")
    if r["worker_log"]["flagged"]:
        print(f"  worker log: {r['worker_log']['flagged']} warning/error lines, first: {r['worker_log']['first'][:2]}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sensors", default=DEFAULT_SENSORS, help=f"sensor counts (default {DEFAULT_SENSORS})")
    p.add_argument("--kinds", default="air", help="kinds to measure, comma-separated (default air: the smallest "
                   "per-sensor state, 2.9 kB against hazmat's 9.1 kB, so the one that goes furthest)")
    p.add_argument("--readings-per-sensor", type=int, default=5, help="readings each sensor sends (default 5)")
    p.add_argument("--min-readings", type=int, default=500_000,
                   help="small cases send more rounds, to at least this many readings (default 500000)")
    p.add_argument("--gateway-size", type=int, default=50, help="readings per upload, one per sensor (default 50)")
    p.add_argument("--max-unknown", type=int, default=2_000_000, help="input.max_unknown_sensors of the copy (default 2000000)")
    p.add_argument("--deadline-s", type=float, default=600.0, help="give up on one drain after this")
    p.add_argument("--stall-s", type=float, default=60.0,
                   help="a case fails when the worker counts nothing new for this long (default 60)")
    p.add_argument("--no-restart", action="store_true", help="skip the restart (state restore) timing")
    p.add_argument("--memory-share", type=float, default=0.6,
                   help="skip a case whose projected worker peak RSS + Redis state exceeds this share of MemAvailable (default 0.6)")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"(default {DEFAULT_JSON.relative_to(REPO)})")
    p.add_argument("--keep", action="store_true", help="keep topics, Redis keys and logs")
    a = p.parse_args(argv)
    a.sensor_list = [int(float(s)) for s in a.sensors.split(",") if s.strip()]
    a.kind_list = [k.strip() for k in a.kinds.split(",") if k.strip()]
    if max(a.sensor_list) > a.max_unknown:
        p.error("--max-unknown must cover the largest --sensors")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        cfg = preflight()
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 2
    suffix = uuid.uuid4().hex[:10]
    workdir = Path(tempfile.mkdtemp(prefix=f"cityops-scale-{suffix}-"))
    others = machine_snapshot()
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(a).items()},
                              "environment": {**environment("not pinned (worker, Kafka, Redis share the cores)"),
                                              "kafka": cfg.kafka_version, "code": code_version(), "others_before": others},
                              "cases": []}
    print(f"# run {suffix} on {result['environment']['code']}: kinds {a.kind_list}, sensors {a.sensor_list}, gateway uploads of {a.gateway_size}; "
          f"load avg {os.getloadavg()}; busiest other processes: "
          + "; ".join(f"{o['cores']:.2f} cores {o['cmd'][:60]}" for o in others))
    print(HEADER + "   (ckpt_s: seconds the drain spent writing checkpoints to Redis; restart_s: spawn -> state "
                   "restored and a new upload counted; others: cores used by other processes)")
    case = Case(cfg, suffix, workdir, a)
    code = 0
    try:
        for kind in a.kind_list:
            done: list[dict[str, Any]] = []
            for n in a.sensor_list:
                why = too_big(kind, n, done, a.memory_share)
                if why:
                    r = {"kind": kind, "sensors": n, "skipped": why}
                    print(f"{kind:<7} {n:>9,}  skipped: {why}", flush=True)
                else:
                    r = case.run(kind, n)
                    print_row(r)
                result["cases"].append(r)
                if "error" in r or "skipped" in r:
                    break  # a larger count of the same kind would fail the same way, only worse
                done.append(r)
    except Exception as exc:  # the cases done so far are still written
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        result["error"] = f"{type(exc).__name__}: {exc}"
        code = 1
    finally:
        if not a.keep:
            deleted = asyncio.run(delete_topics(cfg.bootstrap, suffix))
            shutil.rmtree(workdir, ignore_errors=True)
            print(f"# cleaned up: {len(deleted)} leftover topics, {workdir}")
        else:
            print(f"# kept topics *{suffix}*, Redis namespaces cityops-scale-{suffix}-*, files {workdir}")
    result["environment"]["loadavg_after"] = os.getloadavg()
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(jsonable(result), indent=1))
    print(f"# wrote {a.json}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
