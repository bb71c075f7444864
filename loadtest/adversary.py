"""An adversarial city: randomized scenarios with ground truth, built apart from
streams/sim so the detectors meet data nobody tuned them on.

Per seed, everything is drawn afresh: which catalog sensors take part (the rest
never report: their no-signal alarms are expected, not false), each sensor's level,
daily and weekly shape, noise, reporting period and its jitter, clock skew, and how
its readings travel: gateway batches (several readings in one JSON array),
out-of-order and duplicate deliveries, store-and-forward uploads (a station that
lost its link sends hours of its own readings at once). Then the consumer: the
records of each Kafka partition (Kafka's murmur2 of the sensor id) are read in their
order, but partitions are drained at different speeds (a catch-up after lag, one slow
partition), in batches of random sizes (bursts).

Incidents (one sensor each, random start, size and shape):

============== ============================================== =====================
type           what happens                                   alarms that find it
============== ============================================== =====================
gas_leak       %LEL ramps to 30-80                            gas_lel_alarm (+2 readings)
toxic_release  ppm ramps past the detector's high limit       toxic_gas_alarm (+2 readings)
overpressure   tank pressure past its high limit              tank_pressure_limit (+2 readings)
overfill       tank level past its high limit                 tank_level_limit (+2 readings)
pollution      PM2.5 climbs to 160-300 ug/m3 over 1-2 h      aqi_level
congestion     speed falls under the road's low limit         road_speed_drop
power_surge    3-6x the usual load, inside contract capacity  meter_power_profile_spike
slow_drift     tank temperature +8-15 C over 1-2 h            tank_temperature_rise_prealarm/drift/limit
level_shift    NO2 steps to 3-5x                              air_no2_outlier
voltage_sag    supply 12-20 % under nominal                   meter_voltage_range
stuck          the value freezes                              stuck_*
silent         the sensor stops for 30-90 min                 no_signal_<kind>
lost_period    gaps of 3-8 periods for an hour                no_signal_<kind>
store_forward  a station offline 1-3 h, then uploads it all   no_signal_air
============== ============================================== =====================
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streams.catalog import SensorInfo
from streams.topology import Topology, key_partition

MS_S = 1000
HOUR_MS = 3_600_000
WARMUP_MS = 2 * HOUR_MS  # incidents start after this: every detector has history
# energy meters come with three days of history before the scenario's start (incidents
# stay in the scenario's own hours): a meter's hourly load profile needs days to learn,
# and an 8-hour run of meters seen for the first time would only test their first day
HISTORY_MS = {"energy": 3 * 24 * HOUR_MS}
THRESHOLD_TYPES = frozenset({"gas_leak", "toxic_release", "overpressure", "overfill"})
SILENCE_TYPES = frozenset({"silent", "lost_period", "store_forward"})


@dataclass
class Incident:
    id: str
    type: str
    sensor_id: str
    kind: str
    start_ms: int  # event time (true)
    end_ms: int
    rules: frozenset[str]
    crossing_ms: list[int] = field(default_factory=list)  # reported ts of the crossing reading and the next two


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as the consumer will see it."""

    kind: str
    partition: int
    arrival_ms: int  # when the broker got it (Kafka order within a partition)
    key: bytes
    value: bytes


@dataclass
class Scenario:
    seed: int
    start_ms: int
    hours: float
    records: list[Record]
    incidents: list[Incident]
    taking_part: dict[str, str]  # sensor_id -> kind
    absent: dict[str, str]  # catalog sensors that never report
    consumer: str  # how partitions were drained
    sensor_hours: float = 0.0  # of the sensors taking part, history included
    skew_ms: dict[str, int] = field(default_factory=dict)  # sensor clock minus true time
    period_ms: dict[str, int] = field(default_factory=dict)


@dataclass
class _Sensor:
    info: SensorInfo
    period_ms: int
    skew_ms: int
    t_ms: np.ndarray  # true event times
    values: dict[str, np.ndarray]  # quantity -> value per reading (NaN: not sent)
    keep: np.ndarray  # reading is sent at all
    arrival_ms: np.ndarray
    group: np.ndarray  # readings with the same group id travel in one JSON array


