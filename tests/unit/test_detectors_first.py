"""quantity_value, hj212_flag, the registry, and topology.yaml's use of them."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from detectors.aqi import AqiHj633
from detectors.base import HJ212_FLAGS, DetectorContext, ReadingBatch
from detectors.hj212_flag import Hj212Flag
from detectors.quantity_value import QuantityValue
from detectors.registry import DETECTORS, build_detector
from tests.unit.batches import make_batch

TOPOLOGY = Path(__file__).resolve().parents[2] / "topology.yaml"
HAZMAT = DetectorContext(
    quantities=("gas_lel", "gas_ppm", "level_pct", "pressure_kpa", "temperature_c")
)


def batch(reading_idx: list[int], quantity: list[str], value: list[float], flag: list[str]) -> ReadingBatch:
    return make_batch(HAZMAT, reading_idx, quantity, value, flag)


def snapshot(b: ReadingBatch) -> dict[str, Any]:
    return {f.name: copy.deepcopy(getattr(b, f.name)) for f in dataclasses.fields(b)}


def assert_unchanged(b: ReadingBatch, before: dict[str, Any]) -> None:
    for name, arr in before.items():
        np.testing.assert_array_equal(getattr(b, name), arr)


MIXED = batch(
    [0, 0, 1, 1, 2, 2, 3],
    ["gas_lel", "level_pct", "gas_lel", "level_pct", "gas_lel", "level_pct", "gas_lel"],
    [12.5, 80.0, 30.0, 81.0, 55.0, 82.0, 0.0],
    ["N", "N", "N", "N", "M", "M", "D"],
)


# --- quantity_value ----------------------------------------------------------


def test_quantity_value_returns_normal_rows_of_its_quantity() -> None:
    before = snapshot(MIXED)
    s = QuantityValue(HAZMAT, quantity="gas_lel").score_and_update(MIXED)
    assert s.measure == "gas_lel"
    np.testing.assert_array_equal(s.rows, [0, 2])  # rows 4 (M) and 6 (D) excluded
    np.testing.assert_array_equal(s.score, [12.5, 30.0])
    assert s.rows.dtype == np.int64 and s.score.dtype == np.float64
    assert_unchanged(MIXED, before)


def test_quantity_value_score_is_a_copy() -> None:
    b = batch([0], ["level_pct"], [50.0], ["N"])
    s = QuantityValue(HAZMAT, quantity="level_pct").score_and_update(b)
    s.score[0] = -1.0
    assert b.value[0] == 50.0


def test_quantity_value_empty_batch() -> None:
    s = QuantityValue(HAZMAT, quantity="gas_lel").score_and_update(ReadingBatch.empty())
    assert s.rows.shape == (0,) and s.score.shape == (0,) and s.measure == "gas_lel"


def test_quantity_value_rejects_a_quantity_outside_the_catalog() -> None:
    with pytest.raises(ValueError, match=r"quantity: 'gas_lell' is not in .*valid: \['gas_lel'"):
        QuantityValue(HAZMAT, quantity="gas_lell")


# --- hj212_flag --------------------------------------------------------------


def test_flag_one_row_per_reading_with_default_severity() -> None:
    before = snapshot(MIXED)
    s = Hj212Flag(HAZMAT).score_and_update(MIXED)
    assert s.measure == "hj212_flag"
    np.testing.assert_array_equal(s.rows, [0, 2, 4, 6])  # first row of each reading
    np.testing.assert_array_equal(s.score, [0, 0, 1, 2])  # N N M D; zeros kept to clear
    assert_unchanged(MIXED, before)


def test_flag_default_severity_of_every_flag() -> None:
    b = batch(list(range(8)), ["gas_lel"] * 8, [1.0] * 8, list(HJ212_FLAGS))
    s = Hj212Flag(HAZMAT).score_and_update(b)
    expected = {"N": 0, "F": 1, "M": 1, "S": 1, "C": 1, "D": 2, "T": 2, "B": 2}
    np.testing.assert_array_equal(s.score, [expected[f] for f in HJ212_FLAGS])


def test_flag_readings_interleaved() -> None:
    # rows are sorted by sensor; a reading's first row is wherever it first appears
    b = batch([2, 2, 0, 1, 1], ["gas_lel"] * 5, [0.0] * 5, ["T", "T", "N", "S", "S"])
    s = Hj212Flag(HAZMAT).score_and_update(b)
    np.testing.assert_array_equal(s.rows, [0, 2, 3])
    np.testing.assert_array_equal(s.score, [2, 0, 1])


def test_flag_overrides_merge_with_defaults() -> None:
    s = Hj212Flag(HAZMAT, severity_by_flag={"M": 0, "B": 3}).score_and_update(
        batch([0, 1, 2], ["gas_lel"] * 3, [0.0] * 3, ["M", "B", "D"])
    )
    np.testing.assert_array_equal(s.score, [0, 3, 2])


def test_flag_empty_batch() -> None:
    s = Hj212Flag(HAZMAT).score_and_update(ReadingBatch.empty())
    assert s.rows.shape == (0,) and s.score.shape == (0,)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"X": 1}, r"\['X'\] are not HJ 212 flags; valid: \['N', 'F'"),
        ({"D": 10}, r"severity_by_flag\['D'\]: 10 is not an int in 0..9"),
        ({"D": -1}, r"-1 is not an int in 0..9"),
        ({"D": 1.5}, r"1.5 is not an int"),
        ({"D": True}, r"True is not an int"),
    ],
)
def test_flag_validation(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Hj212Flag(HAZMAT, severity_by_flag=mapping)


# --- registry ----------------------------------------------------------------


def test_registry_holds_the_first_detectors_and_only_full_detectors() -> None:
    assert {DETECTORS["aqi_hj633"], DETECTORS["quantity_value"], DETECTORS["hj212_flag"]} == {AqiHj633, QuantityValue, Hj212Flag}
    for kind, cls in DETECTORS.items():
        for method in ("score_and_update", "resize", "snapshot", "restore", "test_params"):
            assert callable(getattr(cls, method, None)), f"{kind}: no {method}"


def test_registry_rejects_unknown_and_missing_params() -> None:
    with pytest.raises(ValueError, match=r"quantity_value.*\['qty'\].*valid: \['quantity'\]"):
        build_detector("quantity_value", HAZMAT, {"qty": "gas_lel"})
    with pytest.raises(ValueError, match=r"quantity_value.*missing.*'quantity'"):
        build_detector("quantity_value", HAZMAT, {})
    with pytest.raises(ValueError, match=r"hj212_flag.*\['alpha'\].*valid: \['severity_by_flag'\]"):
        build_detector("hj212_flag", HAZMAT, {"alpha": 0.1})


def test_registry_passes_constructor_errors_through() -> None:
    with pytest.raises(ValueError, match="gas_lell"):
        build_detector("quantity_value", HAZMAT, {"quantity": "gas_lell"})


# --- topology.yaml -----------------------------------------------------------


def load_topology() -> dict[str, Any]:
    with TOPOLOGY.open(encoding="utf-8") as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


def test_topology_detectors_all_build() -> None:
    topo = load_topology()
    for entry in topo["detectors"]:
        ctx = DetectorContext(quantities=tuple(topo["kinds"][entry["sensor_kind"]]["quantities"]))
        det = build_detector(entry["kind"], ctx, entry.get("params", {}))
        assert det.score_and_update(ReadingBatch.empty()).rows.shape == (0,), entry["name"]


def test_topology_gas_route_matches_gb_t_50493() -> None:
    # GB/T 50493-2019: combustible gas 1st-level alarm <= 25 %LEL, 2nd-level <= 50 %LEL.
    topo = load_topology()
    gas = {d["name"]: d for d in topo["detectors"]}["gas_lel"]
    assert gas["kind"] == "quantity_value"
    assert gas["params"] == {"quantity": "gas_lel"}
    assert topo["kinds"][gas["sensor_kind"]]["quantities"]["gas_lel"]["unit"] == "%LEL"
    routes = [r for r in topo["routes"] if r["detector"] == "gas_lel"]
    assert len(routes) == 1
    assert routes[0]["direction"] == "above"
    assert [level["at"] for level in routes[0]["levels"]] == [25, 50]
