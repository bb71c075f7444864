"""In-process throughput of ``KindPipeline.process`` per sensor kind.

No Kafka, no Redis, no Faust: the pure decode -> detect -> alarm path one worker
agent runs per micro-batch. Messages are built the way sensors send them
(design.md input contract) for the catalog's sensors: values in normal ranges,
~0.5 % alarm crossings, ~0.3 % non-N HJ 212 flags, ~10 % gateway arrays of
5-20 readings, RFC 3339 and epoch-ms timestamps mixed (per sensor).

Each case runs ``--repeat`` timed batches (fresh messages every time, one
untimed warm-up batch first; cases interleaved round-robin) and reports the
median with min/max. See loadtest/README.md and docs/benchmarks.md.

    .venv/bin/python loadtest/bench_pipeline.py [--repeat 9] [--json OUT] [--profile CASE]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: no BLAS thread pools

import argparse
import cProfile
import gc
import json
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streams.catalog import SensorInfo  # noqa: E402
from streams.decode import RawMessage  # noqa: E402
from streams.pipeline import KindPipeline, wall_clock_ms  # noqa: E402
from streams.topology import Topology, load_topology  # noqa: E402

KINDS = ("air", "hazmat", "traffic", "energy")
SIZES = (100, 1000, 5000)
TZ = timezone(timedelta(hours=8))  # topology.yaml timezone "+08:00"

# ------------------------------------------------------------------ sensor models


@dataclass(frozen=True, slots=True)
class SensorModel:
    """How one sensor reports: its quantities' normal ranges and how it alarms."""

    sensor_id: str
    normal: dict[str, tuple[float, float]]  # quantity -> (lo, hi) uniform
    crossing: dict[str, tuple[float, float]]  # quantity -> range that crosses a set point
    epoch_ts: bool  # ts as epoch ms, else RFC 3339 with offset
    period_s: float


def _air(s: str, lim: dict[str, float]) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    normal = {"pm25": (8, 70), "pm10": (20, 120), "no2": (10, 80), "so2": (2, 20), "o3": (20, 150), "co": (0.3, 1.5)}
    return normal, {"pm25": (160, 260)}  # AQI ~210-310: minor / major


def _hazmat(s: str, lim: dict[str, float]) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    if "pressure_kpa.high" in lim:  # a tank
        p = lim["pressure_kpa.high"]
        normal = {"level_pct": (30, 80), "pressure_kpa": (0.4 * p, 0.85 * p), "temperature_c": (15, 35)}
        return normal, {"pressure_kpa": (1.01 * p, 1.08 * p)}
    normal = {"gas_lel": (0, 5)}
    if "gas_ppm.high" in lim:  # a toxic-gas head
        normal["gas_ppm"] = (0, 0.4 * lim["gas_ppm.high"])
    return normal, {"gas_lel": (26, 60)}  # GB/T 50493 first / second level


def _traffic(s: str, lim: dict[str, float]) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    low, lowlow = lim.get("speed_kmh.low", 40.0), lim.get("speed_kmh.lowlow", 20.0)
    normal = {"speed_kmh": (low + 15, low + 70), "flow_vph": (300, 3000), "occupancy_pct": (4, 30)}
    return normal, {"speed_kmh": (0.3 * lowlow, 0.9 * lowlow)}


def _energy(s: str, lim: dict[str, float]) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    cap = lim.get("power_kw.high", 500.0)
    normal = {"energy_kwh": (1.0e5, 9.0e6), "power_kw": (0.2 * cap, 0.8 * cap), "voltage_v": (376, 384)}
    return normal, {"power_kw": (1.05 * cap, 1.3 * cap)}


MODELS: dict[str, Callable[[str, dict[str, float]], Any]] = {
    "air": _air, "hazmat": _hazmat, "traffic": _traffic, "energy": _energy,
}


