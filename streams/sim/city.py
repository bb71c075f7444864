"""The simulated city: per-sensor parameters and vectorized reading models.

Each kind has one model holding per-sensor parameters in numpy arrays (drawn
once from the seed) and a ``sample`` that computes every quantity for a whole
set of due sensors at once. Quiet-city values stay clear of the route
thresholds by construction: noise is bounded (3 sigma, clipped) and the
diurnal extremes sit well inside each sensor's limits, so only scripted
incidents cross them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from detectors.base import FloatArray, IntArray
from streams.catalog import SensorInfo

Values = dict[str, FloatArray]  # quantity -> one value per sampled sensor; NaN = not reported
FlagArray = npt.NDArray[np.str_]  # HJ 212 flag letter per reading
NO_SENSOR = -1


def bump(hour: FloatArray, centre: float, width_h: float) -> FloatArray:
    """A Gaussian bump on the 24-hour circle (a peak at ``centre`` o'clock)."""
    d = np.mod(hour - centre + 12.0, 24.0) - 12.0
    out: FloatArray = np.exp(-0.5 * (d / width_h) ** 2)
    return out


def working_hours(hour: FloatArray) -> FloatArray:
    """~1 from 08:00 to 18:00 with a lunch dip, ~0 at night."""
    on = 1.0 / (1.0 + np.exp(-(hour - 8.0) / 0.35))
    off = 1.0 / (1.0 + np.exp(-(18.0 - hour) / 0.35))
    out: FloatArray = on * off * (1.0 - 0.3 * bump(hour, 12.5, 0.45))
    return out


def bounded_noise(rng: np.random.Generator, n: int, sd: FloatArray | float) -> FloatArray:
    """Gaussian noise clipped at 3 sigma: realistic, yet never crosses a threshold by chance."""
    out: FloatArray = np.clip(rng.standard_normal(n), -3.0, 3.0) * sd
    return out


def _limit(sensors: Sequence[SensorInfo], name: str, default: float) -> FloatArray:
    return np.array([s.limits.get(name, default) for s in sensors], np.float64)


def _nan(n: int) -> FloatArray:
    return np.full(n, np.nan)


class KindModel(Protocol):
    """Readings of one sensor kind; ``local`` indexes the model's own sensors."""

    kind: str
    sensors: tuple[SensorInfo, ...]

    def sample(self, local: IntArray, t_s: FloatArray, hour: FloatArray, rng: np.random.Generator) -> Values: ...

    def commit(self, local: IntArray, t_s: FloatArray, values: Values) -> None:
        """Fold the final (post-incident) values into per-sensor state."""


class AirModel:
    """Air-quality stations: traffic peaks morning and evening, ozone in the afternoon."""

    kind = "air"

    def __init__(self, sensors: Sequence[SensorInfo], rng: np.random.Generator) -> None:
        self.sensors = tuple(sensors)
        n = len(self.sensors)
        districts = sorted({s.district for s in self.sensors})
        district_factor = dict(zip(districts, rng.uniform(0.85, 1.2, len(districts)), strict=True))
        self.pm_level = 28.0 * np.array([district_factor[s.district] for s in self.sensors]) * rng.uniform(0.9, 1.1, n)
        self.pm10_ratio = rng.uniform(1.5, 1.8, n)
        self.no2_base = rng.uniform(22.0, 38.0, n)
        self.so2_base = rng.uniform(5.0, 11.0, n)
        self.o3_amp = rng.uniform(80.0, 115.0, n)
        self.co_base = rng.uniform(0.5, 0.8, n)

    def sample(self, local: IntArray, t_s: FloatArray, hour: FloatArray, rng: np.random.Generator) -> Values:
        n = local.size
        rush = bump(hour, 8.5, 1.5) + 0.8 * bump(hour, 20.0, 2.0)
        pm25 = self.pm_level[local] * (0.8 + 0.5 * rush) + bounded_noise(rng, n, 2.5)
        no2 = self.no2_base[local] * (0.7 + 0.9 * rush) + bounded_noise(rng, n, 3.0)
        return {
            "pm25": np.maximum(pm25, 1.0),
            "pm10": np.maximum(pm25 * self.pm10_ratio[local] + bounded_noise(rng, n, 4.0), 2.0),
            "no2": np.maximum(no2, 1.0),
            "so2": np.maximum(self.so2_base[local] + bounded_noise(rng, n, 1.0), 1.0),
            "o3": np.maximum(25.0 + self.o3_amp[local] * bump(hour, 15.0, 2.5) + bounded_noise(rng, n, 5.0), 2.0),
            "co": np.maximum(self.co_base[local] * (0.8 + 0.4 * rush) + bounded_noise(rng, n, 0.05), 0.1),
        }

    def commit(self, local: IntArray, t_s: FloatArray, values: Values) -> None:
        return None


class HazmatModel:
    """Gas detectors (0-3 %LEL, some with a toxic ppm head) and storage tanks
    (level drifting slowly between two bounds, pressure and temperature with the day)."""

    kind = "hazmat"
    LEVEL_DRIFT_SD = 0.15  # %/sqrt(s) of level random walk on top of the fill/draw rate

    def __init__(self, sensors: Sequence[SensorInfo], rng: np.random.Generator) -> None:
        self.sensors = tuple(sensors)
        n = len(self.sensors)
        self.is_tank = np.array([_is_tank(s) for s in self.sensors], bool)
        self.has_ppm = np.array([any(k.startswith("gas_ppm.") for k in s.limits) for s in self.sensors], bool)
        self.lel_zero = rng.uniform(0.2, 1.5, n)
        self.ppm_zero = rng.uniform(0.3, 1.5, n)
        level_high = _limit(self.sensors, "level_pct.high", 85.0)
        self.level_lo = rng.uniform(15.0, 30.0, n)
        self.level_hi = np.minimum(rng.uniform(60.0, 75.0, n), level_high - 10.0)
        self.level = rng.uniform(self.level_lo, self.level_hi)
        self.level_rate = rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 2.0, n) / 3600.0  # %/s
        self.pressure_op = _limit(self.sensors, "pressure_kpa.high", 1000.0) * rng.uniform(0.62, 0.75, n)
        temp_high = _limit(self.sensors, "temperature_c.high", 45.0)
        self.temp_offset = np.minimum(rng.uniform(-2.0, 2.0, n), temp_high - 40.0)
        self.last_t = np.full(n, np.nan)

    def sample(self, local: IntArray, t_s: FloatArray, hour: FloatArray, rng: np.random.Generator) -> Values:
        n = local.size
        tank = self.is_tank[local]
        gas = ~tank
        temp = 27.0 + 3.0 * np.cos(2 * np.pi * (hour - 15.0) / 24.0) + self.temp_offset[local]
        temp = temp + bounded_noise(rng, n, 0.2)
        lel = np.clip(self.lel_zero[local] + bounded_noise(rng, n, 0.3), 0.0, 3.0)
        ppm = np.clip(self.ppm_zero[local] + bounded_noise(rng, n, 0.2), 0.0, None)
        pressure = self.pressure_op[local] * (1.0 + 0.01 * (temp - 27.0) + bounded_noise(rng, n, 0.004))
        return {
            "gas_lel": np.where(gas, lel, np.nan),
            "gas_ppm": np.where(gas & self.has_ppm[local], ppm, np.nan),
            "level_pct": np.where(tank, self._drift_level(local, t_s, rng), np.nan),
            "pressure_kpa": np.where(tank, pressure, np.nan),
            "temperature_c": np.where(tank, temp, np.nan),
        }

    def _drift_level(self, local: IntArray, t_s: FloatArray, rng: np.random.Generator) -> FloatArray:
        dt = np.nan_to_num(t_s - self.last_t[local], nan=0.0)
        self.last_t[local] = t_s
        step = self.level_rate[local] * dt + bounded_noise(rng, local.size, self.LEVEL_DRIFT_SD * np.sqrt(dt))
        level = self.level[local] + step
        lo, hi = self.level_lo[local], self.level_hi[local]
        # Reflect at the bounds and turn the pump around: tanks fill, then get drawn down.
        turned = (level > hi) | (level < lo)
        level = np.where(level > hi, 2 * hi - level, np.where(level < lo, 2 * lo - level, level))
        self.level_rate[local] = np.where(turned, -self.level_rate[local], self.level_rate[local])
        self.level[local] = np.clip(level, lo, hi)
        out: FloatArray = self.level[local]
        return out

    def commit(self, local: IntArray, t_s: FloatArray, values: Values) -> None:
        return None


