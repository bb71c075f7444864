"""Write the simulated Dongguan sensor catalog, ``catalog/dongguan_sensors.csv``.

Deterministic: the same seed writes byte-identical output, so the CSV can be
committed and regenerated. Run from the repository root::

    .venv/bin/python loadtest/make_catalog.py [--seed 20261126] [--out catalog/dongguan_sensors.csv]

Conventions the simulator (``streams/sim``) relies on:

- hazmat tanks (DG-TK-*) carry ``level_pct.*`` / ``pressure_kpa.*`` / ``temperature_c.*``
  limits; gas detectors (DG-GS-*) do not. Detectors that also report ``gas_ppm``
  (toxic gas heads) carry ``gas_ppm.high`` / ``gas_ppm.highhigh`` set points.
- road detector stations (DG-RD-*) are listed in travel order along each road;
  ``site_id`` is ``<ROAD>-S<section>``, so the road is the part before the last ``-``
  and a station's upstream neighbour is the previous row on the same road.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_SEED = 20261126
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "catalog" / "dongguan_sensors.csv"
COLUMNS = ("sensor_id", "kind", "site_id", "site_name", "district", "lat", "lon", "departments", "limits")
LAT_RANGE = (22.65, 23.15)
LON_RANGE = (113.50, 114.25)

# The 32 town-level divisions: 4 streets and 28 towns; approximate centres (WGS-84).
DISTRICTS: dict[str, tuple[str, float, float]] = {
    "Guancheng": ("莞城", 23.043, 113.752),
    "Dongcheng": ("东城", 23.020, 113.775),
    "Nancheng": ("南城", 23.008, 113.740),
    "Wanjiang": ("万江", 23.045, 113.715),
    "Shijie": ("石碣", 23.100, 113.800),
    "Shilong": ("石龙", 23.110, 113.850),
    "Chashan": ("茶山", 23.070, 113.875),
    "Shipai": ("石排", 23.085, 113.925),
    "Qishi": ("企石", 23.065, 114.020),
    "Hengli": ("横沥", 23.025, 113.960),
    "Qiaotou": ("桥头", 23.020, 114.090),
    "Xiegang": ("谢岗", 22.960, 114.145),
    "Dongkeng": ("东坑", 22.990, 113.940),
    "Changping": ("常平", 22.980, 114.000),
    "Liaobu": ("寮步", 22.995, 113.860),
    "Zhangmutou": ("樟木头", 22.915, 114.080),
    "Dalang": ("大朗", 22.940, 113.930),
    "Huangjiang": ("黄江", 22.900, 113.995),
    "Qingxi": ("清溪", 22.845, 114.160),
    "Tangxia": ("塘厦", 22.800, 114.075),
    "Fenggang": ("凤岗", 22.745, 114.140),
    "Dalingshan": ("大岭山", 22.900, 113.835),
    "Chang'an": ("长安", 22.800, 113.800),
    "Humen": ("虎门", 22.810, 113.670),
    "Houjie": ("厚街", 22.940, 113.675),
    "Shatian": ("沙田", 22.900, 113.610),
    "Daojiao": ("道滘", 23.000, 113.670),
    "Hongmei": ("洪梅", 23.005, 113.610),
    "Mayong": ("麻涌", 23.050, 113.580),
    "Wangniudun": ("望牛墩", 23.060, 113.650),
    "Zhongtang": ("中堂", 23.090, 113.655),
    "Gaobu": ("高埗", 23.080, 113.730),
}
# Busier districts get a third air-quality station.
THREE_STATIONS = ("Guancheng", "Dongcheng", "Nancheng", "Wanjiang", "Changping", "Humen", "Chang'an", "Tangxia")

# Hazardous-chemical sites: (district, Chinese name, English name, also notifies environment).
HAZMAT_SITES: tuple[tuple[str, str, str, bool], ...] = (
    ("Shatian", "立沙岛石化仓储", "Lisha Island Petrochemical Storage", True),
    ("Shatian", "立沙岛液化气码头", "Lisha Island LPG Terminal", True),
    ("Shatian", "沙田港化工仓储", "Shatian Port Chemical Storage", False),
    ("Shatian", "沙田精细化工", "Shatian Fine Chemicals", False),
    ("Mayong", "新沙港油库", "Xinsha Port Oil Depot", True),
    ("Mayong", "麻涌粮油化工", "Mayong Grain & Oil Chemicals", False),
    ("Mayong", "麻涌溶剂仓储", "Mayong Solvent Storage", False),
    ("Humen", "虎门港危化品仓储", "Humen Port Hazmat Storage", True),
    ("Humen", "虎门燃气储配站", "Humen Gas Storage Station", False),
    ("Zhongtang", "中堂造纸化学品", "Zhongtang Paper Chemicals", False),
    ("Zhongtang", "中堂液氨储罐区", "Zhongtang Ammonia Tank Farm", True),
    ("Changping", "常平燃气门站", "Changping City-Gate Gas Station", False),
    ("Changping", "常平工业气体", "Changping Industrial Gases", False),
    ("Qishi", "企石涂料化工", "Qishi Coatings Chemicals", False),
    ("Hongmei", "洪梅化工仓储", "Hongmei Chemical Storage", False),
)
HAZMAT_DEPARTMENTS_WITH_ENV = "emergency;fire;environment"
TANK_DESIGN_PRESSURES_KPA = (250.0, 600.0, 1000.0, 1600.0, 1770.0, 2200.0)

# Roads in travel order: (code, Chinese, English, expressway?, stations, waypoints (lat, lon)).
ROADS: tuple[tuple[str, str, str, bool, int, tuple[tuple[float, float], ...]], ...] = (
    ("GSEXP", "广深高速", "Guangshen Expwy", True, 26,
     ((23.085, 113.600), (23.000, 113.655), (22.940, 113.690), (22.830, 113.700), (22.770, 113.800))),
    ("GZEXP", "莞深高速", "Guanshen Expwy", True, 24,
     ((23.040, 113.790), (22.960, 113.880), (22.890, 113.990), (22.790, 114.070), (22.730, 114.130))),
    ("CHEXP", "常虎高速", "Changhu Expwy", True, 18,
     ((22.980, 114.000), (22.950, 113.910), (22.900, 113.800), (22.830, 113.700))),
    ("DGAVE", "东莞大道", "Dongguan Ave", False, 14,
     ((23.045, 113.752), (23.000, 113.745), (22.945, 113.735))),
    ("GTRD", "莞太路", "Guantai Rd", False, 18,
     ((23.030, 113.750), (22.940, 113.690), (22.870, 113.680), (22.815, 113.668))),
)
STATIONS_PER_SECTION = 3
EXPRESSWAY_SPEED_LIMITS = "speed_kmh.low=40;speed_kmh.lowlow=20"
URBAN_SPEED_LIMITS = "speed_kmh.low=20;speed_kmh.lowlow=10"

# Enterprise energy meters: weights favour the manufacturing towns.
ENERGY_METERS = 100
ENERGY_WEIGHTS = {
    "Chang'an": 6, "Humen": 5, "Houjie": 5, "Changping": 5, "Dalang": 5, "Tangxia": 5, "Qingxi": 4,
    "Fenggang": 4, "Liaobu": 4, "Dalingshan": 4, "Huangjiang": 4, "Shilong": 3, "Shijie": 3, "Qiaotou": 3,
}
INDUSTRIES = (
    ("电子", "Electronics"), ("五金", "Hardware"), ("模具", "Moulds"), ("纸业", "Paper"), ("家具", "Furniture"),
    ("纺织", "Textiles"), ("塑胶", "Plastics"), ("食品", "Foods"), ("玩具", "Toys"), ("光电", "Optoelectronics"),
)
CONTRACT_CAPACITIES_KW = (200, 315, 400, 500, 630, 800, 1000, 1250, 1600, 2000, 2500, 3150)


@dataclass
class Row:
    sensor_id: str
    kind: str
    site_id: str
    site_name: str
    district: str
    lat: float
    lon: float
    departments: str = ""
    limits: str = ""

    def as_csv(self) -> list[str]:
        return [self.sensor_id, self.kind, self.site_id, self.site_name, self.district,
                f"{self.lat:.5f}", f"{self.lon:.5f}", self.departments, self.limits]


@dataclass
class Counter:
    """Sequential ids per prefix (DG-AQ-0001, ...)."""

    next_by_prefix: dict[str, int] = field(default_factory=dict)

    def take(self, prefix: str) -> str:
        n = self.next_by_prefix.get(prefix, 1)
        self.next_by_prefix[prefix] = n + 1
        return f"DG-{prefix}-{n:04d}"


def near(rng: np.random.Generator, lat: float, lon: float, spread_deg: float) -> tuple[float, float]:
    """A point around (lat, lon), kept inside Dongguan's bounding box."""
    dlat, dlon = rng.normal(0.0, spread_deg, 2)
    return (float(np.clip(lat + dlat, *LAT_RANGE)), float(np.clip(lon + dlon, *LON_RANGE)))


