"""The simulation clock: who reports when, random faults, and the tick loop.

Time. The run lasts ``duration_s`` wall seconds at ``speed`` simulated seconds
per wall second, i.e. ``span_s = duration_s * speed`` simulated seconds, cut
into ticks of ``tick_s`` wall seconds. Event time = ``start_ms`` + simulated time.

Who reports when. Each sensor reports every ``expected_period_s`` of its kind
(topology.yaml) in simulated time, from a seeded phase. With ``rate`` = N every
period is divided by ``N / (speed * sum over sensors of 1 / expected_period_s)``,
so the whole city sends ~N readings per wall second in the kinds' natural
proportions. While an incident covers a sensor it reports every
``report_period_s`` (or faster, if its period already is), and its first
report falls on the incident's start.

Faults: see ``streams.sim.faults``. Messages and gateway batching: see
``streams.sim.messages``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.base import FloatArray, IntArray
from streams.errors import ConfigError
from streams.sim.city import City, FlagArray, build_city
from streams.sim.faults import RandomFaults
from streams.sim.incidents import Plan, apply, apply_committed, resolve, silenced
from streams.sim.messages import Assembler, SimMessage, TickReadings, parse_offset
from streams.sim.scenario import Scenario, load_scenario
from streams.sim.truth import RuleBook, TruthRecord, incident_truth
from streams.topology import Topology

# Decimals kept per quantity (sensor resolution); others keep DEFAULT_DECIMALS.
DECIMALS = {"co": 2, "gas_ppm": 2, "level_pct": 2, "temperature_c": 2, "flow_vph": 0, "energy_kwh": 2, "power_kw": 2}
DEFAULT_DECIMALS = 1
# Loggers upload 2..4 readings at a time...
LOGGER_MAX_HOLD_S = 5.0  # ...or once their oldest reading is this old (simulated seconds)

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class SimOptions:
    rate: float | None  # total readings per wall second; None: the kinds' expected periods
    duration_s: float  # wall seconds (simulated span = duration_s * speed)
    seed: int = 0
    scenario: Path | None = None  # None: the packaged default scenario
    start_ms: int | None = None  # event time of t=0; None: see resolve_start_ms
    speed: float = 1.0  # simulated seconds per wall second
    batch_fraction: float = 0.2  # ~share of messages that are JSON arrays (logger uploads)
    tick_s: float = 0.1  # wall seconds per tick (the pacing step)

    @property
    def span_s(self) -> float:
        return self.duration_s * self.speed

    def validate(self) -> None:
        checks = [
            ("rate", self.rate is None or (math.isfinite(self.rate) and self.rate > 0), "a number > 0"),
            ("duration_s", math.isfinite(self.duration_s) and self.duration_s > 0, "a number > 0"),
            ("speed", math.isfinite(self.speed) and self.speed > 0, "a number > 0"),
            ("batch_fraction", 0.0 <= self.batch_fraction <= 1.0, "between 0 and 1"),
            ("tick_s", math.isfinite(self.tick_s) and self.tick_s > 0, "a number > 0"),
        ]
        for name, ok, want in checks:
            if not ok:
                msg = f"simulate: {name} must be {want}, got {getattr(self, name)!r}"
                raise ConfigError(msg)

    def resolve_start_ms(self) -> int:
        """``start_ms``, or "now" placed so event time never runs ahead of the wall
        clock (with speed > 1 the run starts in the past and ends at now)."""
        if self.start_ms is not None:
            return self.start_ms
        now_ms = time.time_ns() // 1_000_000
        return now_ms - round(self.duration_s * max(self.speed - 1.0, 0.0) * 1000)


@dataclass(frozen=True, slots=True)
class _KindOut:
    """Static per-model output settings (from topology.yaml)."""

    topic: str
    quantities: tuple[str, ...]
    lo: FloatArray
    hi: FloatArray
    decimals: tuple[int, ...]


class Simulation:
    """One run: deterministic for given topology and options (``start_ms`` set)."""

    def __init__(self, topology: Topology, opts: SimOptions) -> None:
        opts.validate()
        self.opts = opts
        self.scenario: Scenario = load_scenario(opts.scenario)
        rng_city, rng_plan, rng_phase, self._rng_values, rng_faults = (
            np.random.default_rng(s) for s in np.random.SeedSequence(opts.seed).spawn(5)
        )
        self.city: City = build_city(topology.catalog.sensors, list(topology.spec.kinds), rng_city)
        self.start_ms = opts.resolve_start_ms()
        self.tz_offset_s = parse_offset(topology.spec.timezone)
        self._book = RuleBook(topology.spec)
        self._out = [_kind_out(topology, m.kind) for m in self.city.models]
        self.period_s = self._periods(topology)
        self.plans: list[Plan] = resolve(self.scenario.incidents, self.city, rng_plan)
        incidents = (incident_truth(p, self.city, self._book, self.start_ms, opts.span_s) for p in self.plans)
        # scripted incidents, by start (random faults: self._faults.records)
        self.truth: list[TruthRecord] = sorted((r for r in incidents if r), key=lambda r: (r.start_ms, r.id))
        self.now_ms = self.start_ms  # event time the run has reached
        self._drained = (0, 0)  # incidents, faults already handed out by drain_truth
        self._next_due = rng_phase.uniform(0.0, self.period_s)
        for plan in self.plans:  # the first report of an incident falls on its start
            self._next_due[plan.rows] = np.minimum(self._next_due[plan.rows], plan.start_s)
        self._assembler = self._make_assembler(rng_phase)
        self._topic_of = [self._out[m].topic for m in self.city.model_of.tolist()]
        self._faults = RandomFaults(self.scenario.faults, self.city, self._book, self.period_s, rng_faults)

    def _periods(self, topology: Topology) -> FloatArray:
        kinds = topology.spec.kinds
        period = np.array([kinds[s.kind].expected_period_s for s in self.city.sensors], np.float64)
        if self.opts.rate is None or period.size == 0:
            return period
        natural_rate = self.opts.speed * float(np.sum(1.0 / period))  # readings per wall second
        out: FloatArray = period * natural_rate / self.opts.rate
        return out

    def _make_assembler(self, rng: np.random.Generator) -> Assembler:
        n = len(self.city.sensors)
        size = rng.integers(2, 5, n)  # readings per upload when a logger's buffer fills
        is_logger = _pick_loggers(self.period_s, size, self.opts.batch_fraction, rng.permutation(n))
        epoch_ts = (rng.random(n) < 0.5).tolist()  # half the sensors send epoch ms, half RFC 3339
        ids = [s.sensor_id for s in self.city.sensors]
        return Assembler(ids, epoch_ts, np.where(is_logger, size, 1), self.tz_offset_s)

    # -- the tick loop -------------------------------------------------------

    def ticks(self, encode: bool = True) -> Iterator[list[SimMessage]]:
        """One list of messages per tick, in event-time order."""
        span = self.opts.span_s
        tick = self.opts.tick_s * self.opts.speed
        n_ticks = max(1, math.ceil(span / tick - 1e-9))
        for k in range(n_ticks):
            last = k == n_ticks - 1
            t_end = span if last else (k + 1) * tick
            keyed = self._run_until(t_end, encode)
            if last:
                self._faults.close_all()
            if encode:
                held_since = t_end if last else t_end - LOGGER_MAX_HOLD_S
                keyed += self._assembler.flush_held_since(self.start_ms + round(held_since * 1000), self._topic_of)
            keyed.sort(key=lambda item: item[0])  # stable: per-sensor order is kept
            self.now_ms = self.start_ms + round(t_end * 1000)
            yield [message for _, message in keyed]

    def _run_until(self, t_end: float, encode: bool) -> list[tuple[int, SimMessage]]:
        """Every reading due before ``t_end``, round by round (one per sensor per round)."""
        parts: list[list[TickReadings]] = [[] for _ in self.city.models]
        urgent: list[list[BoolArray]] = [[] for _ in self.city.models]
        while True:
            due = np.flatnonzero(self._next_due < t_end)
            if due.size == 0:
                break
            t = self._next_due[due]
            mute, resume = silenced(self.plans, due, t)  # sensor_silent incidents: no reading at all
            for m in range(len(self.city.models)):
                sel = (self.city.model_of[due] == m) & ~mute
                if sel.any():
                    part, covered = self._readings(m, due[sel], t[sel])
                    parts[m].append(part)
                    urgent[m].append(covered)
            self._next_due[due] = np.where(mute, resume, self._next_report(due, t))
        if not encode:
            return []
        out: list[tuple[int, SimMessage]] = []
        for m in range(len(self.city.models)):
            if parts[m]:
                merged, flush_now = _merge(parts[m], urgent[m])
                out += self._assembler.add(merged, flush_now.tolist())
        return out

    def _next_report(self, sensor: IntArray, t: FloatArray) -> FloatArray:
        nxt = t + self.period_s[sensor]
        for plan in self.plans:
            mine = plan.slot[sensor] >= 0
            during = mine & (t >= plan.start_s) & (t < plan.end_s)
            nxt = np.where(during, np.minimum(nxt, t + plan.spec.report_period_s), nxt)
            before = mine & (t < plan.start_s)
            nxt = np.where(before, np.minimum(nxt, plan.start_s), nxt)
        return nxt

    def _readings(self, m: int, sensor: IntArray, t: FloatArray) -> tuple[TickReadings, BoolArray]:
        """Values of model ``m``'s due sensors at ``t``: base, incidents, faults, state."""
        model, out = self.city.models[m], self._out[m]
        local = self.city.local_of[sensor]
        event_ms = self.start_ms + np.rint(t * 1000.0).astype(np.int64)
        hour = np.mod(event_ms / 1000.0 + self.tz_offset_s, 86_400.0) / 3600.0
        values = model.sample(local, t, hour, self._rng_values)
        flags: FlagArray = np.full(sensor.size, "N", "<U1")
        covered = np.zeros(sensor.size, bool)
        for plan in self.plans:
            if plan.kind == model.kind:
                covered[apply(plan, sensor, t, values, flags, self._rng_values)] = True
        self._faults.apply(sensor, event_ms, covered, flags)
        model.commit(local, t, values)
        for plan in self.plans:
            if plan.kind == model.kind:
                apply_committed(plan, sensor, t, values)
        matrix = np.full((sensor.size, len(out.quantities)), np.nan)
        for j, q in enumerate(out.quantities):
            if q in values:
                matrix[:, j] = np.round(np.clip(values[q], out.lo[j], out.hi[j]), out.decimals[j])
        return TickReadings(out.topic, sensor, event_ms, matrix, out.quantities, flags), covered

    def drain_truth(self) -> list[dict[str, Any]]:
        """Records that became known since the last call: incidents once started,
        faults once over. Lets a runner write the truth as it goes."""
        n_inc, n_faults = self._drained
        started = [r for r in self.truth[n_inc:] if r.start_ms <= self.now_ms]
        ended = self._faults.records[n_faults:]
        self._drained = (n_inc + len(started), n_faults + len(ended))
        return [r.to_json(self.tz_offset_s) for r in [*started, *ended]]

    def truth_json(self) -> list[dict[str, Any]]:
        records = sorted([*self.truth, *self._faults.records], key=lambda r: (r.start_ms, r.id))
        return [r.to_json(self.tz_offset_s) for r in records]