def _is_tank(sensor: SensorInfo) -> bool:
    return any(k.partition(".")[0] in ("level_pct", "pressure_kpa", "temperature_c") for k in sensor.limits)


class TrafficModel:
    """Road detector stations: flow and occupancy peak in the rush hours, speed dips.

    Free speed and the rush-hour floor scale with the station's ``speed_kmh.low``
    limit (free ~2.5x, floor ~1.45x), so urban and expressway stations both stay
    above ``low`` outside incidents.
    """

    kind = "traffic"

    def __init__(self, sensors: Sequence[SensorInfo], rng: np.random.Generator) -> None:
        self.sensors = tuple(sensors)
        n = len(self.sensors)
        self.low = _limit(self.sensors, "speed_kmh.low", 20.0)
        self.lowlow = _limit(self.sensors, "speed_kmh.lowlow", 10.0)
        expressway = self.low >= 30.0
        self.free_speed = self.low * rng.uniform(2.3, 2.65, n)
        self.rush_drop = 1.0 - self.low * rng.uniform(1.4, 1.55, n) / self.free_speed
        self.lanes = np.where(expressway, rng.integers(3, 5, n), rng.integers(2, 4, n)).astype(np.float64)
        self.lane_capacity = np.where(expressway, 1900.0, 1100.0) * rng.uniform(0.85, 1.05, n)
        self.upstream, self.downstream = road_neighbours(self.sensors)

    def sample(self, local: IntArray, t_s: FloatArray, hour: FloatArray, rng: np.random.Generator) -> Values:
        n = local.size
        rush = np.maximum(bump(hour, 8.0, 1.0), bump(hour, 18.0, 1.2))
        demand = 0.12 + 0.45 * bump(hour, 14.0, 4.5) + 0.4 * rush
        flow = self.lanes[local] * self.lane_capacity[local] * demand * (1.0 + bounded_noise(rng, n, 0.04))
        speed = self.free_speed[local] * (1.0 - self.rush_drop[local] * rush)
        speed = speed + bounded_noise(rng, n, 0.05 * self.low[local])
        return {"speed_kmh": speed, "flow_vph": flow, "occupancy_pct": occupancy(flow, speed, self.lanes[local])}

    def commit(self, local: IntArray, t_s: FloatArray, values: Values) -> None:
        return None