PERIOD_S = {"air": 60, "hazmat": 10, "traffic": 30, "energy": 60}
INCIDENT_KINDS: dict[str, tuple[str, ...]] = {
    "hazmat": ("gas_leak", "toxic_release", "overpressure", "overfill", "slow_drift", "stuck", "silent", "lost_period"),
    "air": ("pollution", "level_shift", "stuck", "silent", "store_forward"),
    "traffic": ("congestion", "stuck", "silent", "lost_period"),
    "energy": ("power_surge", "voltage_sag", "stuck", "silent"),
}


def generate(topology: Topology, seed: int, hours: float = 8.0, start_ms: int | None = None,
             share: tuple[float, float] = (0.3, 0.8), warmup_ms: int = WARMUP_MS,
             consumer: str | None = None) -> Scenario:
    """A scenario of ``hours`` from ``start_ms`` (default: a random hour of 2026): a random
    ``share`` of the catalog takes part, incidents start after ``warmup_ms``; ``consumer``
    forces how partitions are drained (live, catchup, slow_partition; default: random)."""
    rng = np.random.default_rng(seed)
    if start_ms is None:  # a random local time in 2026, so the week and the day fall anywhere
        start_ms = 1_767_225_600_000 + int(rng.integers(0, 330)) * 86_400_000 + int(rng.integers(0, 24)) * HOUR_MS
    span_ms = round(hours * HOUR_MS)
    sensors: list[_Sensor] = []
    taking_part: dict[str, str] = {}
    absent: dict[str, str] = {}
    for kind in PERIOD_S:
        catalog = list(topology.catalog.by_kind(kind))
        part = rng.uniform(*share)
        chosen = rng.random(len(catalog)) < part
        for info, on in zip(catalog, chosen, strict=True):
            if on:
                sensors.append(_make_sensor(info, kind, rng, start_ms, span_ms))
                taking_part[info.sensor_id] = kind
            else:
                absent[info.sensor_id] = kind
    incidents = _incidents(sensors, rng, start_ms, span_ms, warmup_ms)
    _deliveries(sensors, rng)
    partitions = topology.spec.topics.partitions
    records = _records(sensors, rng, partitions)
    records, consumer = _consume(records, rng, partitions, start_ms, span_ms, consumer)
    sensor_hours = sum((span_ms + HISTORY_MS.get(s.info.kind, 0)) / HOUR_MS for s in sensors)
    return Scenario(seed, start_ms, hours, records, incidents, taking_part, absent, consumer, sensor_hours,
                    {s.info.sensor_id: s.skew_ms for s in sensors}, {s.info.sensor_id: s.period_ms for s in sensors})


