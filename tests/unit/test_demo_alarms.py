"""The demo's city, run through the worker's pipeline at the demo's rate, raises gas
alarms only while its scripted leak lasts, and only at the leak's site.

Before ``side: up`` on gas_lel_cusum, every detector at the site raised
gas_lel_creep ("creeping up") about 25 s after the leak had cleared: the two-sided
CUSUM reported its downward sum, clean air below a baseline that had absorbed the leak.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from streams.decode import RawMessage
from streams.pipeline import KindPipeline
from streams.sim.engine import SimOptions, Simulation
from streams.topology import Topology, load_topology

ROOT = Path(__file__).resolve().parents[2]
START_MS = 1_764_900_000_000
DEMO_RATE = 300.0  # readings per wall second, the Makefile's RATE


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(ROOT / "topology.yaml")


def test_gas_alarms_only_during_the_leak_and_at_its_site(topology: Topology) -> None:
    sim = Simulation(topology, SimOptions(rate=DEMO_RATE, duration_s=90, seed=7, start_ms=START_MS))
    kinds = sorted({m.kind for m in sim.city.models})
    pipelines = {k: KindPipeline(topology, k) for k in kinds}
    topic_kind = {topology.kind(k).topic: k for k in kinds}
    onsets = []
    offset = 0
    for tick in sim.ticks():
        by_kind: dict[str, list[RawMessage]] = defaultdict(list)
        for m in tick:
            by_kind[topic_kind[m.topic]].append(RawMessage(m.value, m.key, m.topic, 0, offset))
            offset += 1
        for kind, messages in by_kind.items():
            onsets += [a for a in pipelines[kind].process(messages, sim.now_ms).alerts if a.status == "firing"]

    (leak,) = [t for t in sim.truth_json() if t["type"] == "gas_leak"]
    gas = [a for a in onsets if a.rule.startswith("gas_lel")]
    assert any(a.rule == "gas_lel_alarm" for a in gas)  # the leak itself alarms
    late = [(a.rule, a.sensor_id, a.event_time_ms - leak["end_ms"]) for a in gas
            if not leak["start_ms"] <= a.event_time_ms <= leak["end_ms"]]
    assert late == []
    site = {s.sensor_id: s.site_id for s in topology.catalog.sensors}
    assert {site[a.sensor_id] for a in gas} == {site[s] for s in leak["sensor_ids"]}