def occupancy(flow_vph: FloatArray, speed_kmh: FloatArray, lanes: FloatArray) -> FloatArray:
    """Time occupancy from density: vehicles/km/lane x ~6.5 m effective vehicle length."""
    density = flow_vph / (np.maximum(speed_kmh, 1.0) * lanes)
    out: FloatArray = np.clip(density * 0.65, 0.0, 100.0)
    return out


def road_neighbours(sensors: Sequence[SensorInfo]) -> tuple[IntArray, IntArray]:
    """Upstream/downstream station of each (local index, NO_SENSOR at a road's end).

    The road is the ``site_id`` up to its last ``-`` (``GSEXP-S03`` -> ``GSEXP``);
    stations of one road are listed in travel order in the catalog.
    """
    n = len(sensors)
    up = np.full(n, NO_SENSOR, np.int64)
    down = np.full(n, NO_SENSOR, np.int64)
    last_on_road: dict[str, int] = {}
    for i, sensor in enumerate(sensors):
        road = sensor.site_id.rpartition("-")[0] or sensor.site_id
        prev = last_on_road.get(road)
        if prev is not None:
            up[i], down[prev] = prev, i
        last_on_road[road] = i
    return up, down


class EnergyModel:
    """Enterprise meters: working-hours load (some plants run 24 h), a cumulative
    kWh register that only increases, and the supply at the meter's nominal voltage
    (catalog ``voltage_v.nominal``: 220 V, 380 V or 10 kV; 380 V when absent)."""

    kind = "energy"

    def __init__(self, sensors: Sequence[SensorInfo], rng: np.random.Generator) -> None:
        self.sensors = tuple(sensors)
        n = len(self.sensors)
        self.capacity = _limit(self.sensors, "power_kw.high", 500.0)
        self.base_frac = rng.uniform(0.15, 0.3, n)
        self.peak_frac = rng.uniform(0.55, 0.75, n)
        self.round_clock = rng.random(n) < 0.3
        self.nominal_v = _limit(self.sensors, "voltage_v.nominal", 380.0)
        self.voltage = self.nominal_v * rng.uniform(0.99, 1.01, n)
        self.register = self.capacity * rng.uniform(2_000.0, 20_000.0, n)  # kWh so far
        self.last_t = np.full(n, np.nan)

    def sample(self, local: IntArray, t_s: FloatArray, hour: FloatArray, rng: np.random.Generator) -> Values:
        n = local.size
        work = np.where(self.round_clock[local], 0.85, working_hours(hour))
        frac = self.base_frac[local] + (self.peak_frac[local] - self.base_frac[local]) * work
        power = self.capacity[local] * frac * (1.0 + bounded_noise(rng, n, 0.02))
        return {
            "energy_kwh": _nan(n),  # filled by commit, after incidents had their say on power
            "power_kw": power,
            "voltage_v": self.voltage[local] * (1.0 + bounded_noise(rng, n, 1.0 / 380.0)),
        }

    def commit(self, local: IntArray, t_s: FloatArray, values: Values) -> None:
        dt = np.nan_to_num(t_s - self.last_t[local], nan=0.0)
        self.last_t[local] = t_s
        power = np.maximum(np.nan_to_num(values["power_kw"], nan=0.0), 0.0)
        self.register[local] += power * dt / 3600.0  # no repeated index: one reading per sensor per round
        values["energy_kwh"] = self.register[local].copy()