def sensor_models(topology: Topology, kind: str, rng: np.random.Generator, n_unknown: int = 0) -> list[SensorModel]:
    """The catalog's sensors of ``kind``, or ``n_unknown`` sensors unknown to the catalog."""
    period = float(topology.kind(kind).expected_period_s)
    infos: Sequence[SensorInfo | str] = (
        [f"BENCH-{kind.upper()}-{i:05d}" for i in range(n_unknown)] if n_unknown else topology.catalog.by_kind(kind)
    )
    out = []
    for info in infos:
        sid, limits = (info, {}) if isinstance(info, str) else (info.sensor_id, dict(info.limits))
        normal, crossing = MODELS[kind](sid, limits)
        out.append(SensorModel(sid, normal, crossing, bool(rng.random() < 0.5), period))
    return out


# ------------------------------------------------------------------ messages


class Reading(msgspec.Struct):
    sensor_id: str
    ts: str | int
    values: dict[str, float]
    flag: str = "N"


@dataclass(frozen=True, slots=True)
class MessageMix:
    crossing_p: float = 0.005  # per reading: a value across an alarm set point
    flag_p: float = 0.003  # per reading: a non-N HJ 212 flag
    array_p: float = 0.10  # per message: a gateway array
    array_len: tuple[int, int] = (5, 20)  # readings per gateway array (inclusive)
    invalid_p: float = 0.0  # share of messages (exactly, rounded): malformed JSON or a wrong type


