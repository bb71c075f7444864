"""The simulated city: deterministic, on-contract, incidents that cross their
thresholds, a quiet city that crosses none. Thresholds come from topology.yaml
and the catalog, never from numbers copied out of a run."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from detectors.aqi import POLLUTANTS, TABLE_FOR_MODE, iaqi
from detectors.base import HJ212_FLAGS
from streams.catalog import SensorIndex, SensorInfo
from streams.decode import KindDecoder, RawMessage
from streams.errors import ConfigError
from streams.sim import SimMessage, SimOptions, Simulation, generate, ground_truth, run
from streams.sim.scenario import load_scenario, parse_scenario
from streams.topology import Topology, load_topology
from streams.topology_spec import RouteSpec

ROOT = Path(__file__).resolve().parents[2]
START_MS = 1_795_651_200_000  # 2026-11-26T08:00:00+08:00, morning rush hour
SEVERITY_RANK = {"warning": 1, "minor": 2, "major": 3, "critical": 4}
QUIET = "name: quiet\nfaults: {per_sensor_per_hour: 0}\nincidents: []\n"


@dataclass(frozen=True)
class Row:
    """One reading as it went out, with the record it travelled in."""

    topic: str
    key: bytes
    sensor_id: str
    event_ms: int
    values: Mapping[str, float]
    flag: str


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(ROOT / "topology.yaml")


@pytest.fixture(scope="module")
def sensors(topology: Topology) -> dict[str, SensorInfo]:
    return {s.sensor_id: s for s in topology.catalog.sensors}


@pytest.fixture(scope="module")
def demo(topology: Topology) -> list[SimMessage]:
    """The default scenario, one simulated minute."""
    opts = SimOptions(rate=None, duration_s=60, seed=7, start_ms=START_MS)
    return [m for batch in generate(topology, opts) for m in batch]


@pytest.fixture(scope="module")
def demo_truth(topology: Topology) -> list[dict[str, Any]]:
    return ground_truth(topology, SimOptions(rate=None, duration_s=60, seed=7, start_ms=START_MS))


def _quiet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenarios") / "quiet.yaml"
    path.write_text(QUIET)
    return path


@pytest.fixture(scope="module")
def quiet_day(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> list[SimMessage]:
    """A whole simulated day in 60 wall seconds at ~300 readings per wall second."""
    opts = SimOptions(rate=300, duration_s=60, speed=1440, seed=3, scenario=_quiet_file(tmp_path_factory),
                      start_ms=START_MS, tick_s=1.0)
    return [m for batch in generate(topology, opts) for m in batch]


def _ts_ms(ts: str | int) -> int:
    if isinstance(ts, int):
        return ts
    parsed = datetime.fromisoformat(ts)
    assert parsed.utcoffset() is not None, ts
    return round(parsed.timestamp() * 1000)


def _rows(messages: Sequence[SimMessage]) -> Iterator[Row]:
    for m in messages:
        body = msgspec.json.decode(m.value)
        for r in body if isinstance(body, list) else [body]:
            yield Row(m.topic, m.key, r["sensor_id"], _ts_ms(r["ts"]), r["values"], r["flag"])


def _by_sensor(rows: Sequence[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        out[row.sensor_id].append(row)
    return out


def _aqi(topology: Topology, values: Mapping[str, float]) -> float:
    """AQI of one reading with the tables the topology's aqi detector uses."""
    det = next(d for d in topology.spec.detectors if d.kind == "aqi_hj633")
    tables = TABLE_FOR_MODE[det.params.get("averaging", "1h")]
    return max(float(iaqi(p, np.array([values[p]]), tables[p])[0]) for p in POLLUTANTS if p in values)


def _levels_crossed(route: RouteSpec, score: float, limits: Mapping[str, float]) -> list[str]:
    crossed = []
    for level in route.levels:
        at = level.at if level.at is not None else limits.get(level.limit or "")
        if at is not None and (score >= at if route.direction == "above" else score <= at):
            crossed.append(level.severity.value)
    return crossed


def _route(topology: Topology, rule: str) -> RouteSpec:
    return next(r for r in topology.spec.routes if r.rule == rule)


