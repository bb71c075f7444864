"""Scripted incidents: resolve each scenario entry to concrete sensors, then bend
their readings (vectorized over the due sensors) while it lasts.

Every incident has a trapezoid envelope: 0 -> 1 over ``ramp_s``, a plateau,
1 -> 0 over ``ramp_s`` before ``at_s + duration_s``. Affected sensors report every
``report_period_s`` while it lasts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from detectors.base import FloatArray, IntArray
from streams.errors import ConfigError
from streams.sim.city import NO_SENSOR, City, FlagArray, HazmatModel, TrafficModel, Values, bounded_noise
from streams.sim.scenario import (
    GasLeak,
    Incident,
    MeterFault,
    MeterIdle,
    MeterReset,
    PollutionEpisode,
    SensorSilent,
    SlowLeak,
    StuckSensor,
    TrafficIncident,
)

_M = TypeVar("_M")

# Incident magnitudes wobble by this relative sd (clipped at 3 sd), so plateaus look
# measured, not drawn; truth scores assume the worst wobble.
JITTER_SD = 0.04
JITTER_MAX = 3 * JITTER_SD

# What a row of a plan is to its incident.
TARGET, UPSTREAM, DOWNSTREAM, TANK = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Plan:
    """One incident, resolved: which sensors, how hard, when (simulated seconds)."""

    id: str
    spec: Incident
    kind: str
    rows: IntArray  # global sensor indices, targets first
    part: IntArray  # TARGET / UPSTREAM / DOWNSTREAM / TANK per row
    peak: FloatArray  # per row: peak %LEL, PM2.5, trough speed or pressure-dip fraction
    slot: IntArray  # global sensor -> row in this plan, -1 if untouched
    memory: dict[str, FloatArray] = field(default_factory=dict)  # per plan row: frozen values, register offset

    @property
    def start_s(self) -> float:
        return self.spec.at_s

    @property
    def end_s(self) -> float:
        return self.spec.at_s + self.spec.duration_s

    def covering(self, sensor: IntArray, t_s: FloatArray) -> tuple[IntArray, IntArray]:
        """Positions in ``sensor``/``t_s`` this plan affects now, and their plan rows."""
        slot = self.slot[sensor]
        hit = np.flatnonzero((slot >= 0) & (t_s >= self.start_s) & (t_s < self.end_s))
        return hit, slot[hit]

    def envelope(self, t_s: FloatArray) -> FloatArray:
        ramp = self.spec.rise_s
        if ramp <= 0:
            return np.ones_like(t_s)
        out: FloatArray = np.clip(np.minimum(t_s - self.start_s, self.end_s - t_s) / ramp, 0.0, 1.0)
        return out


def resolve(incidents: Sequence[Incident], city: City, rng: np.random.Generator) -> list[Plan]:
    counts: dict[str, int] = {}
    plans = []
    for i, spec in enumerate(incidents):
        counts[spec.type] = counts.get(spec.type, 0) + 1
        plan_id = spec.id or f"{spec.type}-{counts[spec.type]}"
        plans.append(_resolve_one(f"incidents[{i}]", plan_id, spec, city, rng))
    return plans


def _resolve_one(where: str, plan_id: str, spec: Incident, city: City, rng: np.random.Generator) -> Plan:
    if isinstance(spec, GasLeak):
        rows, part, peak = _gas_leak(where, spec, city, rng)
        kind = "hazmat"
    elif isinstance(spec, PollutionEpisode):
        rows, part, peak = _pollution(where, spec, city, rng)
        kind = "air"
    elif isinstance(spec, TrafficIncident):
        rows, part, peak = _traffic(where, spec, city, rng)
        kind = "traffic"
    elif isinstance(spec, SlowLeak):
        rows, part, peak = _slow_leak(where, spec, city, rng)
        kind = "hazmat"
    elif isinstance(spec, StuckSensor | SensorSilent):
        rows, part, peak = _one_sensor(where, spec, city, rng, spec.sensor_kind)
        kind = spec.sensor_kind
    else:
        rows, part, peak = _meter(where, spec, city, rng)
        kind = "energy"
    slot = np.full(len(city.sensors), NO_SENSOR, np.int64)
    slot[rows] = np.arange(rows.size)
    return Plan(plan_id, spec, kind, rows, part, peak, slot)


def _candidates(where: str, spec: Incident, city: City, pool: Sequence[int]) -> list[int]:
    """The pool narrowed to the incident's target (pool order kept)."""
    if not pool:
        msg = f"{where}: the catalog has no sensor a {spec.type} can affect"
        raise ConfigError(msg)
    sensors = city.sensors
    if spec.sensor_id is not None:
        picked = [g for g in pool if sensors[g].sensor_id == spec.sensor_id]
        field, value = "sensor_id", spec.sensor_id
    elif spec.site_id is not None:
        picked = [g for g in pool if sensors[g].site_id == spec.site_id]
        field, value = "site_id", spec.site_id
    elif spec.district is not None:
        picked = [g for g in pool if sensors[g].district == spec.district]
        field, value = "district", spec.district
    else:
        return list(pool)
    if not picked:
        known = sorted({getattr(sensors[g], field) for g in pool})
        msg = f"{where}.{field}: {value!r} has no sensor a {spec.type} can affect; e.g. {known[:8]}"
        raise ConfigError(msg)
    return picked