def limits_text(items: Sequence[tuple[str, float]]) -> str:
    return ";".join(f"{name}={value:g}" for name, value in items)


def air_rows(rng: np.random.Generator, ids: Counter) -> Iterator[Row]:
    for district, (zh, lat, lon) in DISTRICTS.items():
        for n in range(1, (3 if district in THREE_STATIONS else 2) + 1):
            sensor_id = ids.take("AQ")
            site = f"AQ-{district.replace(chr(39), '').upper()}-{n}"
            name = f"{zh}空气监测站{n}号 ({district} air station {n})"
            yield Row(sensor_id, "air", site, name, district, *near(rng, lat, lon, 0.012))


def tank_limits(rng: np.random.Generator) -> str:
    design = float(rng.choice(TANK_DESIGN_PRESSURES_KPA))
    level_high = float(rng.choice((80.0, 85.0, 85.0, 88.0)))
    temp_high = float(rng.choice((40.0, 45.0, 50.0)))
    return limits_text([
        ("level_pct.high", level_high), ("level_pct.highhigh", 95.0),
        ("pressure_kpa.high", round(design * 0.85)), ("pressure_kpa.highhigh", round(design * 0.95)),
        ("temperature_c.high", temp_high), ("temperature_c.highhigh", temp_high + 10.0),
    ])