def _score(topology: Topology, route: RouteSpec, row: Row) -> float | None:
    """What the route's detector would score for this reading (None: not its quantity)."""
    det = next(d for d in topology.spec.detectors if d.name == route.detector)
    if det.kind == "aqi_hj633":
        return _aqi(topology, row.values)
    if det.kind == "quantity_value":
        return row.values.get(det.params["quantity"])
    return None


# -- determinism -----------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(topology: Topology) -> None:
    def run(seed: int) -> list[tuple[str, bytes, bytes, int]]:
        opts = SimOptions(rate=300, duration_s=5, speed=12, seed=seed, start_ms=START_MS, batch_fraction=0.3)
        return [(m.topic, m.key, m.value, m.event_ms) for batch in generate(topology, opts) for m in batch]

    first, again, other = run(11), run(11), run(12)
    assert len(first) > 500
    assert first == again
    assert first != other


def test_ground_truth_matches_the_generated_run(topology: Topology, demo_truth: list[dict[str, Any]]) -> None:
    sim = Simulation(topology, SimOptions(rate=None, duration_s=60, seed=7, start_ms=START_MS))
    for _ in sim.ticks():
        pass
    assert sim.truth_json() == demo_truth


# -- the input contract --------------------------------------------------------------


def test_every_message_has_the_design_shape(topology: Topology, demo: list[SimMessage],
                                            sensors: dict[str, SensorInfo]) -> None:
    topics = {k.topic: k for k in topology.spec.kinds.values()}
    assert {m.topic for m in demo} == set(topics)
    for m in demo:
        body = msgspec.json.decode(m.value)
        readings = body if isinstance(body, list) else [body]
        assert readings, m
        for r in readings:
            assert set(r) == {"sensor_id", "ts", "values", "flag"}
            sensor = sensors[r["sensor_id"]]
            kind = topology.spec.kinds[sensor.kind]
            assert m.topic == kind.topic and m.key == r["sensor_id"].encode()
            assert r["flag"] in HJ212_FLAGS
            assert r["values"] and set(r["values"]) <= set(kind.quantities)
            for q, v in r["values"].items():
                assert isinstance(v, float) and math.isfinite(v), (r, q)
                assert kind.quantities[q].min <= v <= kind.quantities[q].max, (r, q)
            assert isinstance(r["ts"], int) or r["ts"].endswith(topology.spec.timezone)
    bodies = [msgspec.json.decode(m.value) for m in demo]
    assert any(isinstance(b, list) for b in bodies) and any(isinstance(b, dict) for b in bodies)
    stamps = [r.get("ts") for b in bodies for r in (b if isinstance(b, list) else [b])]
    assert any(isinstance(ts, int) for ts in stamps) and any(isinstance(ts, str) for ts in stamps)


def test_the_production_decoder_accepts_every_message(topology: Topology, demo: list[SimMessage]) -> None:
    kind_of = {s.sensor_id: s.kind for s in topology.catalog.sensors}
    for kind, spec in topology.spec.kinds.items():
        msgs = [RawMessage(m.value, m.key, m.topic, 0, i) for i, m in enumerate(demo) if m.topic == spec.topic]
        foreign = {sid: k for sid, k in kind_of.items() if k != kind}
        decoder = KindDecoder(kind, spec, topology.spec.input, foreign)
        out = decoder.decode(msgs, SensorIndex(topology.catalog.by_kind(kind)), START_MS + 60_000)
        assert out.dead == [], out.dead[:3]
        assert out.n_unknown_sensors == 0
        assert out.n_readings == sum(m.n_readings for m in demo if m.topic == spec.topic)


def test_event_time_never_goes_back_per_sensor_and_stays_in_the_run(demo: list[SimMessage]) -> None:
    rows = list(_rows(demo))
    for sensor_id, mine in _by_sensor(rows).items():
        times = [r.event_ms for r in mine]
        assert times == sorted(times), sensor_id
    assert all(START_MS <= r.event_ms < START_MS + 60_000 for r in rows)


def test_each_tick_is_in_event_time_order_and_loggers_hold_briefly(topology: Topology) -> None:
    opts = SimOptions(rate=None, duration_s=30, seed=7, start_ms=START_MS, batch_fraction=0.5)
    previous_end = START_MS
    for batch in generate(topology, opts):
        times = [m.event_ms for m in batch]
        assert times == sorted(times)
        # a logger's upload may carry readings up to its hold time old, never more
        assert all(t >= previous_end - 5_000 - 100 for t in times)
        previous_end = max(times, default=previous_end)