def _pick_loggers(period_s: FloatArray, size: IntArray, fraction: float, order: IntArray) -> BoolArray:
    """Sensors (taken in ``order``) behind loggers, so that ~``fraction`` of all
    messages are arrays. A logger sends one message per ``u`` readings: its buffer
    size, or fewer when the hold timer fires first."""
    is_logger = np.zeros(period_s.size, bool)
    if fraction <= 0 or period_s.size == 0:
        return is_logger
    rate = 1.0 / period_s[order]
    per_upload = np.minimum(size[order], 1.0 + np.floor(LOGGER_MAX_HOLD_S / period_s[order]))
    arrays = np.cumsum(rate / per_upload)  # array messages/s with the first j sensors as loggers
    singles = rate.sum() - np.cumsum(rate)
    count = int(np.searchsorted(arrays / (arrays + singles), fraction)) + 1
    is_logger[order[:count]] = True
    return is_logger


def _kind_out(topology: Topology, kind: str) -> _KindOut:
    spec = topology.spec.kinds[kind]
    names = tuple(spec.quantities)
    return _KindOut(
        topic=spec.topic,
        quantities=names,
        lo=np.array([q.min for q in spec.quantities.values()], np.float64),
        hi=np.array([q.max for q in spec.quantities.values()], np.float64),
        decimals=tuple(DECIMALS.get(q, DEFAULT_DECIMALS) for q in names),
    )


def _merge(parts: list[TickReadings], urgent: list[BoolArray]) -> tuple[TickReadings, BoolArray]:
    """One model's rounds of a tick as one part, sorted by (event time, sensor)."""
    sensor = np.concatenate([p.sensor for p in parts])
    event_ms = np.concatenate([p.event_ms for p in parts])
    order = np.lexsort((sensor, event_ms))
    first = parts[0]
    merged = TickReadings(
        first.topic, sensor[order], event_ms[order],
        np.concatenate([p.values for p in parts])[order], first.quantities,
        np.concatenate([p.flag for p in parts])[order],
    )
    return merged, np.concatenate(urgent)[order]


def generate(topology: Topology, opts: SimOptions) -> Iterator[list[SimMessage]]:
    """The run's messages, one list per tick in event-time order (pure given ``start_ms``)."""
    return Simulation(topology, opts).ticks()


def ground_truth(topology: Topology, opts: SimOptions) -> list[dict[str, Any]]:
    """What the run with these options contains: scripted incidents and random faults."""
    sim = Simulation(topology, opts)
    for _ in sim.ticks(encode=False):
        pass
    return sim.truth_json()