def _pick(rng: np.random.Generator, options: Sequence[int]) -> int:
    return int(options[int(rng.integers(len(options)))])


Resolved = tuple[IntArray, IntArray, FloatArray]  # rows, part, peak


def _gas_leak(where: str, spec: GasLeak, city: City, rng: np.random.Generator) -> Resolved:
    model = _model(city, "hazmat", where, HazmatModel)
    detectors = [int(city.global_of[_m(city, "hazmat")][i]) for i in np.flatnonzero(~model.is_tank)]
    candidates = _candidates(where, spec, city, detectors)
    source = candidates[0] if spec.sensor_id else _pick(rng, candidates)
    site = city.sensors[source].site_id
    on_site = [g for g in detectors if city.sensors[g].site_id == site]
    on_site.sort(key=lambda g: (_distance(city, source, g), g))
    peak = spec.peak_lel * spec.decay ** np.arange(len(on_site), dtype=np.float64)
    tanks = [int(g) for g in city.global_of[_m(city, "hazmat")][model.is_tank] if city.sensors[g].site_id == site]
    rows, part = list(on_site), [TARGET] * len(on_site)
    if tanks:  # the nearest tank is where it leaks from: its pressure dips
        rows.append(min(tanks, key=lambda g: (_distance(city, source, g), g)))
        part.append(TANK)
        peak = np.append(peak, spec.pressure_dip_pct / 100.0)
    return np.array(rows, np.int64), np.array(part, np.int64), peak


def _pollution(where: str, spec: PollutionEpisode, city: City, rng: np.random.Generator) -> Resolved:
    stations = [int(g) for g in city.global_of[_m(city, "air")]]
    picked = _candidates(where, spec, city, stations)
    if spec.district is None and spec.site_id is None and spec.sensor_id is None:
        district = city.sensors[_pick(rng, picked)].district
        picked = [g for g in stations if city.sensors[g].district == district]
    peak = spec.peak_pm25 * rng.uniform(0.97, 1.08, len(picked))
    return np.array(picked, np.int64), np.full(len(picked), TARGET, np.int64), peak