def test_energy_register_never_decreases(demo: list[SimMessage], quiet_day: list[SimMessage]) -> None:
    for messages in (demo, quiet_day):
        for sensor_id, mine in _by_sensor(list(_rows(messages))).items():
            kwh = [r.values["energy_kwh"] for r in mine if "energy_kwh" in r.values]
            assert all(b >= a for a, b in zip(kwh, kwh[1:], strict=False)), sensor_id


# -- scripted incidents --------------------------------------------------------------


def test_ground_truth_lists_every_scripted_incident_inside_the_run(demo_truth: list[dict[str, Any]]) -> None:
    scripted = [spec.id for spec in load_scenario(None).incidents]
    incidents = [t for t in demo_truth if t["type"] != "sensor_fault"]
    assert [t["id"] for t in incidents] == scripted
    for t in incidents:
        assert START_MS <= t["start_ms"] < t["end_ms"] <= START_MS + 60_000
        assert t["rule"] and t["min_severity"] and t["sensor_ids"]
        assert _ts_ms(t["start"]) == t["start_ms"] and _ts_ms(t["end"]) == t["end_ms"]
    assert {t["type"]: t["rule"] for t in incidents} == {
        "gas_leak": "gas_lel_alarm", "pollution_episode": "aqi_level",
        "traffic_incident": "road_speed_drop", "meter_fault": "equipment_energy",
    }


def test_default_incidents_all_fall_in_the_first_45_seconds() -> None:
    for spec in load_scenario(None).incidents:
        assert spec.at_s + spec.duration_s <= 45


def test_each_incident_crosses_its_route_threshold(topology: Topology, demo: list[SimMessage],
                                                  demo_truth: list[dict[str, Any]],
                                                  sensors: dict[str, SensorInfo]) -> None:
    by_sensor = _by_sensor(list(_rows(demo)))
    for t in (t for t in demo_truth if t["type"] != "sensor_fault"):
        route = _route(topology, t["rule"])
        wanted = SEVERITY_RANK[t["min_severity"]]
        primary = t["sensor_ids"][0] if t["type"] != "pollution_episode" else None
        for sensor_id in t["sensor_ids"] if primary is None else [primary]:
            during = [r for r in by_sensor[sensor_id] if t["start_ms"] <= r.event_ms <= t["end_ms"]]
            if t["type"] == "meter_fault":
                hits = [r for r in during if r.flag != "N" and r.values["power_kw"] == 0.0]
            else:
                hits = [r for r in during if r.flag == "N" and max(
                    (SEVERITY_RANK[s] for s in _levels_crossed(route, _score(topology, route, r) or math.nan,
                                                                sensors[sensor_id].limits)), default=0) >= wanted]
            assert len(hits) >= 3, (t["id"], sensor_id, len(hits))
    kinds = {t["type"]: t["min_severity"] for t in demo_truth}
    assert kinds["gas_leak"] == "critical"  # GB/T 50493 second level at the nearest detector
    assert SEVERITY_RANK[kinds["pollution_episode"]] >= SEVERITY_RANK["minor"]  # AQI > 200
    assert kinds["traffic_incident"] == "minor"  # below lowlow


def test_pollution_episode_pushes_pm25_past_160_at_every_station(demo: list[SimMessage],
                                                                 demo_truth: list[dict[str, Any]]) -> None:
    by_sensor = _by_sensor(list(_rows(demo)))
    episode = next(t for t in demo_truth if t["type"] == "pollution_episode")
    assert len(episode["sensor_ids"]) >= 2
    for sensor_id in episode["sensor_ids"]:
        assert sum(r.values["pm25"] > 160 for r in by_sensor[sensor_id]) >= 3


def test_gas_leak_is_worst_at_the_nearest_detector(demo: list[SimMessage],
                                                   demo_truth: list[dict[str, Any]]) -> None:
    by_sensor = _by_sensor(list(_rows(demo)))
    leak = next(t for t in demo_truth if t["type"] == "gas_leak")
    peaks = [max(r.values.get("gas_lel", 0.0) for r in by_sensor[s]) for s in leak["sensor_ids"]]
    assert peaks[0] == max(peaks) and peaks[0] > 50
    tank = by_sensor[leak["detail"]["tank"]]
    pressures = [r.values["pressure_kpa"] for r in tank]
    assert min(pressures) < 0.97 * pressures[0]  # the leaking tank loses pressure