MODELS: Mapping[str, type[AirModel] | type[HazmatModel] | type[TrafficModel] | type[EnergyModel]] = {
    "air": AirModel,
    "hazmat": HazmatModel,
    "traffic": TrafficModel,
    "energy": EnergyModel,
}


@dataclass(frozen=True, slots=True)
class City:
    """Every simulated sensor (catalog order) with its kind model and local index."""

    sensors: tuple[SensorInfo, ...]
    models: tuple[KindModel, ...]
    model_of: IntArray  # sensor -> index into models
    local_of: IntArray  # sensor -> index within its model
    global_of: tuple[IntArray, ...]  # per model: local -> sensor

    def index_of(self, sensor_id: str) -> int:
        for g, sensor in enumerate(self.sensors):
            if sensor.sensor_id == sensor_id:
                return g
        return NO_SENSOR


def build_city(catalog: Sequence[SensorInfo], kinds: Sequence[str], rng: np.random.Generator) -> City:
    """Models for the ``kinds`` the simulator knows; sensors of other kinds are left out."""
    modelled = [k for k in kinds if k in MODELS]
    sensors = tuple(s for s in catalog if s.kind in modelled)
    models: list[KindModel] = []
    model_of = np.zeros(len(sensors), np.int64)
    local_of = np.zeros(len(sensors), np.int64)
    global_of: list[IntArray] = []
    for m, kind in enumerate(modelled):
        rows = np.array([g for g, s in enumerate(sensors) if s.kind == kind], np.int64)
        models.append(MODELS[kind]([sensors[g] for g in rows], rng))
        model_of[rows] = m
        local_of[rows] = np.arange(rows.size)
        global_of.append(rows)
    return City(sensors, tuple(models), model_of, local_of, tuple(global_of))
