"""Alarm manager cost per batch against the real local Redis: events/s and added latency.

"The alarm manager" is what a worker does with a batch's alerts after Kafka has
them (streams/runtime.py ``Runtime._deliver``), in the same order, on one
Redis client:

1. ``RedisAlarmBoard.write_batch(alerts, {})`` - the live board (MULTI/EXEC);
2. ``AlarmStore.apply(alerts)`` - the lifecycle records (one Lua script);
3. ``Notifier.notify(alerts)`` - silences, inhibition (reads the board's
   per-site hashes), routing and enqueueing into the receivers' Redis outboxes.
   The notifier is ``build_notifier`` over the repository's topology.yaml with
   both receivers switched on (``CITYOPS_CAP_URL`` / ``CITYOPS_WEBHOOK_URL``
   pointing at a closed loopback port) and ``start()`` never called: nothing is
   POSTed, this measures enqueueing, not HTTP.

The JSONL archive (``JsonlArchive.write_batch``, one write + fsync per batch and
day file, in a fresh temporary directory) runs before them, as in the worker,
but is timed on its own and not counted in "steps 1-3".

Alerts are built like the pipeline's (streams/pipeline.py ``_alert``): catalog
sensors, sites, districts and coordinates; routes of topology.yaml with their
two highest levels (hazmat ``gas_lel_alarm`` on the gas heads, ``toxic_gas_alarm``
on heads with ``gas_ppm`` limits, ``tank_pressure_limit`` on tanks: major/orange
-> critical/red; air ``aqi_level`` and traffic ``road_incident_pair``: minor/yellow
-> major/orange); per-sensor thresholds from the catalog's limits; departments
as the pipeline picks them (route, else sensor, else kind); the pipeline's
deterministic ``alert_id``. Every alarm key cycles firing (lower level) ->
updated (escalation) -> resolved, with strictly increasing event times per key.
Each kind has its own event clock and picks the key of its next event at
random, so a batch holds events of many keys and sites (in steady state about
2/3 of the keys are live). A batch is of one kind, as in the worker; batches
rotate through ``--kinds`` (default hazmat, air, hazmat, traffic: half the
batches are hazmat, the ones that also go to the CAP receiver).

Method. One Redis namespace per run (``bench-<uuid8>``), deleted at the end
(SCAN ``cityops:<ns>:*`` + UNLINK). First ``--prefill`` untimed events in
batches of 1,000 (default 31,000: the alarm store's cleared history, 10,000
occurrences, is full, so every resolve also trims one old record, as in a
long-running city), then one untimed warm-up round, then ``--repeat`` timed
rounds. Each round runs one pass of every case (round-robin, so a burst of load
from other processes hits all cases alike): for a throughput size, about
``--events / --repeat`` fresh events (a whole number of kind rotations); for a
latency size (1 and 10), ``--latency-batches / --repeat`` batches. Every pass
continues the event stream, so nothing is a duplicate or stale to the store.
Each batch is built before it is timed; each step is timed with
``time.perf_counter`` around its ``await``.

Reported per batch size: events/s of steps 1-3 (events of the pass / summed
time of the three steps; median over the rounds with [min-max]), the same for
each step alone and for the archive, the client's CPU (main thread,
``time.thread_time``) and the Redis server's CPU (``INFO cpu``, deltas around
the pass) per event; and per batch: median and p95 ms of steps 1-3, of each
step and of the archive (all the batches of all rounds pooled). Finally an
empty batch: each step called with no alerts (what a batch without alarm
changes costs; they return before any Redis call).

Redis keeps growing during a run (nothing drains the outboxes: about 440 MB for
a default run of 115,000 events, all deleted at the end; with ``appendonly yes``
its AOF grows too, until Redis rewrites it). A default run takes about 2.5 min.

    .venv/bin/python loadtest/bench_alarms.py [--redis-url redis://127.0.0.1:6379/0] [--repeat 5]
        [--sizes 10,100,1000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sinks.alarm_store import AlarmStore  # noqa: E402
from sinks.archive import JsonlArchive  # noqa: E402
from sinks.base import Alert, Status  # noqa: E402
from sinks.notifier import Notifier  # noqa: E402
from sinks.redis_board import RedisAlarmBoard  # noqa: E402
from streams.catalog import SensorInfo  # noqa: E402
from streams.notifications import build_notifier  # noqa: E402
from streams.pipeline import alert_id  # noqa: E402
from streams.topology import Topology, load_topology  # noqa: E402
from streams.topology_spec import LevelSpec, RouteSpec  # noqa: E402

RECEIVER_ENV = {"CITYOPS_CAP_URL": "http://127.0.0.1:9/cap", "CITYOPS_WEBHOOK_URL": "http://127.0.0.1:9/hook"}
START_MS = 1_795_700_000_000  # 2026-11-26 (+08:00), like the other benchmarks; fixed, so alert ids are too
LATENCY_SIZES = (1, 10)
STEPS = ("board", "store", "notify")
# the code measured (no VCS here: a fingerprint of each file, taken before and after the run)
SOURCES = ("sinks/redis_board.py", "sinks/alarm_store.py", "sinks/notifier.py", "sinks/silences.py",
           "sinks/outbox.py", "sinks/cap_sink.py", "sinks/cap.py", "sinks/webhook.py", "sinks/archive.py",
           "streams/notifications.py", "topology.yaml")
# rule -> which of the kind's sensors it runs on (besides having the levels' catalog limits)
RULES: dict[str, list[tuple[str, Callable[[SensorInfo], bool]]]] = {
    "hazmat": [
        ("gas_lel_alarm", lambda s: "pressure_kpa.high" not in s.limits),  # the gas heads, not the tanks
        ("toxic_gas_alarm", lambda s: True),  # heads with gas_ppm limits
        ("tank_pressure_limit", lambda s: True),  # tanks with pressure limits
    ],
    "air": [("aqi_level", lambda s: True)],
    "traffic": [("road_incident_pair", lambda s: True)],
}


@dataclass(frozen=True, slots=True)
class Level:
    severity: str
    colour: str
    threshold: float


@dataclass(slots=True)
class AlarmKey:
    """One sensor x rule and where its lifecycle is (0 idle, 1 lower level, 2 upper level)."""

    sensor: SensorInfo
    route: RouteSpec
    quantity: str
    departments: list[str]
    levels: tuple[Level, Level]
    state: int = 0

    @property
    def key(self) -> str:
        return f"{self.sensor.sensor_id}:{self.route.rule}"


class KindStream:
    """An endless, ordered stream of one kind's alarm events (see the module docstring)."""

    def __init__(self, topology: Topology, kind: str, rng: random.Random) -> None:
        self.kind, self.rng = kind, rng
        self.tz = _offset(topology.spec.timezone)
        self.now_ms = START_MS
        kind_departments = list(topology.kind(kind).departments)
        routes = {r.rule: r for r in topology.spec.routes}
        measures = {d.name: str(d.params.get("quantity", "")) for d in topology.spec.detectors}
        measures |= {"aqi": "aqi", "road_pair": "incident_intervals"}  # their detectors' fixed measures
        self.keys: list[AlarmKey] = []
        for rule, takes in RULES[kind]:
            route = routes[rule]
            assert route.direction == "above" and len(route.levels) >= 2, rule
            for sensor in topology.catalog.by_kind(kind):
                lower, upper = (_level(lvl, sensor) for lvl in route.levels[-2:])
                if lower is None or upper is None or not takes(sensor):
                    continue
                departments = list(route.departments or sensor.departments or kind_departments)
                self.keys.append(AlarmKey(sensor, route, measures[route.detector], departments, (lower, upper)))
        if not self.keys:
            raise SystemExit(f"no alarm keys for kind {kind}")

    def take(self, n: int) -> list[Alert]:
        """The next ``n`` events, in event-time order."""
        out = []
        for _ in range(n):
            self.now_ms += self.rng.randint(1, 400)
            out.append(self._advance(self.rng.choice(self.keys), self.now_ms))
        return out

    def _advance(self, k: AlarmKey, event_ms: int) -> Alert:
        previous = k.state
        current = (previous + 1) % 3
        status: Status = "firing" if previous == 0 else ("updated" if current else "resolved")
        lower, upper = k.levels
        level = k.levels[(current or previous) - 1]
        u = self.rng.random()
        if current == 1:
            value = lower.threshold + (upper.threshold - lower.threshold) * (0.1 + 0.8 * u)
        elif current == 2:
            value = upper.threshold * (1.02 + 0.3 * u)
        else:  # back across the lower level by more than the deadband
            value = lower.threshold - k.route.deadband - abs(lower.threshold) * (0.05 + 0.4 * u)
        k.state = current
        s = k.sensor
        fields = {"rule": k.route.rule, "sensor_id": s.sensor_id, "site_id": s.site_id, "district": s.district,
                  "value": value, "threshold": level.threshold, "severity": level.severity, "status": status}
        return Alert(
            alert_id=alert_id(k.key, status, event_ms, previous, current), alarm_key=k.key, status=status,
            severity=level.severity, level=level.colour, rule=k.route.rule, kind=self.kind, sensor_id=s.sensor_id,
            site_id=s.site_id, district=s.district, lat=s.lat, lon=s.lon, quantity=k.quantity, value=value,
            threshold=level.threshold, score=value, event_ts=self._iso(event_ms), event_time_ms=event_ms,
            detected_at=self._iso(event_ms + self.rng.randint(40, 120)), departments=k.departments,
            summary=_summary(k.route, fields),
        )

    def _iso(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, self.tz).isoformat(timespec="milliseconds")


