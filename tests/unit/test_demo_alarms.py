"""The demo's city, run through the worker's pipeline at the demo's rate, raises gas
alarms only while its scripted leak lasts, and only at the leak's site.

Before ``side: up`` on gas_lel_cusum, every detector at the site raised
gas_lel_creep ("creeping up") about 25 s after the leak had cleared: the two-sided
CUSUM reported its downward sum, clean air below a baseline that had absorbed the leak.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.eval_incidents import simulate
from streams.sim.engine import SimOptions
from streams.topology import Topology, load_topology

ROOT = Path(__file__).resolve().parents[2]
START_MS = 1_764_900_000_000
DEMO_RATE = 300.0  # readings per wall second, the Makefile's RATE


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(ROOT / "topology.yaml")


def test_gas_alarms_only_during_the_leak_and_at_its_site(topology: Topology) -> None:
    onsets, truth, _, _ = simulate(topology, SimOptions(rate=DEMO_RATE, duration_s=90, seed=7, start_ms=START_MS))
    (leak,) = [t for t in truth if t["type"] == "gas_leak"]
    gas = [o for o in onsets if o.rule.startswith("gas_lel")]
    assert any(o.rule == "gas_lel_alarm" for o in gas)  # the leak itself alarms
    late = [(o.rule, o.sensor_id, o.event_ms - leak["end_ms"]) for o in gas
            if not leak["start_ms"] <= o.event_ms <= leak["end_ms"]]
    assert late == []
    site = {s.sensor_id: s.site_id for s in topology.catalog.sensors}
    assert {site[o.sensor_id] for o in gas} == {site[s] for s in leak["sensor_ids"]}