def test_traffic_incident_congests_the_upstream_station(topology: Topology, demo: list[SimMessage],
                                                        demo_truth: list[dict[str, Any]],
                                                        sensors: dict[str, SensorInfo]) -> None:
    by_sensor = _by_sensor(list(_rows(demo)))
    incident = next(t for t in demo_truth if t["type"] == "traffic_incident")
    target, upstream = incident["sensor_ids"][0], incident["detail"]["upstream"]
    assert sensors[upstream].site_id.rpartition("-")[0] == sensors[target].site_id.rpartition("-")[0]
    low = sensors[upstream].limits["speed_kmh.low"]
    assert sum(r.values["speed_kmh"] < low for r in by_sensor[upstream]) >= 3
    assert max(r.values["occupancy_pct"] for r in by_sensor[target]) > 50


# -- a quiet city ----------------------------------------------------------------------


def test_quiet_day_crosses_no_threshold(topology: Topology, quiet_day: list[SimMessage],
                                        sensors: dict[str, SensorInfo]) -> None:
    rows = list(_rows(quiet_day))
    assert len(rows) > 15_000  # ~45 readings per sensor over the day
    assert _span_h(rows) > 23.0
    assert {r.flag for r in rows} == {"N"}
    detectors = {d.name: d for d in topology.spec.detectors}
    checked = 0
    for route in topology.spec.routes:
        det = detectors[route.detector]
        mine = [r for r in rows if sensors[r.sensor_id].kind == det.sensor_kind]
        if det.kind == "aqi_hj633":
            tables = TABLE_FOR_MODE[det.params.get("averaging", "1h")]
            subs = [iaqi(p, np.array([r.values[p] for r in mine]), tables[p]) for p in POLLUTANTS]
            score = np.max(subs, axis=0)
        elif det.kind == "quantity_value":
            mine = [r for r in mine if det.params["quantity"] in r.values]
            score = np.array([r.values[det.params["quantity"]] for r in mine])
        else:
            continue  # flags: all N, checked above
        for level in route.levels:
            at = np.array([level.at if level.at is not None else sensors[r.sensor_id].limits.get(level.limit or "",
                                                                                                  np.nan)
                           for r in mine])
            crossed = score >= at if route.direction == "above" else score <= at  # NaN limit: never
            assert not crossed.any(), (route.rule, level, [mine[i] for i in np.flatnonzero(crossed)[:3]])
        checked += len(mine)
    assert checked > len(rows)  # hazmat and air rows feed several routes


def _span_h(rows: Sequence[Row]) -> float:
    times = [r.event_ms for r in rows]
    return (max(times) - min(times)) / 3_600_000


def test_quiet_day_has_rush_hours_and_working_hours(quiet_day: list[SimMessage]) -> None:
    def mean_at(rows: list[Row], quantity: str, hours: tuple[float, float]) -> float:
        local_h = [((r.event_ms / 1000 + 8 * 3600) % 86400) / 3600 for r in rows]
        vals = [r.values[quantity] for r, h in zip(rows, local_h, strict=True)
                if hours[0] <= h < hours[1] and quantity in r.values]
        return float(np.mean(vals))

    rows = list(_rows(quiet_day))
    traffic = [r for r in rows if r.topic == "city.traffic.readings"]
    assert mean_at(traffic, "speed_kmh", (7.5, 9)) < 0.85 * mean_at(traffic, "speed_kmh", (2, 5))
    assert mean_at(traffic, "flow_vph", (17.5, 19)) > 2 * mean_at(traffic, "flow_vph", (2, 5))
    air = [r for r in rows if r.topic == "city.air.readings"]
    assert mean_at(air, "o3", (14, 16)) > 1.5 * mean_at(air, "o3", (3, 6))
    energy = [r for r in rows if r.topic == "city.energy.readings"]
    assert mean_at(energy, "power_kw", (9, 11)) > 1.5 * mean_at(energy, "power_kw", (1, 4))
    gas = [r.values["gas_lel"] for r in rows if "gas_lel" in r.values]
    assert 0.0 <= min(gas) and max(gas) <= 3.0