# -- sensors ----------------------------------------------------------------------------
def _make_sensor(info: SensorInfo, kind: str, rng: np.random.Generator, start_ms: int, span_ms: int) -> _Sensor:
    period_ms = PERIOD_S[kind] * MS_S
    if rng.random() < 0.15:  # some sensors report slower than the kind's usual period
        period_ms = round(period_ms * rng.uniform(1.0, 2.0))
    history = HISTORY_MS.get(kind, 0)
    n = (span_ms + history) // period_ms
    phase = rng.uniform(0, period_ms)
    jitter = rng.uniform(0.0, 0.3) * period_ms
    t = start_ms - history + phase + np.arange(n) * period_ms + rng.uniform(-jitter, jitter, n)
    t_ms = np.sort(np.round(t).astype(np.int64))
    skew_ms = int(rng.choice([0, 1]) * rng.normal(0, 5_000) + (rng.random() < 0.05) * rng.uniform(20_000, 120_000))
    hour = ((t_ms + 8 * HOUR_MS) % (24 * HOUR_MS)) / HOUR_MS
    weekday = ((t_ms + 8 * HOUR_MS) // (24 * HOUR_MS) + 3) % 7
    values = MODELS[kind](info, rng, t_ms, hour, weekday)
    return _Sensor(info, period_ms, skew_ms, t_ms, values, np.ones(n, bool), t_ms.copy(), np.arange(n))


def _ar1(rng: np.random.Generator, n: int, sd: float, rho: float = 0.9) -> np.ndarray:
    """Unit-variance-scaled AR(1) noise (vectorized through lfilter)."""
    from scipy.signal import lfilter

    shocks = rng.normal(0, sd * math.sqrt(1 - rho * rho), n)
    out: np.ndarray = lfilter([1.0], [1.0, -rho], shocks)
    return out


def _daily(hour: np.ndarray, peak_hour: float, amplitude: float) -> np.ndarray:
    out: np.ndarray = 1.0 + amplitude * np.cos(2 * np.pi * (hour - peak_hour) / 24.0)
    return out


def _air(info: SensorInfo, rng: np.random.Generator, t: np.ndarray, hour: np.ndarray, wd: np.ndarray) -> dict[str, np.ndarray]:
    n = t.shape[0]
    week = np.where(wd >= 5, rng.uniform(0.8, 1.0), 1.0)
    noise = np.exp(_ar1(rng, n, rng.uniform(0.03, 0.12)))
    pm25 = rng.uniform(12, 45) * _daily(hour, rng.uniform(6, 10), rng.uniform(0.1, 0.4)) * week * noise
    return {
        "pm25": pm25,
        "pm10": pm25 * rng.uniform(1.4, 1.9) * np.exp(_ar1(rng, n, 0.03)),
        "no2": rng.uniform(15, 45) * _daily(hour, rng.uniform(7, 9), 0.3) * week * np.exp(_ar1(rng, n, rng.uniform(0.03, 0.1))),
        "so2": rng.uniform(4, 14) * np.exp(_ar1(rng, n, 0.05)),
        "o3": rng.uniform(40, 90) * _daily(hour, 15.0, rng.uniform(0.2, 0.5)) * np.exp(_ar1(rng, n, 0.05)),
        "co": rng.uniform(0.4, 1.1) * np.exp(_ar1(rng, n, 0.04)),
    }


def _hazmat(info: SensorInfo, rng: np.random.Generator, t: np.ndarray, hour: np.ndarray, wd: np.ndarray) -> dict[str, np.ndarray]:
    n = t.shape[0]
    nan = np.full(n, np.nan)
    lim = info.limits
    if any(k.startswith(("level_pct", "pressure_kpa", "temperature_c")) for k in lim):
        temp = rng.uniform(22, 30) + rng.uniform(1, 4) * np.cos(2 * np.pi * (hour - 15) / 24) + _ar1(rng, n, 0.2)
        temp = np.minimum(temp, lim.get("temperature_c.high", 45.0) - 6.0)
        p_op = lim.get("pressure_kpa.high", 1000.0) * rng.uniform(0.55, 0.75)
        pressure = p_op * (1 + 0.008 * (temp - 26)) * (1 + _ar1(rng, n, rng.uniform(0.002, 0.006)))
        hi = lim.get("level_pct.high", 85.0) - 8.0
        lo = rng.uniform(10, 30)
        cycle = rng.uniform(4, 12) * HOUR_MS  # fill and draw down
        level = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * (t - t[0]) / cycle + rng.uniform(0, 6.3)))
        level = level + _ar1(rng, n, 0.2)
        return {"gas_lel": nan, "gas_ppm": nan, "level_pct": level, "pressure_kpa": pressure, "temperature_c": temp}
    lel = np.clip(rng.uniform(0.0, 2.0) + _ar1(rng, n, rng.uniform(0.1, 0.5), 0.7), 0.0, None)
    ppm = np.clip(rng.uniform(0.2, 1.5) + _ar1(rng, n, rng.uniform(0.05, 0.3), 0.7), 0.0, None) if "gas_ppm.high" in lim else nan
    return {"gas_lel": lel, "gas_ppm": ppm, "level_pct": nan, "pressure_kpa": nan, "temperature_c": nan}