def _offset(text: str) -> timezone:
    sign = -1 if text.startswith("-") else 1
    hours, _, minutes = text.lstrip("+-").partition(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))


def _level(spec: LevelSpec, sensor: SensorInfo) -> Level | None:
    threshold = spec.at if spec.limit is None else sensor.limits.get(spec.limit)
    return None if threshold is None else Level(spec.severity.value, spec.severity.colour, float(threshold))


def _summary(route: RouteSpec, fields: dict[str, object]) -> str:
    """As streams/pipeline.py words it."""
    try:
        text = route.summary.format(**fields)
    except (KeyError, ValueError, IndexError):
        text = f"{route.rule} at {fields['site_id']}"
    word = {"firing": "", "updated": " (level changed)", "resolved": " (cleared)"}[str(fields["status"])]
    return f"[{fields['severity']}] {text}{word}"


@dataclass(frozen=True, slots=True)
class Case:
    size: int
    batches_per_pass: int
    throughput: bool  # a --sizes case (else only a latency size)

    @property
    def events_per_pass(self) -> int:
        return self.size * self.batches_per_pass


@dataclass
class CaseResult:
    size: int
    throughput: bool
    batches_per_pass: int
    passes: list[dict[str, float]] = field(default_factory=list)  # per round: events, seconds per step, CPU
    batches: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in (*STEPS, "archive")})

    def totals(self) -> list[float]:
        return [b + s + n for b, s, n in zip(self.batches["board"], self.batches["store"], self.batches["notify"],
                                             strict=True)]