# -- rate, batching, faults -------------------------------------------------------------


def test_rate_sets_readings_per_wall_second(topology: Topology, tmp_path: Path) -> None:
    (tmp_path / "q.yaml").write_text(QUIET)
    opts = SimOptions(rate=500, duration_s=4, speed=3, seed=1, scenario=tmp_path / "q.yaml", start_ms=START_MS)
    total = sum(m.n_readings for batch in generate(topology, opts) for m in batch)
    assert 0.9 * 2000 <= total <= 1.1 * 2000


def test_batch_fraction_sends_arrays_of_one_sensor(topology: Topology) -> None:
    opts = SimOptions(rate=400, duration_s=5, speed=10, seed=2, start_ms=START_MS, batch_fraction=0.5)
    messages = [m for batch in generate(topology, opts) for m in batch]
    arrays = [m for m in messages if m.value.startswith(b"[")]
    assert 0.3 <= len(arrays) / len(messages) <= 0.7
    assert max(m.n_readings for m in arrays) > 1
    for m in arrays:
        assert {r["sensor_id"].encode() for r in msgspec.json.decode(m.value)} == {m.key}


def test_random_faults_flag_readings_and_are_recorded(topology: Topology, tmp_path: Path) -> None:
    path = tmp_path / "faulty.yaml"
    path.write_text(
        "faults: {per_sensor_per_hour: 20, flags: [M, D, B], min_readings: 2, max_readings: 4}\n"
        "incidents: [{type: meter_fault, at_s: 100, duration_s: 200}]\n"
    )
    opts = SimOptions(rate=300, duration_s=10, speed=60, seed=5, scenario=path, start_ms=START_MS)
    sim = Simulation(topology, opts)
    rows = list(_rows([m for batch in sim.ticks() for m in batch]))
    faults = [t for t in sim.truth_json() if t["type"] == "sensor_fault"]
    assert len(faults) > 5
    flagged = {(r.sensor_id, r.event_ms) for r in rows if r.flag != "N"}
    by_sensor = _by_sensor(rows)
    covered = set()
    for f in faults:
        (sensor_id,) = f["sensor_ids"]
        assert f["rule"] == f"equipment_{_kind(topology, sensor_id)}"
        mine = [r for r in by_sensor[sensor_id] if f["start_ms"] <= r.event_ms <= f["end_ms"]]
        assert 1 <= len(mine) <= 4 and {r.flag for r in mine} == {f["detail"]["flag"]}
        covered |= {(r.sensor_id, r.event_ms) for r in mine}
    meter = next(t for t in sim.truth_json() if t["type"] == "meter_fault")
    covered |= {(r.sensor_id, r.event_ms) for r in rows
                if r.sensor_id in meter["sensor_ids"] and meter["start_ms"] <= r.event_ms <= meter["end_ms"]}
    assert flagged == covered  # every non-N reading is in the truth, and nothing else is


def _kind(topology: Topology, sensor_id: str) -> str:
    return next(s.kind for s in topology.catalog.sensors if s.sensor_id == sensor_id)