def _traffic(info: SensorInfo, rng: np.random.Generator, t: np.ndarray, hour: np.ndarray, wd: np.ndarray) -> dict[str, np.ndarray]:
    n = t.shape[0]
    low = info.limits.get("speed_kmh.low", 40.0)
    free = rng.uniform(low + 20, low + 50)
    rush = np.exp(-((hour - 8.2) ** 2) / 1.5) + np.exp(-((hour - 18.0) ** 2) / 2.0)
    rush = np.where(wd >= 5, 0.4 * rush, rush)
    dip = rng.uniform(0.1, 0.2)
    speed = np.maximum(free * (1 - dip * rush) * (1 + _ar1(rng, n, 0.04, 0.6)), low + 6)
    flow = rng.uniform(300, 1500) * (0.3 + rush + 0.5 * _daily(hour, 13, 0.6)) * np.exp(_ar1(rng, n, 0.08, 0.6))
    occupancy = np.clip(flow / speed * rng.uniform(0.1, 0.2), 1, 60)
    return {"speed_kmh": speed, "flow_vph": flow, "occupancy_pct": occupancy}


def _energy(info: SensorInfo, rng: np.random.Generator, t: np.ndarray, hour: np.ndarray, wd: np.ndarray) -> dict[str, np.ndarray]:
    n = t.shape[0]
    cap = info.limits.get("power_kw.high", 500.0)
    base = cap * rng.uniform(0.1, 0.3)
    if rng.random() < 0.4:  # round the clock
        shape = np.ones(n)
    else:
        start, end = rng.uniform(7, 9), rng.uniform(17, 21)
        shape = np.where((hour >= start) & (hour < end), rng.uniform(1.5, 2.8), 1.0)
        shape = np.where(wd == 6, 1.0, shape)  # Sunday off
    power = np.minimum(base * shape * (1 + _ar1(rng, n, rng.uniform(0.01, 0.05), 0.8)), 0.85 * cap)
    dt_h = np.diff(t, prepend=t[0]) / HOUR_MS
    register = cap * rng.uniform(1e3, 1e4) + np.cumsum(power * dt_h)
    nominal = info.limits.get("voltage_v.nominal", 380.0)
    voltage = nominal * (rng.uniform(0.985, 1.015) + _ar1(rng, n, 0.004, 0.8))
    return {"energy_kwh": register, "power_kw": power, "voltage_v": voltage}


MODELS: dict[str, Callable[[SensorInfo, np.random.Generator, np.ndarray, np.ndarray, np.ndarray], dict[str, np.ndarray]]] = {
    "air": _air, "hazmat": _hazmat, "traffic": _traffic, "energy": _energy,
}


# -- incidents ----------------------------------------------------------------------------
def _incidents(sensors: list[_Sensor], rng: np.random.Generator, start_ms: int, span_ms: int,
               warmup_ms: int) -> list[Incident]:
    out: list[Incident] = []
    wanted = int(rng.integers(12, 20))
    order = rng.permutation(len(sensors))
    for i in order.tolist():
        if len(out) == wanted:
            break
        sensor = sensors[i]
        kind = sensor.info.kind
        choices = [c for c in INCIDENT_KINDS[kind] if _fits(c, sensor)]
        kind_choice = str(rng.choice(choices))
        duration = int(rng.uniform(*DURATION_MIN[kind_choice]) * 60_000)
        latest = start_ms + span_ms - duration - HOUR_MS // 2
        if latest <= start_ms + warmup_ms:
            continue
        begin = int(rng.integers(start_ms + warmup_ms, latest))
        incident = APPLY[kind_choice](sensor, rng, begin, begin + duration)
        if incident is not None:
            incident.id = f"{kind_choice}-{len(out):02d}"
            out.append(incident)
    return out


DURATION_MIN: dict[str, tuple[float, float]] = {
    "gas_leak": (15, 40), "toxic_release": (15, 40), "overpressure": (20, 60), "overfill": (20, 60),
    "pollution": (120, 200), "congestion": (20, 60), "power_surge": (60, 120), "slow_drift": (60, 120),
    "level_shift": (60, 90), "voltage_sag": (20, 40), "stuck": (30, 60), "silent": (30, 90),
    "lost_period": (60, 70), "store_forward": (60, 180),
}


def _is_tank(sensor: _Sensor) -> bool:
    return not np.isnan(sensor.values["level_pct"]).all() if "level_pct" in sensor.values else False


def _fits(choice: str, sensor: _Sensor) -> bool:
    if sensor.info.kind != "hazmat":
        return True
    tank = _is_tank(sensor)
    if choice in ("overpressure", "overfill", "slow_drift"):
        return tank
    if choice == "toxic_release":
        return not tank and not np.isnan(sensor.values["gas_ppm"]).all()
    if choice in ("gas_leak", "stuck"):
        return not tank
    return True