class Bench:
    def __init__(self, client: aioredis.Redis, namespace: str, topology: Topology, archive_dir: Path,
                 kinds: Sequence[str], seed: int) -> None:
        self.client, self.namespace = client, namespace
        self.board = RedisAlarmBoard(client, namespace)
        self.store = AlarmStore(client, namespace)
        self.notifier: Notifier = build_notifier(topology, client, namespace, self.board, self.store,
                                                 env=RECEIVER_ENV)
        self.archive = JsonlArchive(archive_dir)
        rng = random.Random(seed)
        self.streams = {kind: KindStream(topology, kind, rng) for kind in dict.fromkeys(kinds)}
        self.kinds = list(kinds)
        self.events = 0

    def batches(self, size: int, n: int) -> list[list[Alert]]:
        """``n`` batches of ``size`` events, rotating through the kinds from the first."""
        out = [self.streams[self.kinds[i % len(self.kinds)]].take(size) for i in range(n)]
        self.events += size * n
        return out

    async def deliver(self, alerts: Sequence[Alert]) -> tuple[float, float, float, float]:
        """Archive, then steps 1-3 as Runtime._deliver; the seconds each took."""
        t0 = time.perf_counter()
        await self.archive.write_batch(alerts)
        t1 = time.perf_counter()
        await self.board.write_batch(alerts, {})
        t2 = time.perf_counter()
        await self.store.apply(alerts)
        t3 = time.perf_counter()
        await self.notifier.notify(alerts)
        t4 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3

    async def redis_cpu_s(self) -> float:
        info = await self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    async def run_pass(self, case: Case, result: CaseResult | None) -> None:
        batches = self.batches(case.size, case.batches_per_pass)
        gc.collect()
        sums = dict.fromkeys((*STEPS, "archive"), 0.0)
        client_cpu = 0.0
        redis0 = await self.redis_cpu_s()
        for alerts in batches:
            c0 = time.thread_time()
            archive_s, *steps = await self.deliver(alerts)
            client_cpu += time.thread_time() - c0
            for name, seconds in zip(STEPS, steps, strict=True):
                sums[name] += seconds
                if result is not None:
                    result.batches[name].append(seconds)
            sums["archive"] += archive_s
            if result is not None:
                result.batches["archive"].append(archive_s)
        redis_cpu = await self.redis_cpu_s() - redis0
        if result is not None:
            result.passes.append({"events": case.events_per_pass, **sums, "client_cpu_s": client_cpu,
                                  "redis_cpu_s": redis_cpu})

    async def empty(self, n: int) -> dict[str, list[float]]:
        """Each step (and all three) called with no alerts, ``n`` times."""
        out: dict[str, list[float]] = {name: [] for name in ("board", "store", "notify", "steps 1-3", "archive")}
        for _ in range(n):
            t0 = time.perf_counter()
            await self.board.write_batch([], {})
            t1 = time.perf_counter()
            await self.store.apply([])
            t2 = time.perf_counter()
            await self.notifier.notify([])
            t3 = time.perf_counter()
            await self.archive.write_batch([])
            t4 = time.perf_counter()
            out["board"].append(t1 - t0)
            out["store"].append(t2 - t1)
            out["notify"].append(t3 - t2)
            out["steps 1-3"].append(t3 - t0)
            out["archive"].append(t4 - t3)
        return out

    async def close(self) -> None:
        await self.notifier.close()
        await self.archive.close()