def _traffic(where: str, spec: TrafficIncident, city: City, rng: np.random.Generator) -> Resolved:
    m = _m(city, "traffic")
    model = _model(city, "traffic", where, TrafficModel)
    glob = city.global_of[m]
    stations = [int(g) for g in glob]
    picked = _candidates(where, spec, city, stations)
    with_upstream = [g for g in picked if model.upstream[city.local_of[g]] != NO_SENSOR]
    if spec.sensor_id is not None:
        target = picked[0]
    elif spec.site_id is not None:
        target = picked[len(picked) // 2]
    else:
        target = _pick(rng, with_upstream or picked)
    local = int(city.local_of[target])
    rows = [target]
    part = [TARGET]
    limit = model.low if spec.speed_of == "low" else model.lowlow
    peak = [spec.speed_factor * float(limit[local])]
    up, down = int(model.upstream[local]), int(model.downstream[local])
    if spec.upstream and up != NO_SENSOR:  # the queue backs up: congested, between lowlow and low
        rows.append(int(glob[up]))
        part.append(UPSTREAM)
        mild = spec.speed_of == "low"  # ...or, in a mild incident, as slow as the target relative to low
        peak.append(spec.speed_factor * float(model.low[up]) if mild else 0.5 * float(model.low[up] + model.lowlow[up]))
    if down != NO_SENSOR:  # fewer vehicles get through
        rows.append(int(glob[down]))
        part.append(DOWNSTREAM)
        peak.append(math.nan)
    return np.array(rows, np.int64), np.array(part, np.int64), np.array(peak, np.float64)


def _slow_leak(where: str, spec: SlowLeak, city: City, rng: np.random.Generator) -> Resolved:
    model = _model(city, "hazmat", where, HazmatModel)
    detectors = [int(city.global_of[_m(city, "hazmat")][i]) for i in np.flatnonzero(~model.is_tank)]
    candidates = _candidates(where, spec, city, detectors)
    source = candidates[0] if spec.sensor_id else _pick(rng, candidates)
    return np.array([source], np.int64), np.array([TARGET], np.int64), np.array([spec.peak_lel])


def _one_sensor(where: str, spec: Incident, city: City, rng: np.random.Generator, kind: str) -> Resolved:
    pool = [int(g) for g in city.global_of[_m(city, kind)]]
    if kind == "hazmat":  # a gas detector: that is where a frozen or silent sensor hides a leak
        model = _model(city, "hazmat", where, HazmatModel)
        pool = [g for g in pool if not model.is_tank[city.local_of[g]]]
    picked = _candidates(where, spec, city, pool)
    target = picked[0] if spec.sensor_id else _pick(rng, picked)
    return np.array([target], np.int64), np.array([TARGET], np.int64), np.zeros(1)


def _meter(where: str, spec: MeterFault | MeterReset | MeterIdle, city: City, rng: np.random.Generator) -> Resolved:
    meters = [int(g) for g in city.global_of[_m(city, "energy")]]
    picked = _candidates(where, spec, city, meters)
    target = picked[0] if (spec.sensor_id or spec.site_id) else _pick(rng, picked)
    return np.array([target], np.int64), np.array([TARGET], np.int64), np.zeros(1)


def _m(city: City, kind: str) -> int:
    for m, model in enumerate(city.models):
        if model.kind == kind:
            return m
    msg = f"scenario: the topology has no simulated sensor kind {kind!r}"
    raise ConfigError(msg)


def _model(city: City, kind: str, where: str, cls: type[_M]) -> _M:
    model = city.models[_m(city, kind)]
    if not isinstance(model, cls):
        msg = f"{where}: kind {kind!r} is not modelled by {cls.__name__}"
        raise ConfigError(msg)
    return model


def _distance(city: City, a: int, b: int) -> float:
    sa, sb = city.sensors[a], city.sensors[b]
    return math.hypot(sa.lat - sb.lat, (sa.lon - sb.lon) * math.cos(math.radians(sa.lat)))


def apply(
    plan: Plan, sensor: IntArray, t_s: FloatArray, values: Values, flags: FlagArray, rng: np.random.Generator
) -> IntArray:
    """Bend the readings of ``sensor`` at ``t_s`` that ``plan`` covers (in place);
    returns the positions it touched."""
    hit, rows = plan.covering(sensor, t_s)
    if hit.size == 0:
        return hit
    e = plan.envelope(t_s[hit])
    part = plan.part[rows]
    jitter = 1.0 + bounded_noise(rng, hit.size, JITTER_SD)
    peak = plan.peak[rows] * jitter
    spec = plan.spec
    if isinstance(spec, GasLeak):
        _bend_gas(values, hit, e, part, peak)
    elif isinstance(spec, PollutionEpisode):
        _blend(values, "pm25", hit, e, peak)
        _blend(values, "pm10", hit, e, peak * spec.pm10_ratio)
    elif isinstance(spec, TrafficIncident):
        _bend_traffic(values, hit, e, part, peak, spec.occupancy_pct * jitter)
    elif isinstance(spec, MeterFault):
        values["power_kw"][hit] = 0.0
        flags[hit] = spec.flag
    elif isinstance(spec, SlowLeak):
        values["gas_lel"][hit] += peak * e  # on top of the detector's zero offset
    elif isinstance(spec, StuckSensor):
        _freeze(plan, values, hit, rows)
    elif isinstance(spec, MeterIdle):
        values["power_kw"][hit] = 0.0
    return hit


def _freeze(plan: Plan, values: Values, hit: IntArray, rows: IntArray) -> None:
    """Every quantity keeps the value of the plan row's first reading in the incident."""
    for quantity, column in values.items():
        if quantity == "energy_kwh":  # the register is the model's (commit): it keeps counting
            continue
        held = plan.memory.setdefault(quantity, np.full(plan.rows.size, np.nan))
        new = np.isnan(held[rows])
        held[rows[new]] = column[hit[new]]
        column[hit] = held[rows]


def silenced(plans: list[Plan], sensor: IntArray, t_s: FloatArray) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    """Which due readings a ``sensor_silent`` incident swallows, and when each such sensor
    reports next (the incident's end)."""
    mute = np.zeros(sensor.size, bool)
    resume = np.full(sensor.size, np.nan)
    for plan in plans:
        if isinstance(plan.spec, SensorSilent):
            hit, _ = plan.covering(sensor, t_s)
            mute[hit] = True
            resume[hit] = plan.end_s
    return mute, resume


def apply_committed(plan: Plan, sensor: IntArray, t_s: FloatArray, values: Values) -> None:
    """Incidents on what the model computed last (the energy register): a ``meter_reset``
    shows the register less its value at the first reading of the incident."""
    if not isinstance(plan.spec, MeterReset):
        return
    hit, rows = plan.covering(sensor, t_s)
    if hit.size == 0:
        return
    offset = plan.memory.setdefault("register_offset", np.full(plan.rows.size, np.nan))
    register = values["energy_kwh"]
    new = np.isnan(offset[rows])
    offset[rows[new]] = register[hit[new]]
    register[hit] = register[hit] - offset[rows]


def _blend(values: Values, quantity: str, hit: IntArray, e: FloatArray, target: FloatArray) -> None:
    if quantity in values:
        values[quantity][hit] = values[quantity][hit] * (1.0 - e) + target * e


def _bend_gas(values: Values, hit: IntArray, e: FloatArray, part: IntArray, peak: FloatArray) -> None:
    det, tank = part == TARGET, part == TANK
    lel = values["gas_lel"]
    lel[hit[det]] += peak[det] * e[det]  # on top of the detector's zero offset
    pressure = values["pressure_kpa"]
    pressure[hit[tank]] *= 1.0 - peak[tank] * e[tank]


def _bend_traffic(
    values: Values, hit: IntArray, e: FloatArray, part: IntArray, peak: FloatArray, occ: FloatArray
) -> None:
    slow = part != DOWNSTREAM
    flow_cut = np.select([part == TARGET, part == UPSTREAM], [0.7, 0.3], 0.6)
    occ_target = np.minimum(np.select([part == TARGET, part == UPSTREAM], [occ, 0.8 * occ], 0.0), 100.0)
    values["flow_vph"][hit] *= 1.0 - flow_cut * e
    _blend(values, "speed_kmh", hit[slow], e[slow], peak[slow])
    occupancy = values["occupancy_pct"]
    down = ~slow  # downstream: the road empties, occupancy halves
    occupancy[hit[slow]] = occupancy[hit[slow]] * (1.0 - e[slow]) + occ_target[slow] * e[slow]
    occupancy[hit[down]] *= 1.0 - 0.5 * e[down]