# -- scenario files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("incidents: [{type: gas_leak, at_s: 5, duration_s: -1}]", "incidents[0].duration_s"),
        ("incidents: [{type: volcano, at_s: 5, duration_s: 3}]", "incidents[0].type: unknown incident type 'volcano'"),
        ("incidents: [{at_s: 5, duration_s: 3}]", "incidents[0].type: required"),
        ("incidents: [{type: gas_leak, at_s: 5, duration_s: 3, peak_lel: 300}]", "incidents[0].peak_lel"),
        ("incidents: [{type: gas_leak, duration_s: 3}]", "incidents[0].at_s: required"),
        ("incidents: [{type: gas_leak, at_s: 1, duration_s: 3, site_id: a, district: b}]", "at most one target"),
        ("faults: {per_sensor_per_hour: 1, flags: [X]}", "faults.flags[0]"),
        ("incidnets: []", "incidnets: unknown field"),
    ],
)
def test_scenario_errors_name_the_field(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_scenario("bad.yaml", text)
    assert needle in str(err.value) and "bad.yaml" in str(err.value)


def test_unknown_target_names_the_field(topology: Topology, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("incidents: [{type: gas_leak, at_s: 1, duration_s: 10, site_id: HZ-NOWHERE}]\n")
    with pytest.raises(ConfigError, match=r"incidents\[0\]\.site_id: 'HZ-NOWHERE'"):
        Simulation(topology, SimOptions(rate=None, duration_s=5, scenario=path, start_ms=START_MS))


def test_pinned_targets_are_used(topology: Topology, tmp_path: Path, sensors: dict[str, SensorInfo]) -> None:
    path = tmp_path / "s.yaml"
    meter = topology.catalog.by_kind("energy")[3].sensor_id
    path.write_text(
        "incidents:\n"
        "  - {type: gas_leak, at_s: 1, duration_s: 10, site_id: HZ-HUMEN-08}\n"
        "  - {type: pollution_episode, at_s: 1, duration_s: 10, district: Humen}\n"
        f"  - {{type: meter_fault, at_s: 1, duration_s: 10, sensor_id: {meter}}}\n"
    )
    truth = ground_truth(topology, SimOptions(rate=None, duration_s=12, scenario=path, start_ms=START_MS))
    by_type = {t["type"]: t for t in truth}
    assert by_type["gas_leak"]["site_id"] == "HZ-HUMEN-08"
    humen_air = {s.sensor_id for s in topology.catalog.by_kind("air") if s.district == "Humen"}
    assert set(by_type["pollution_episode"]["sensor_ids"]) == humen_air
    assert by_type["meter_fault"]["sensor_ids"] == [meter]


def test_packaged_and_loadtest_scenarios_load() -> None:
    assert load_scenario(None).name == "default"
    for path in sorted((ROOT / "loadtest" / "scenarios").glob("*.yaml")):
        load_scenario(path)


# -- the catalog -------------------------------------------------------------------------


def test_catalog_is_the_generator_output(tmp_path: Path, topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("make_catalog", ROOT / "loadtest" / "make_catalog.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_catalog", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    out = tmp_path / "catalog.csv"
    module.main(["--out", str(out)])
    assert out.read_bytes() == (ROOT / "catalog" / "dongguan_sensors.csv").read_bytes()
    counts: dict[str, int] = defaultdict(int)
    for s in topology.catalog.sensors:
        counts[s.kind] += 1
        assert 22.65 <= s.lat <= 23.15 and 113.50 <= s.lon <= 114.25
        assert set(s.departments) <= set(topology.spec.departments)
    assert 350 <= len(topology.catalog.sensors) <= 450
    assert counts["traffic"] == 100 and counts["energy"] == 100
    assert len({s.district for s in topology.catalog.sensors}) == 32


# -- the runner -----------------------------------------------------------------------------


async def test_run_writes_jsonl_per_topic_and_the_truth(topology: Topology, tmp_path: Path,
                                                         demo: list[SimMessage],
                                                         demo_truth: list[dict[str, Any]]) -> None:
    opts = SimOptions(rate=None, duration_s=60, seed=7, start_ms=START_MS)  # the demo fixture's run
    summary = await run(topology, opts, out=tmp_path / "out", truth_out=tmp_path / "truth.jsonl", pace=False)
    expected = demo
    for spec in topology.spec.kinds.values():
        lines = (tmp_path / "out" / f"{spec.topic}.jsonl").read_bytes().splitlines()
        assert lines == [m.value for m in expected if m.topic == spec.topic]
        assert summary.messages[spec.topic] == len(lines)
    written = [msgspec.json.decode(line) for line in (tmp_path / "truth.jsonl").read_bytes().splitlines()]
    assert sorted(written, key=lambda r: r["id"]) == sorted(demo_truth, key=lambda r: r["id"])
    assert summary.incidents == 4 and sum(summary.readings.values()) >= len(expected)


async def test_run_into_one_jsonl_file(topology: Topology, tmp_path: Path) -> None:
    opts = SimOptions(rate=200, duration_s=2, seed=1, start_ms=START_MS)
    summary = await run(topology, opts, out=tmp_path / "all.jsonl", pace=False)
    lines = (tmp_path / "all.jsonl").read_bytes().splitlines()
    assert len(lines) == sum(summary.messages.values()) > 300