async def delete_namespace(client: aioredis.Redis, namespace: str) -> int:
    """SCAN ``cityops:<ns>:*`` + UNLINK; how many keys went."""
    removed, chunk = 0, []
    async for key in client.scan_iter(match=f"cityops:{namespace}:*", count=1000):
        chunk.append(key)
        if len(chunk) >= 500:
            removed += await client.unlink(*chunk)
            chunk = []
    if chunk:
        removed += await client.unlink(*chunk)
    return removed


def cases(sizes: Sequence[int], events: int, latency_batches: int, repeat: int, rotation: int) -> list[Case]:
    """Per pass a whole number of kind rotations (so every size sees the same mix of kinds)."""
    out = []
    for size in sorted(set(sizes) | set(LATENCY_SIZES)):
        throughput = size in sizes
        wanted = events / repeat / size if throughput else latency_batches / repeat
        out.append(Case(size, max(1, round(wanted / rotation)) * rotation, throughput))
    return out


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarise(result: CaseResult) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"steps 1-3": [p["events"] / (p["board"] + p["store"] + p["notify"])
                                                   for p in result.passes]}
    for name in (*STEPS, "archive"):
        rates[name] = [p["events"] / p[name] for p in result.passes]
    per_batch = {"steps 1-3": result.totals(), **result.batches}
    return {
        "size": result.size, "throughput_case": result.throughput, "batches_per_pass": result.batches_per_pass,
        "events_timed": sum(int(p["events"]) for p in result.passes),
        "events_per_s": {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in rates.items()},
        "client_cpu_us_per_event": statistics.median(1e6 * p["client_cpu_s"] / p["events"] for p in result.passes),
        "redis_cpu_us_per_event": statistics.median(1e6 * p["redis_cpu_s"] / p["events"] for p in result.passes),
        "batch_ms": {k: {"median": 1e3 * statistics.median(v), "p95": 1e3 * pct(v, 95), "max": 1e3 * max(v)}
                     for k, v in per_batch.items()},
        "passes": result.passes, "batch_seconds": per_batch,
    }