def hazmat_rows(rng: np.random.Generator, ids: Counter) -> Iterator[Row]:
    for n, (district, zh, en, with_env) in enumerate(HAZMAT_SITES, start=1):
        _, lat, lon = DISTRICTS[district]
        site_lat, site_lon = near(rng, lat, lon, 0.015)
        site = f"HZ-{district.upper()}-{n:02d}"
        name = f"东莞{zh} ({en})"
        depts = HAZMAT_DEPARTMENTS_WITH_ENV if with_env else ""
        toxic = with_env  # sites that notify the environment bureau also watch a toxic gas
        for g in range(int(rng.integers(3, 7))):
            toxic_head = toxic and g % 2 == 0
            limits = limits_text([("gas_ppm.high", 10.0), ("gas_ppm.highhigh", 20.0)]) if toxic_head else ""
            lat_lon = near(rng, site_lat, site_lon, 0.0006)
            yield Row(ids.take("GS"), "hazmat", site, name, district, *lat_lon, depts, limits)
        for _ in range(int(rng.integers(2, 5))):
            lat_lon = near(rng, site_lat, site_lon, 0.0004)
            yield Row(ids.take("TK"), "hazmat", site, name, district, *lat_lon, depts, tank_limits(rng))


def nearest_district(lat: float, lon: float) -> str:
    def dist(item: tuple[str, tuple[str, float, float]]) -> float:
        _, (_, dlat, dlon) = item
        return math.hypot(dlat - lat, (dlon - lon) * math.cos(math.radians(lat)))

    return min(DISTRICTS.items(), key=dist)[0]