@dataclass
class MessageFactory:
    """Builds Kafka record values for one kind's sensors.

    Each sensor has its own clock: its readings are ``step_ms`` apart, from a random
    phase after ``start_ms``, and every message is newer than the ones the sensor
    sent before (a gateway array carries its next k readings), as a real sensor's
    stream is. Messages of different sensors interleave at random.
    """

    sensors: list[SensorModel]
    rng: np.random.Generator
    start_ms: int
    step_ms: int
    mix: MessageMix = field(default_factory=MessageMix)
    encoder: msgspec.json.Encoder = field(default_factory=msgspec.json.Encoder)
    _next_ms: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self._next_ms = (self.start_ms + self.rng.integers(0, self.step_ms, len(self.sensors))).tolist()

    @property
    def last_ms(self) -> int:
        """The newest event time handed out so far (for checks against ``now``)."""
        return max(self._next_ms) - self.step_ms

    def one_each(self, topic: str = "bench") -> list[RawMessage]:
        """One single-reading message per sensor (to make every sensor known)."""
        out = []
        for i, model in enumerate(self.sensors):
            t0 = self._next_ms[i]
            self._next_ms[i] = t0 + self.step_ms
            body = self.encoder.encode(self._reading(model, t0))
            out.append(RawMessage(body, model.sensor_id.encode(), topic, 0, i))
        return out

    def batch(self, n_messages: int, topic: str = "bench") -> tuple[list[RawMessage], int, int]:
        """``n_messages`` records; also how many readings and values (reading x
        quantity) they carry, valid or not."""
        rng, mix = self.rng, self.mix
        who = rng.integers(0, len(self.sensors), n_messages).tolist()
        array = rng.random(n_messages) < mix.array_p
        lengths = np.where(array, rng.integers(mix.array_len[0], mix.array_len[1] + 1, n_messages), 1).tolist()
        bad = set(rng.choice(n_messages, round(mix.invalid_p * n_messages), replace=False).tolist())
        out, n_readings, n_values = [], 0, 0
        for i, (s, k, is_array) in enumerate(zip(who, lengths, array.tolist(), strict=True)):
            model, t0 = self.sensors[s], self._next_ms[s]
            self._next_ms[s] = t0 + k * self.step_ms
            readings = [self._reading(model, t0 + j * self.step_ms) for j in range(k)]
            body = self.encoder.encode(readings if is_array else readings[0])
            if i in bad:
                body = self._corrupt(body, readings[0])
            n_readings += k
            n_values += sum(len(r.values) for r in readings)
            out.append(RawMessage(body, model.sensor_id.encode(), topic, 0, i))
        return out, n_readings, n_values

    def _reading(self, m: SensorModel, event_ms: int) -> Reading:
        rng = self.rng
        values = {q: round(float(rng.uniform(lo, hi)), 2) for q, (lo, hi) in m.normal.items()}
        if rng.random() < self.mix.crossing_p:
            q, (lo, hi) = next(iter(m.crossing.items()))
            values[q] = round(float(rng.uniform(lo, hi)), 2)
        flag = str(rng.choice(list("FMDCB"))) if rng.random() < self.mix.flag_p else "N"
        return Reading(m.sensor_id, event_ms if m.epoch_ts else rfc3339(event_ms), values, flag)

    def _corrupt(self, body: bytes, reading: Reading) -> bytes:
        if self.rng.random() < 0.5:
            return body[: len(body) // 2]  # malformed JSON (truncated upload)
        q = next(iter(reading.values))
        bad = msgspec.structs.replace(reading, values={**reading.values, q: "high"})
        return self.encoder.encode(bad)  # wrong type


def sensor_clock(now_ms: int, period_s: float, readings_per_sensor: float, max_age_s: float) -> tuple[int, int]:
    """(start_ms, step_ms) so that about ``readings_per_sensor`` readings per sensor
    (x2 + 400 for the unlucky ones: a few 20-reading arrays) end before ``now_ms`` and
    start within ``max_age_s``: the sensor's period, shortened if the span would not fit."""
    slots = readings_per_sensor * 2 + 400
    step_ms = max(1, min(int(period_s * 1000), int(0.8 * max_age_s * 1000 / slots)))
    return now_ms - int(slots * step_ms), step_ms


def rfc3339(event_ms: int) -> str:
    return datetime.fromtimestamp(event_ms / 1000, TZ).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------ cases


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    kind: str
    n_messages: int
    n_unknown: int = 0  # > 0: that many sensors unknown to the catalog
    invalid_p: float = 0.0
    cold: bool = False  # a fresh pipeline per batch (every sensor first seen)
    only_sensors: int = 0  # > 0: only the first N catalog sensors send (a backlog of one site)


def default_cases(kinds: Sequence[str]) -> list[Case]:
    cases = [Case(f"{k}-{n}", k, n) for k in kinds for n in SIZES]
    for k in [k for k in ("hazmat", "air") if k in kinds]:
        cases.append(Case(f"{k}-5000-10k-sensors", k, 5000, n_unknown=10_000))
        cases.append(Case(f"{k}-5000-10k-sensors-cold", k, 5000, n_unknown=10_000, cold=True))
        cases += [Case(f"{k}-{n}-5pct-invalid", k, n, invalid_p=0.05) for n in (1000, 5000)]
        cases.append(Case(f"{k}-5000-1-invalid", k, 5000, invalid_p=1 / 5000))
        cases.append(Case(f"{k}-5000-5-sensors", k, 5000, only_sensors=5))
    return cases


@dataclass
class Sample:
    total_s: float  # wall clock (time.perf_counter)
    cpu_s: float  # this thread's CPU time (time.thread_time): excludes time lost to other processes
    decode_s: float
    detect_s: float
    n_messages: int
    n_readings: int  # valid readings processed
    n_values: int  # values sent (reading x quantity), valid or not
    n_alerts: int
    n_dead: int


class CaseRunner:
    """One case's pipeline and message source; ``run_once`` times one fresh batch."""

    def __init__(self, topology: Topology, case: Case, seed: int, max_batches: int) -> None:
        self.topology, self.case = topology, case
        rng = np.random.default_rng(seed)
        sensors = sensor_models(topology, case.kind, rng, case.n_unknown)
        if case.only_sensors:
            sensors = sensors[: case.only_sensors]
        self.now_ms = wall_clock_ms()
        per_sensor = (max_batches + 1) * case.n_messages * _mean_readings_per_message() / len(sensors)
        start_ms, step_ms = sensor_clock(self.now_ms, sensors[0].period_s, per_sensor, topology.spec.input.max_age_s)
        self.factory = MessageFactory(sensors, rng, start_ms, step_ms, MessageMix(invalid_p=case.invalid_p))
        self.pipeline = KindPipeline(topology, case.kind)
        if case.n_unknown and not case.cold:  # steady state: every sensor already seen once
            self.pipeline.process(self.factory.one_each(), self.now_ms)
        self.pipeline.process(self._next()[0], self.now_ms)  # warm-up, untimed

    def _next(self) -> tuple[list[RawMessage], int, int]:
        batch = self.factory.batch(self.case.n_messages)
        if self.factory.last_ms > self.now_ms:
            msg = f"{self.case.name}: generated event time ran past now; raise sensor_clock's margin"
            raise RuntimeError(msg)
        return batch

    def run_once(self, profiler: cProfile.Profile | None = None) -> Sample:
        msgs, _, n_values = self._next()  # generated untimed
        if self.case.cold:
            self.pipeline = KindPipeline(self.topology, self.case.kind)
        gc.collect()
        if profiler is not None:
            profiler.enable()
        c0, t0 = time.thread_time(), time.perf_counter()
        res = self.pipeline.process(msgs, self.now_ms)
        total, cpu = time.perf_counter() - t0, time.thread_time() - c0
        if profiler is not None:
            profiler.disable()
        return Sample(total, cpu, res.stage_seconds["decode"], res.stage_seconds["detect"], res.n_messages,
                      res.n_readings, n_values, len(res.alerts), len(res.dead))


def _mean_readings_per_message(mix: MessageMix = MessageMix()) -> float:
    lo, hi = mix.array_len
    return (1 - mix.array_p) + mix.array_p * (lo + hi) / 2


def run_cases(topology: Topology, cases: Sequence[Case], repeat: int, seed: int,
              profiler: cProfile.Profile | None = None) -> list[list[Sample]]:
    """Round-robin: round r times one batch of every case, so a burst of load from
    other processes hits all cases alike instead of a few cases entirely."""
    runners = [CaseRunner(topology, c, seed + i, repeat + 2) for i, c in enumerate(cases)]
    samples: list[list[Sample]] = [[] for _ in cases]
    for r in range(repeat):
        for runner, out in zip(runners, samples, strict=True):
            out.append(runner.run_once(profiler))
        print(f"# round {r + 1}/{repeat} done", file=sys.stderr, flush=True)
    return samples


# ------------------------------------------------------------------ report


def summarise(case: Case, samples: list[Sample]) -> dict[str, Any]:
    def stats(xs: list[float]) -> dict[str, float]:
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}

    rates = [s.n_readings / s.total_s for s in samples]
    return {
        "case": asdict(case),
        "repeat": len(samples),
        "messages_per_batch": statistics.median(s.n_messages for s in samples),
        "readings_per_batch": statistics.median(s.n_readings for s in samples),
        "values_per_batch": statistics.median(s.n_values for s in samples),
        "alerts_per_batch": statistics.median(s.n_alerts for s in samples),
        "dead_per_batch": statistics.median(s.n_dead for s in samples),
        "total_ms": {k: v * 1e3 for k, v in stats([s.total_s for s in samples]).items()},
        "cpu_ms": {k: v * 1e3 for k, v in stats([s.cpu_s for s in samples]).items()},
        "decode_ms": {k: v * 1e3 for k, v in stats([s.decode_s for s in samples]).items()},
        "detect_ms": {k: v * 1e3 for k, v in stats([s.detect_s for s in samples]).items()},
        "readings_per_s": stats(rates),
        "readings_per_cpu_s": stats([s.n_readings / s.cpu_s for s in samples if s.cpu_s > 0]),
        "messages_per_s": stats([s.n_messages / s.total_s for s in samples]),
        "samples": [asdict(s) for s in samples],
    }