def fingerprint() -> dict[str, str]:
    return {name: hashlib.sha256((REPO / name).read_bytes()).hexdigest()[:10] for name in SOURCES}


def environment(redis_info: dict[str, Any], redis_config: dict[str, Any], archive_dir: Path) -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mounts = [ln.split() for ln in Path("/proc/mounts").read_text().splitlines()]
    resolved = str(archive_dir.resolve())
    fs = max((m for m in mounts if resolved == m[1] or resolved.startswith(m[1].rstrip("/") + "/")),
             key=lambda m: len(m[1]), default=["?", "?", "?"])
    return {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "nproc": os.cpu_count(), "cpu": cpu, "loadavg": os.getloadavg(),
            "redis_server": redis_info.get("redis_version"), "redis_appendonly": redis_config.get("appendonly"),
            "redis_appendfsync": redis_config.get("appendfsync"), "archive_fs": f"{fs[2]} ({fs[1]})",
            "redis_py": metadata.version("redis"), "msgspec": metadata.version("msgspec")}


def table(results: Sequence[dict[str, Any]], empty: dict[str, list[float]], env: dict[str, Any],
          args: argparse.Namespace, namespace: str) -> str:
    lines = [
        f"# {env['date_utc']}  {env['cpu']} x{env['nproc']}, Python {env['python']}, redis-py {env['redis_py']}; "
        f"Redis {env['redis_server']} (appendonly {env['redis_appendonly']}, appendfsync {env['redis_appendfsync']}) "
        f"at {args.redis_url}",
        f"# namespace {namespace}; kinds per batch rotate {','.join(args.kinds)}; prefill {args.prefill} events; "
        f"repeat={args.repeat} (+1 warm-up round); archive on {env['archive_fs']}; load average {env['loadavg'][0]:.2f}",
        "# sources (sha256[:10]): " + " ".join(f"{Path(k).name}={v}" for k, v in env["sources"].items())
        + ("" if env["sources"] == env["sources_after"] else "  WARNING: changed during the run"),
        "",
        "throughput, steps 1-3 = board + store + notify (events/s: median over rounds [min-max]; "
        "CPU: µs per event)",
        f"{'batch':>6} {'events':>7} {'steps 1-3 ev/s':>24} {'board':>8} {'store':>8} {'notify':>8} "
        f"{'archive':>8} {'client CPU':>10} {'redis CPU':>9}",
    ]
    for r in results:
        if not r["throughput_case"]:
            continue
        e = r["events_per_s"]
        t = e["steps 1-3"]
        lines.append(
            f"{r['size']:>6} {r['events_timed']:>7} {t['median']:>9,.0f} [{t['min']:>6,.0f}-{t['max']:>6,.0f}] "
            f"{e['board']['median']:>8,.0f} {e['store']['median']:>8,.0f} {e['notify']['median']:>8,.0f} "
            f"{e['archive']['median']:>8,.0f} {r['client_cpu_us_per_event']:>10.0f} {r['redis_cpu_us_per_event']:>9.0f}")
    lines += [
        "",
        "added latency per batch, ms (all timed batches pooled)",
        f"{'batch':>6} {'batches':>7} {'steps 1-3 med':>13} {'p95':>6} {'max':>6} {'board':>6} {'store':>6} "
        f"{'notify':>6} {'archive med':>11} {'p95':>6}",
    ]
    for r in results:
        b = r["batch_ms"]
        lines.append(
            f"{r['size']:>6} {len(r['batch_seconds']['board']):>7} {b['steps 1-3']['median']:>13.2f} "
            f"{b['steps 1-3']['p95']:>6.2f} {b['steps 1-3']['max']:>6.0f} {b['board']['median']:>6.2f} "
            f"{b['store']['median']:>6.2f} {b['notify']['median']:>6.2f} {b['archive']['median']:>11.2f} "
            f"{b['archive']['p95']:>6.2f}")
    lines += ["", f"empty batch (no alerts), µs, {len(empty['board'])} calls: "
              + ", ".join(f"{k} {1e6 * statistics.median(v):.1f} (p95 {1e6 * pct(v, 95):.1f})" for k, v in empty.items()),
              f"# Redis used memory {env['redis_used_memory_before']} before, {env['redis_used_memory_at_end']} at the end "
              f"(before cleanup); {env['events_total']} events in all; load average after {env['loadavg_after'][0]:.2f}"]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    topology = load_topology(REPO / "topology.yaml")
    client = aioredis.Redis.from_url(args.redis_url)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    archive_dir = Path(tempfile.mkdtemp(prefix="cityops-bench-alarms-", dir=args.archive_dir))
    bench: Bench | None = None
    try:
        await client.ping()
        config = {str(k): v for k, v in (await client.config_get("append*")).items()}
        env = environment(await client.info("server"), config, archive_dir)
        env["sources"] = fingerprint()
        env["redis_used_memory_before"] = (await client.info("memory"))["used_memory_human"]
        bench = Bench(client, namespace, topology, archive_dir, args.kinds, args.seed)
        plan = cases(args.sizes, args.events, args.latency_batches, args.repeat, len(args.kinds))
        results = {c.size: CaseResult(c.size, c.throughput, c.batches_per_pass) for c in plan}
        log = sys.stderr
        print(f"# namespace {namespace}: prefill {args.prefill} events ...", file=log, flush=True)
        for alerts in bench.batches(1000, args.prefill // 1000):
            await bench.deliver(alerts)
        for round_no in range(args.repeat + 1):  # round 0 is the warm-up
            for case in plan:
                await bench.run_pass(case, results[case.size] if round_no else None)
            print(f"# round {round_no}/{args.repeat} done ({bench.events} events so far)", file=log, flush=True)
        empty = await bench.empty(args.empty_calls)
        used = (await client.info("memory"))["used_memory_human"]
        summaries = [summarise(results[c.size]) for c in plan]
        env["redis_used_memory_at_end"] = used
        env["loadavg_after"] = os.getloadavg()
        env["sources_after"] = fingerprint()
        env["events_total"] = bench.events
        return {"environment": env, "namespace": namespace, "args": {k: v for k, v in vars(args).items()
                                                                     if k != "archive_dir"},
                "events_total": bench.events, "cases": summaries,
                "empty_batch_seconds": empty, "table": table(summaries, empty, env, args, namespace)}
    finally:
        if bench is not None:
            await bench.close()
        removed = await delete_namespace(client, namespace)
        left = [k async for k in client.scan_iter(match=f"cityops:{namespace}:*", count=1000)]
        print(f"# cleanup: unlinked {removed} keys of cityops:{namespace}:*, {len(left)} left; "
              f"removed {archive_dir}", file=sys.stderr, flush=True)
        await client.aclose()
        shutil.rmtree(archive_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds (after one warm-up round)")
    ap.add_argument("--sizes", default="10,100,1000", help="throughput batch sizes (alerts per batch)")
    ap.add_argument("--events", type=int, default=25_000, help="timed events per throughput size, all rounds")
    ap.add_argument("--latency-batches", type=int, default=1_000,
                    help="timed batches per latency-only size (1, and 10 if not in --sizes), all rounds")
    ap.add_argument("--kinds", default="hazmat,air,hazmat,traffic", help="kind of each batch, in rotation")
    ap.add_argument("--prefill", type=int, default=31_000, help="untimed events first (batches of 1,000)")
    ap.add_argument("--empty-calls", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--archive-dir", type=Path, default=None, help="parent of the temporary archive directory")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout (the table goes to stderr)")
    args = ap.parse_args()
    args.sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    args.kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(args.kinds) - set(RULES)
    if unknown or not args.kinds or args.repeat < 1 or not args.sizes or min(args.sizes) < 1:
        ap.error(f"--kinds from {sorted(RULES)}, --repeat >= 1, --sizes >= 1 (unknown kinds: {sorted(unknown)})")
    result = asyncio.run(run(args))
    if args.json:
        print(result["table"], file=sys.stderr)
        json.dump({k: v for k, v in result.items() if k != "table"}, sys.stdout, indent=1)
        print()
    else:
        print(result["table"])


if __name__ == "__main__":
    main()