def along(waypoints: Sequence[tuple[float, float]], n: int) -> tuple[list[tuple[float, float]], float]:
    """``n`` points evenly spaced along a polyline, and their spacing in km
    (degree lengths, longitude scaled by cos(lat); fine at city scale)."""
    pts = np.asarray(waypoints, np.float64)
    steps = np.diff(pts, axis=0) * [1.0, math.cos(math.radians(float(pts[0, 0])))]
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*steps.T))])
    at = np.linspace(0.0, cum[-1], n + 2)[1:-1]  # not at the very ends
    lat = np.interp(at, cum, pts[:, 0])
    lon = np.interp(at, cum, pts[:, 1])
    spacing_km = float(cum[-1]) * 111.2 / (n + 1)
    return [(float(a), float(b)) for a, b in zip(lat, lon, strict=True)], spacing_km


def road_rows(ids: Counter) -> Iterator[Row]:
    for code, zh, en, expressway, count, waypoints in ROADS:
        limits = EXPRESSWAY_SPEED_LIMITS if expressway else URBAN_SPEED_LIMITS
        points, spacing_km = along(waypoints, count)
        for i, (lat, lon) in enumerate(points):
            section = i // STATIONS_PER_SECTION + 1
            km = (i + 1) * spacing_km
            name = f"{zh} 第{section}段 K{km:.1f} ({en} section {section}, km {km:.1f})"
            yield Row(ids.take("RD"), "traffic", f"{code}-S{section:02d}", name, nearest_district(lat, lon),
                      lat, lon, "", limits)


SINGLE_PHASE_MAX_KW = 200
LOW_VOLTAGE_MAX_KW = 630


def energy_rows(rng: np.random.Generator, ids: Counter) -> Iterator[Row]:
    names = list(DISTRICTS)
    weights = np.array([ENERGY_WEIGHTS.get(d, 1) for d in names], np.float64)
    picks = rng.choice(len(names), size=ENERGY_METERS, p=weights / weights.sum())
    for n, pick in enumerate(sorted(int(p) for p in picks), start=1):
        district = names[pick]
        zh_town, lat, lon = DISTRICTS[district]
        zh, en = INDUSTRIES[int(rng.integers(len(INDUSTRIES)))]
        capacity = int(rng.choice(CONTRACT_CAPACITIES_KW))
        site = f"ENT-{n:04d}"
        name = f"东莞市{zh_town}{zh}有限公司{n}号厂 ({district} {en} Co. plant {n})"
        yield Row(ids.take("EM"), "energy", site, name, district, *near(rng, lat, lon, 0.02), "",
                  limits_text([("power_kw.high", float(capacity)), ("voltage_v.nominal", supply_voltage_v(capacity))]))


def supply_voltage_v(capacity_kw: int) -> float:
    """Where an enterprise is metered: small single-phase supplies at 220 V, the usual
    low-voltage three-phase supply at 380 V, large plants on the 10 kV side."""
    if capacity_kw <= SINGLE_PHASE_MAX_KW:
        return 220.0
    return 380.0 if capacity_kw <= LOW_VOLTAGE_MAX_KW else 10_000.0


def build_rows(seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    ids = Counter()
    return [*air_rows(rng, ids), *hazmat_rows(rng, ids), *road_rows(ids), *energy_rows(rng, ids)]


def write_csv(rows: Sequence[Row], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(row.as_csv() for row in rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    rows = build_rows(args.seed)
    write_csv(rows, args.out)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.kind] = counts.get(row.kind, 0) + 1
    print(f"wrote {len(rows)} sensors to {args.out}: {counts}")


if __name__ == "__main__":
    main()