def _envelope(t: np.ndarray, begin: int, end: int, ramp_ms: float) -> np.ndarray:
    """0 -> 1 over ramp_ms from begin, 1, then 1 -> 0 over ramp_ms before end."""
    up = np.clip((t - begin) / ramp_ms, 0, 1)
    down = np.clip((end - t) / ramp_ms, 0, 1)
    out: np.ndarray = np.minimum(up, down)
    return out


def _incident(sensor: _Sensor, kind: str, begin: int, end: int, rules: set[str]) -> Incident:
    return Incident("", kind, sensor.info.sensor_id, sensor.info.kind, begin, end, frozenset(rules))


def _crossing(sensor: _Sensor, incident: Incident, crossed: np.ndarray) -> Incident | None:
    """Note the reported times of the first crossing reading and the two after it."""
    k = np.flatnonzero(crossed & sensor.keep)
    if k.size == 0:
        return None
    kept = np.flatnonzero(sensor.keep)
    at = int(np.searchsorted(kept, k[0]))
    incident.crossing_ms = [int(sensor.t_ms[j]) + sensor.skew_ms for j in kept[at:at + 3]]
    return incident


def _gas_leak(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    peak = rng.uniform(30, 80)
    env = _envelope(s.t_ms, b, e, rng.uniform(1, 10) * 60_000)
    s.values["gas_lel"] = np.maximum(s.values["gas_lel"], peak * env)
    return _crossing(s, _incident(s, "gas_leak", b, e, {"gas_lel_alarm"}), s.values["gas_lel"] >= 25)


def _toxic(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    high = s.info.limits["gas_ppm.high"]
    env = _envelope(s.t_ms, b, e, rng.uniform(1, 8) * 60_000)
    s.values["gas_ppm"] = np.maximum(s.values["gas_ppm"], rng.uniform(1.2, 4.0) * high * env)
    return _crossing(s, _incident(s, "toxic_release", b, e, {"toxic_gas_alarm"}), s.values["gas_ppm"] >= high)


def _towards(s: _Sensor, q: str, target: float, env: np.ndarray) -> None:
    s.values[q] = s.values[q] + (target - s.values[q]) * env


def _overpressure(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    high = s.info.limits["pressure_kpa.high"]
    _towards(s, "pressure_kpa", rng.uniform(1.03, 1.15) * high, _envelope(s.t_ms, b, e, rng.uniform(5, 15) * 60_000))
    return _crossing(s, _incident(s, "overpressure", b, e, {"tank_pressure_limit"}), s.values["pressure_kpa"] >= high)


def _overfill(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    high = s.info.limits["level_pct.high"]
    _towards(s, "level_pct", min(99.5, high + rng.uniform(2, 8)), _envelope(s.t_ms, b, e, rng.uniform(5, 15) * 60_000))
    return _crossing(s, _incident(s, "overfill", b, e, {"tank_level_limit"}), s.values["level_pct"] >= high)


def _pollution(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    env = _envelope(s.t_ms, b, e, rng.uniform(40, 60) * 60_000)
    target = rng.uniform(160, 300)
    _towards(s, "pm25", target, env)
    _towards(s, "pm10", target * 1.5, env)
    return _incident(s, "pollution", b, e, {"aqi_level", "air_pm25_anomaly"})


def _congestion(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    low = s.info.limits.get("speed_kmh.low", 40.0)
    _towards(s, "speed_kmh", rng.uniform(5, low - 12), _envelope(s.t_ms, b, e, rng.uniform(2, 10) * 60_000))
    return _incident(s, "congestion", b, e, {"road_speed_drop", "road_incident_pair"})


def _power_surge(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    cap = s.info.limits.get("power_kw.high", 500.0)
    inside = (s.t_ms >= b) & (s.t_ms < e)
    ratio = min(rng.uniform(3, 6), 0.95 * cap / float(s.values["power_kw"][inside].max()))
    if ratio < 2.5:  # no room under the contract capacity at that hour
        return None
    env = _envelope(s.t_ms, b, e, 2 * 60_000)
    s.values["power_kw"] = s.values["power_kw"] * (1 + (ratio - 1) * env)
    return _incident(s, "power_surge", b, e, {"meter_power_profile_spike"})


def _slow_drift(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    rise = np.clip((s.t_ms - b) / (e - b), 0, 1) * (s.t_ms < e)
    s.values["temperature_c"] = s.values["temperature_c"] + rng.uniform(8, 15) * rise
    return _incident(s, "slow_drift", b, e, {"tank_temperature_drift", "tank_temperature_limit", "tank_temperature_rise_prealarm"})


def _level_shift(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    step = (s.t_ms >= b) & (s.t_ms < e)
    s.values["no2"] = s.values["no2"] * np.where(step, rng.uniform(3, 5), 1.0)
    return _incident(s, "level_shift", b, e, {"air_no2_outlier"})


def _voltage_sag(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    env = _envelope(s.t_ms, b, e, 60_000)
    s.values["voltage_v"] = s.values["voltage_v"] * (1 - rng.uniform(0.12, 0.2) * env)
    return _incident(s, "voltage_sag", b, e, {"meter_voltage_range"})


STUCK_QUANTITY = {"air": ("pm25", "stuck_air_pm25"), "hazmat": ("gas_lel", "stuck_gas_lel"),
                  "traffic": ("speed_kmh", "stuck_road_speed"), "energy": ("power_kw", "stuck_meter_power")}


def _stuck(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    q, rule = STUCK_QUANTITY[s.info.kind]
    inside = np.flatnonzero((s.t_ms >= b) & (s.t_ms < e))
    if inside.size < 12:
        return None
    s.values[q][inside] = round(float(s.values[q][inside[0]]), 1)
    return _incident(s, "stuck", b, e, {rule})


def _silent(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    s.keep &= ~((s.t_ms >= b) & (s.t_ms < e))
    return _incident(s, "silent", b, e, {f"no_signal_{s.info.kind}"})


def _lost_period(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    inside = np.flatnonzero((s.t_ms >= b) & (s.t_ms < e))
    gaps = rng.integers(3, 9, inside.size)  # keep one reading, then skip 3-8 periods
    kept = np.cumsum(gaps)
    kept = kept[kept < inside.size]
    drop = np.ones(inside.size, bool)
    drop[kept] = False
    s.keep[inside[drop]] = False
    return _incident(s, "lost_period", b, e, {f"no_signal_{s.info.kind}"})


def _store_forward(s: _Sensor, rng: np.random.Generator, b: int, e: int) -> Incident | None:
    inside = (s.t_ms >= b) & (s.t_ms < e)
    s.arrival_ms[inside] = e + int(rng.integers(0, 60_000))
    s.group[inside] = -1 - int(rng.integers(1 << 30))  # one upload, one JSON array
    return _incident(s, "store_forward", b, e, {"no_signal_air"})


APPLY: dict[str, Callable[[_Sensor, np.random.Generator, int, int], Incident | None]] = {
    "gas_leak": _gas_leak, "toxic_release": _toxic, "overpressure": _overpressure, "overfill": _overfill,
    "pollution": _pollution, "congestion": _congestion, "power_surge": _power_surge, "slow_drift": _slow_drift,
    "level_shift": _level_shift, "voltage_sag": _voltage_sag, "stuck": _stuck, "silent": _silent,
    "lost_period": _lost_period, "store_forward": _store_forward,
}


# -- delivery -------------------------------------------------------------------------------
def _deliveries(sensors: list[_Sensor], rng: np.random.Generator) -> None:
    """Transport delay, gateway batches, out-of-order and duplicate deliveries."""
    for s in sensors:
        n = s.t_ms.shape[0]
        normal = s.group >= 0
        s.arrival_ms = np.where(normal, s.t_ms + rng.integers(50, 2_000, n), s.arrival_ms)
        if rng.random() < 0.25:  # a gateway sends g readings at a time
            g = int(rng.integers(2, 7))
            s.group = np.where(normal, np.arange(n) // g, s.group)
        late = normal & (rng.random(n) < 0.01)
        s.arrival_ms = np.where(late, s.arrival_ms + rng.integers(1, 4, n) * s.period_ms, s.arrival_ms)
        s.group = np.where(late, n + np.arange(n), s.group)  # a late reading travels alone


def _records(sensors: list[_Sensor], rng: np.random.Generator, partitions: int) -> list[Record]:
    out: list[Record] = []
    for s in sensors:
        sid = s.info.sensor_id
        key = sid.encode()
        partition = key_partition(key, partitions)
        rfc3339 = rng.random() < 0.5
        quantities = [q for q, v in s.values.items() if not np.isnan(v).all()]
        columns = {q: np.round(np.clip(s.values[q], 0.0, None) if q != "power_kw" else s.values[q], 3) for q in quantities}
        ts = s.t_ms + s.skew_ms
        kept = np.flatnonzero(s.keep)
        groups: dict[int, list[int]] = {}
        for j in kept.tolist():
            groups.setdefault(int(s.group[j]), []).append(j)
        dup = rng.random(len(groups)) < 0.005
        for (_, rows), twice in zip(groups.items(), dup.tolist(), strict=True):
            readings = [{"sensor_id": sid, "ts": _ts(int(ts[j]), rfc3339),
                         "values": {q: float(columns[q][j]) for q in quantities}} for j in rows]
            body = json.dumps(readings[0] if len(readings) == 1 else readings).encode()
            arrival = int(s.arrival_ms[rows].max())
            out.append(Record(s.info.kind, partition, arrival, key, body))
            if twice:
                out.append(Record(s.info.kind, partition, arrival + int(rng.integers(1, 5)) * s.period_ms, key, body))
    return out


def _ts(ms: int, rfc3339: bool) -> str | int:
    if not rfc3339:
        return ms
    from datetime import datetime, timedelta, timezone

    local = datetime.fromtimestamp(ms / 1000, tz=timezone(timedelta(hours=8)))
    return local.isoformat(timespec="milliseconds")


# -- the consumer ---------------------------------------------------------------------------
def _consume(records: list[Record], rng: np.random.Generator, partitions: int, start_ms: int,
             span_ms: int, forced: str | None = None) -> tuple[list[Record], str]:
    """The records in the order one worker reads them: each (kind, partition) in broker
    order (arrival), the partitions drained at their own pace."""
    drawn = str(rng.choice(["live", "catchup", "slow_partition"]))
    mode = forced or drawn
    arrival = np.array([r.arrival_ms for r in records], np.int64)
    kinds = {k: i for i, k in enumerate(PERIOD_S)}
    lane = np.array([kinds[r.kind] * 1000 + r.partition for r in records], np.int64)
    consumed = arrival.astype(np.float64)
    if mode == "catchup":  # the worker was down for the first hours, then drains the backlog
        restart = start_ms + rng.uniform(0.2, 0.6) * span_ms
        for value in np.unique(lane):
            mine = np.flatnonzero((lane == value) & (arrival < restart))
            mine = mine[np.argsort(arrival[mine], kind="stable")]
            rate = rng.uniform(20, 2_000) / 1000  # records per ms: partitions drain at very different speeds
            consumed[mine] = restart + np.arange(mine.size) / rate
    elif mode == "slow_partition":  # one partition of every kind lags up to an hour, then catches up
        slow = int(rng.integers(partitions))
        lag_max = rng.uniform(10, 60) * 60_000
        mid = start_ms + rng.uniform(0.3, 0.7) * span_ms
        lag = lag_max * np.clip(1 - np.abs(arrival - mid) / (0.25 * span_ms), 0, 1)
        on_slow = np.array([r.partition == slow for r in records])
        consumed = np.where(on_slow, arrival + lag, consumed)
    # within a lane, consumption follows broker order and never goes back in time
    out_order = np.lexsort((arrival, lane))
    by_lane = consumed[out_order]
    lanes = lane[out_order]
    heads = np.r_[True, lanes[1:] != lanes[:-1]]
    seg = np.cumsum(heads) - 1
    cum = np.maximum.accumulate(by_lane + seg * 1e15) - seg * 1e15  # per-lane running max
    consumed[out_order] = cum
    order = np.lexsort((arrival, consumed))
    return [Record(records[i].kind, records[i].partition, int(consumed[i]), records[i].key, records[i].value)
            for i in order.tolist()], mode
