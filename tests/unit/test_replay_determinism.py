"""The same scenario gives the same alarms however it is cut and however its partitions
are drained: the worker's pipeline (decoder, detectors, routes) in process.

The scenario is the adversarial city of loadtest/adversary.py: clock skew, gateway
batches, late and duplicate deliveries, store-and-forward uploads, incidents of every
kind. The real-Kafka variants (one go, SIGKILL and restart) are in
tests/integration/test_replay_determinism.py.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from loadtest.adversary import HOUR_MS, Record, Scenario, generate
from sinks.base import Alert
from streams.decode import RawMessage
from streams.pipeline import KindPipeline
from streams.topology import Topology, load_topology
from tests.shared import REPO


def alarms(topology: Topology, records: list[Record], sizes: np.random.Generator | int) -> set[tuple[str, ...]]:
    """Every alarm event of the records fed in this order, in batches of random size (an
    int: that size), as (alert_id, rule, sensor, status, severity, event time)."""
    pipelines = {k: KindPipeline(topology, k) for k in topology.spec.kinds}
    pending: dict[str, list[RawMessage]] = defaultdict(list)
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    out: set[tuple[str, ...]] = set()

    def size() -> int:
        return sizes if isinstance(sizes, int) else int(sizes.integers(1, 1500))

    want = {k: size() for k in pipelines}

    def flush(kind: str, now_ms: int) -> None:
        for a in pipelines[kind].process(pending[kind], now_ms).alerts:
            out.add(_key(a))
        pending[kind] = []
        want[kind] = size()

    for r in records:
        pending[r.kind].append(RawMessage(r.value, r.key, topology.kind(r.kind).topic, r.partition,
                                          offsets[(r.kind, r.partition)], r.arrival_ms))
        offsets[(r.kind, r.partition)] += 1
        if len(pending[r.kind]) >= want[r.kind]:
            flush(r.kind, r.arrival_ms)
    for kind in pipelines:
        if pending[kind]:
            flush(kind, records[-1].arrival_ms)
    return out


def _key(a: Alert) -> tuple[str, ...]:
    return (a.alert_id, a.rule, a.sensor_id, a.status, a.severity, str(a.event_time_ms))


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(REPO / "topology.yaml")


@pytest.fixture(scope="module")
def scenario(topology: Topology) -> Scenario:
    return generate(topology, seed=7, hours=3.0, share=(0.15, 0.25), warmup_ms=HOUR_MS, consumer="live")


@pytest.fixture(scope="module")
def reference(topology: Topology, scenario: Scenario) -> set[tuple[str, ...]]:
    found = alarms(topology, scenario.records, np.random.default_rng(1))
    rules = {k[1] for k in found}
    # not a trivial stream: value alarms from the incidents and silences of both sorts
    assert len(found) > 50 and any(r.startswith("no_signal") for r in rules) and len(rules) >= 5, rules
    return found


def test_one_batch_per_kind_gives_the_same_alarms(topology: Topology, scenario: Scenario,
                                                  reference: set[tuple[str, ...]]) -> None:
    assert alarms(topology, scenario.records, 1_000_000) == reference


def test_tiny_batches_give_the_same_alarms(topology: Topology, scenario: Scenario,
                                           reference: set[tuple[str, ...]]) -> None:
    assert alarms(topology, scenario.records, 3) == reference


@pytest.mark.parametrize("order", ["partition by partition", "newest partition first", "shuffled merge"])
def test_partitions_drained_at_any_pace_give_the_same_alarms(topology: Topology, scenario: Scenario,
                                                             reference: set[tuple[str, ...]], order: str) -> None:
    """Each partition keeps its Kafka order; how the consumer interleaves them is free:
    one whole partition before the next (a catch-up), the reverse, or a random merge."""
    lanes: dict[tuple[str, int], list[Record]] = defaultdict(list)
    for r in scenario.records:
        lanes[(r.kind, r.partition)].append(r)
    names = sorted(lanes)
    if order == "partition by partition":
        records = [r for lane in names for r in lanes[lane]]
    elif order == "newest partition first":
        records = [r for lane in reversed(names) for r in lanes[lane]]
    else:
        rng = np.random.default_rng(3)
        picks = rng.permutation(np.repeat(np.arange(len(names)), [len(lanes[n]) for n in names]))
        at = dict.fromkeys(range(len(names)), 0)
        records = []
        for i in picks.tolist():
            records.append(lanes[names[i]][at[i]])
            at[i] += 1
    # the consumer's clock only moves forward: a drained lane was read at its latest time
    clock = np.maximum.accumulate(np.array([r.arrival_ms for r in records]))
    records = [Record(r.kind, r.partition, int(c), r.key, r.value) for r, c in zip(records, clock, strict=True)]
    assert alarms(topology, records, np.random.default_rng(2)) == reference
