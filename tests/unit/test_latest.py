"""streams/latest.py: the latest value per catalog sensor for the boards."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from detectors.base import ReadingBatch, Scores
from streams.catalog import SensorInfo
from streams.latest import LatestCollector, LatestValues
from tests.unit.test_topology import BASE, _error

SENSORS = [SensorInfo(sensor_id=f"G{i}", kind="hazmat", site_id=f"SITE-{i // 2}", site_name="", district="Humen",
                      lat=None, lon=None) for i in range(3)]
QUANTITIES = ["gas_lel", "gas_ppm", "level_pct"]


def batch(rows: list[tuple[int, int, int, float]]) -> ReadingBatch:
    """(sensor_idx, event_time_ms, quantity_idx, value) per row."""
    s, t, q, v = (np.array(c) for c in zip(*rows, strict=True))
    return ReadingBatch(sensor_idx=s.astype(np.int32), reading_idx=np.arange(len(rows), dtype=np.int32),
                        event_time_ms=t.astype(np.int64), quantity_idx=q.astype(np.int16),
                        value=v.astype(np.float64), flag=np.zeros(len(rows), np.uint8))


def values(latest: LatestValues) -> dict[tuple[str, str], float]:
    return {(sensor.sensor_id, name): value for family, name, sensor, value in latest.samples() if family == "value"}


def test_the_newest_reading_per_sensor_and_quantity_wins_whatever_the_order() -> None:
    latest = LatestValues("hazmat", SENSORS, QUANTITIES, ["gas_lel", "level_pct"], [])
    latest.update(batch([(0, 300, 0, 12.0), (0, 100, 0, 99.0), (1, 200, 0, 5.0), (1, 200, 1, 7.0),
                         (2, 50, 2, 40.0), (7, 500, 0, 1.0)]), {})  # gas_ppm not exported; sensor 7 not in catalog
    assert values(latest) == {("G0", "gas_lel"): 12.0, ("G1", "gas_lel"): 5.0, ("G2", "level_pct"): 40.0}
    latest.update(batch([(0, 250, 0, 50.0), (2, 60, 2, 41.0)]), {})  # a late G0 reading does not overwrite
    assert values(latest)[("G0", "gas_lel")] == 12.0 and values(latest)[("G2", "level_pct")] == 41.0


def test_detector_scores_are_kept_per_sensor_including_entries_about_silent_sensors() -> None:
    latest = LatestValues("hazmat", SENSORS, QUANTITIES, [], ["aqi"])
    b = batch([(0, 100, 0, 1.0), (1, 100, 0, 2.0)])
    latest.update(b, {"aqi": Scores(rows=np.array([0, 1]), score=np.array([151.0, 42.0]), measure="aqi")})
    silent = Scores(rows=np.array([-1]), score=np.array([77.0]), measure="aqi",
                    sensor_idx=np.array([2], np.int32), event_time_ms=np.array([150], np.int64))
    latest.update(b, {"aqi": silent})
    scores = {(s.sensor_id, n): v for family, n, s, v in latest.samples() if family == "score"}
    assert scores == {("G0", "aqi"): 151.0, ("G1", "aqi"): 42.0, ("G2", "aqi"): 77.0}


def test_the_collector_exports_bounded_labelled_gauges() -> None:
    latest = LatestValues("hazmat", SENSORS, QUANTITIES, ["gas_lel"], [])
    latest.update(batch([(1, 100, 0, 30.5)]), {})
    registry = CollectorRegistry()
    registry.register(LatestCollector(lambda: {"hazmat": latest}))
    labels = {"kind": "hazmat", "quantity": "gas_lel", "sensor_id": "G1", "site_id": "SITE-0", "district": "Humen"}
    assert registry.get_sample_value("cityops_latest_value", labels) == 30.5
    text = generate_latest(registry).decode()
    assert text.count("cityops_latest_value{") == 1  # only sensors heard


def test_metrics_config_names_unknown_kinds_quantities_and_detectors(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["metrics"] = {"latest_values": {"air": ["pm2.5"], "water": ["ph"]}, "latest_scores": ["aqii"]}
    message = _error(tmp_path, data)
    assert "metrics.latest_values.air[0]: unknown quantity 'pm2.5'; valid: [" in message and "'pm25'" in message
    assert "metrics.latest_values.water: unknown kind; valid: ['air', 'energy', 'hazmat', 'traffic']" in message
    assert "metrics.latest_scores[0]: unknown detector 'aqii'; valid: [" in message
