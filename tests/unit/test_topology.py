"""topology.yaml validation: every error names the entry's path and the valid options."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from detectors.registry import DETECTORS
import yaml

from streams.errors import TopologyError
from streams.topology import load_topology

REPO = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = yaml.safe_load((REPO / "topology.yaml").read_text())


def _write(tmp_path: Path, data: dict[str, Any], catalog: str | None = None) -> Path:
    data = copy.deepcopy(data)
    if catalog is None:
        data["catalog"] = str(REPO / "catalog" / "dongguan_sensors.csv")
    else:
        (tmp_path / "sensors.csv").write_text(catalog, encoding="utf-8")
        data["catalog"] = "sensors.csv"
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def _error(tmp_path: Path, data: dict[str, Any], catalog: str | None = None) -> str:
    with pytest.raises(TopologyError) as info:
        load_topology(_write(tmp_path, data, catalog))
    return str(info.value)


def test_the_shipped_topology_is_valid() -> None:
    topo = load_topology(REPO / "topology.yaml")
    assert set(topo.spec.kinds) == {"air", "hazmat", "traffic", "energy"}
    assert len(topo.catalog.sensors) >= 300
    assert len({s.district for s in topo.catalog.sensors}) == 32


def test_unknown_detector_kind_lists_the_registered_ones(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["detectors"][0]["kind"] = "aqi_hj6333"
    assert f"detectors[0].kind: unknown 'aqi_hj6333'; valid: {sorted(DETECTORS)}" in _error(tmp_path, data)


def test_unknown_field_lists_the_valid_fields(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["kinds"]["air"]["batch"]["budget_msec"] = 10
    message = _error(tmp_path, data)
    assert "kinds.air.batch.budget_msec: unknown field; valid: ['budget_ms', 'max_messages']" in message


def test_bad_enum_and_missing_field(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["routes"][0]["direction"] = "upwards"
    data["routes"][1]["levels"][0]["severity"] = "catastrophic"
    del data["kinds"]["traffic"]["topic"]
    message = _error(tmp_path, data)
    assert "routes[0].direction: Input should be 'above' or 'below'" in message
    assert "routes[1].levels[0].severity: Input should be 'warning', 'minor', 'major' or 'critical'" in message
    assert "kinds.traffic.topic: required field is missing" in message


def test_cross_references(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["routes"][0]["detector"] = "nope"
    data["detectors"][1]["params"] = {"quantity": "gas_lell"}
    data["kinds"]["air"]["departments"] = ["environment", "police"]
    data["routes"][2]["levels"][0] = {"limit": "level_pc.high", "severity": "minor"}
    message = _error(tmp_path, data)
    assert "routes[0].detector: unknown 'nope'" in message
    assert "detectors[1].params: quantity: 'gas_lell' is not in this kind's catalog" in message
    assert "kinds.air.departments[1]: unknown department 'police'" in message
    assert "routes[2].levels[0].limit: 'level_pc.high'" in message


def test_levels_must_rise(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    gas = next(r for r in data["routes"] if r["rule"] == "gas_lel_alarm")
    gas["levels"] = [{"at": 50, "severity": "major"}, {"at": 25, "severity": "critical"}]
    assert "`at` values must be strictly increasing" in _error(tmp_path, data)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("DG-X-1,air,s,,Humen,abc,113.6,,", "sensors.csv:2 (DG-X-1): lat 'abc' is not a number"),
        ("DG-X-1,air,s,,Humen,22.8,113.6,,pm25.high", "limits entry 'pm25.high' must look like `quantity.name=number`"),
        ("DG-X-1,boat,s,,Humen,22.8,113.6,,", "catalog DG-X-1: kind 'boat' unknown; valid: ['air', 'energy', 'hazmat', 'traffic']"),
        ("DG-X-1,air,s,,Humen,22.8,113.6,police,", "catalog DG-X-1: department 'police' unknown"),
        ("DG-X-1,air,s,,Humen,22.8,113.6,,gas_lel.high=3", "catalog DG-X-1: limit 'gas_lel.high' names no quantity of kind 'air'"),
    ],
)
def test_catalog_errors_name_line_and_column(tmp_path: Path, row: str, expected: str) -> None:
    header = "sensor_id,kind,site_id,site_name,district,lat,lon,departments,limits\n"
    assert expected in _error(tmp_path, BASE, catalog=header + row + "\n")


def test_cli_check_fails_fast_without_a_traceback(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["detectors"][0]["kind"] = "aqi_hj6333"
    path = _write(tmp_path, data)
    cityops = str(Path(sys.executable).with_name("cityops"))
    result = subprocess.run([cityops, "topology", "check", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "detectors[0].kind: unknown 'aqi_hj6333'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    ok = subprocess.run([cityops, "topology", "check", str(REPO / "topology.yaml")], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