HEADER = (f"{'case':<30} {'msgs':>5} {'readings':>8} {'values':>7} {'alerts':>6} {'dead':>5} "
          f"{'total ms med [min-max]':>24} {'cpu ms':>7} {'decode ms':>9} {'detect ms':>9} {'readings/s med [min-max]':>28}")


def _span(x: dict[str, float], fmt: str) -> str:
    return f"{x['median']:{fmt}} [{x['min']:{fmt}}-{x['max']:{fmt}}]"


def row(r: dict[str, Any]) -> str:
    return (f"{r['case']['name']:<30} {r['messages_per_batch']:>5.0f} {r['readings_per_batch']:>8.0f} "
            f"{r['values_per_batch']:>7.0f} {r['alerts_per_batch']:>6.0f} {r['dead_per_batch']:>5.0f} "
            f"{_span(r['total_ms'], '.2f'):>24} {r['cpu_ms']['median']:>7.2f} {r['decode_ms']['median']:>9.2f} {r['detect_ms']['median']:>9.2f} "
            f"{_span(r['readings_per_s'], ',.0f'):>28}")


def environment(pinned: str) -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem_kb = next((int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal")), 0)
    versions = {p: metadata.version(p) for p in ("numpy", "msgspec", "faust-streaming", "aiokafka")}
    return {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem_kb / 2**20, 1), "affinity": pinned,
            "loadavg": os.getloadavg(), **versions}


def cpu_ticks() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (Linux /proc/stat; zeros elsewhere)."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = f[3] + f[4]
    return (sum(f[:8]) - idle) / hz, sum(f[:8]) / hz


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
        return f"pinned to CPU {sorted(os.sched_getaffinity(0))} with os.sched_setaffinity"
    return "NOT pinned (os.sched_setaffinity unavailable on this platform)"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=9, help="timed batches per case (>= 7 recommended; default 9)")
    p.add_argument("--json", type=Path, default=None, help="write all samples and the environment here")
    p.add_argument("--topology", type=Path, default=REPO / "topology.yaml")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds (default: all four)")
    p.add_argument("--cases", default=None, help="comma-separated case names to run (default: all)")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--profile", default=None, metavar="CASE", help="run only CASE under cProfile and print the top functions")
    a = p.parse_args(argv)
    if a.repeat < 1:
        p.error("--repeat must be >= 1")
    pinned = pin_one_core()
    env = environment(pinned)
    topology = load_topology(a.topology)
    cases = default_cases([k.strip() for k in a.kinds.split(",") if k.strip()])
    wanted = {a.profile} if a.profile else ({c.strip() for c in a.cases.split(",")} if a.cases else None)
    if wanted is not None:
        cases = [c for c in cases if c.name in wanted]
        if not cases:
            p.error(f"no case named {sorted(wanted)}; valid: {[c.name for c in default_cases(KINDS)]}")
    print(f"# KindPipeline.process — {env['cpu']}, nproc={env['nproc']}, {env['mem_gib']} GiB; Python {env['python']}, "
          f"numpy {env['numpy']}, msgspec {env['msgspec']}; {pinned}; load average {env['loadavg'][0]:.2f}; "
          f"repeat={a.repeat} (+1 warm-up), median [min-max]")
    if a.repeat < 7:
        print(f"# warning: --repeat {a.repeat} < 7: medians are less stable")
    profiler = cProfile.Profile() if a.profile else None
    busy0, total0 = cpu_ticks()
    own0 = time.process_time()
    results = [summarise(c, s) for c, s in zip(cases, run_cases(topology, cases, a.repeat, a.seed, profiler), strict=True)]
    busy1, total1 = cpu_ticks()
    others = max(0.0, (busy1 - busy0) - (time.process_time() - own0))
    env["other_processes_cpu_share"] = others / (total1 - total0) if total1 > total0 else None
    print(HEADER)
    for r in results:
        print(row(r))
    if profiler is not None:
        pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(25)
    env["loadavg_after"] = os.getloadavg()
    share = env["other_processes_cpu_share"]
    print(f"# load average after: {env['loadavg_after'][0]:.2f}; other processes used "
          f"{'?' if share is None else f'{share:.0%}'} of the machine's CPU during the run (see min/max)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"environment": env, "repeat": a.repeat, "results": results}, indent=1))
        print(f"# wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
