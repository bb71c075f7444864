"""Through real Kafka, Redis and a worker process, the adversarial scenario raises exactly
the alarms the pipeline raises in process: read in one go (every partition's backlog
drained at the worker's own pace), and with a SIGKILL and restart in the middle.

The in-process variants (tiny batches, partitions drained in any order) are in
tests/unit/test_replay_determinism.py; together they are the four runs of issue 11.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from loadtest.adversary import HOUR_MS, Scenario, generate
from sinks.base import Alert
from streams.stack import StackConfig
from streams.topology import Topology
from tests.integration.conftest import WorkerProcess, produce
from tests.unit.test_replay_determinism import alarms

pytestmark = pytest.mark.integration

HOURS = 2.5


def scenario_now(topology: Topology, seed: int) -> Scenario:
    """A scenario whose event times end a few minutes ago (the decoder's age and skew
    limits apply against the wall clock), energy history included."""
    start = time.time_ns() // 1_000_000 - int(HOURS * HOUR_MS) - 600_000
    return generate(topology, seed=seed, hours=HOURS, start_ms=start, share=(0.12, 0.18), warmup_ms=HOUR_MS // 2,
                    consumer="live")


def ids_of(records: list[bytes]) -> set[tuple[str, ...]]:
    out = set()
    for raw in records:
        a = Alert.from_json(raw)
        out.add((a.alert_id, a.rule, a.sensor_id, a.status, a.severity, str(a.event_time_ms)))
    return out


async def send(stack_cfg: StackConfig, topology: Topology, scenario: Scenario) -> None:
    """Every record to its partition, in the scenario's per-partition (Kafka) order; the
    default partitioner hashes the sensor id exactly as the scenario did."""
    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
    for r in scenario.records:
        by_topic[topology.kind(r.kind).topic].append((r.key, r.value))
    for topic, records in by_topic.items():
        await produce(stack_cfg.bootstrap, topic, records)


def drained(worker: WorkerProcess, topology: Topology) -> bool:
    """The worker's group has committed every input partition to its end (the outputs of a
    batch are durable before its offsets are committed)."""
    lag = [line for line in worker.metrics().splitlines() if line.startswith("cityops_consumer_lag{")]
    expected = len(topology.spec.kinds) * topology.spec.topics.partitions
    return len(lag) == expected and all(float(line.rsplit(" ", 1)[1]) == 0.0 for line in lag)


async def read_all(reader: Any, worker: WorkerProcess, topology: Topology, want: int, what: str) -> set[tuple[str, ...]]:
    records = await reader.until(lambda recs: len(ids_of(recs)) >= want and drained(worker, topology), 240, what,
                                 alive=worker)
    return ids_of(records)


@pytest.mark.parametrize("kill", [False, True], ids=["one go", "SIGKILL mid-stream"])
async def test_the_worker_raises_exactly_the_in_process_alarms(
    kill: bool, worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, reader_factory: Any
) -> None:
    topo = isolated_topology
    scenario = scenario_now(topo, seed=11)
    expected = alarms(topo, scenario.records, np.random.default_rng(5))
    rules = {k[1] for k in expected}
    assert len(expected) > 30 and any(r.startswith("no_signal") for r in rules) and len(rules) >= 4, rules
    await send(stack_cfg, topo, scenario)
    worker.start()
    async with reader_factory(topo.spec.topics.alerts) as reader:
        if kill:
            await reader.until(lambda recs: len(recs) >= len(expected) // 3, 240, "a third of the alarms", alive=worker)
            worker.kill()
            worker.start()
        got = await read_all(reader, worker, topo, len(expected), f"{len(expected)} alarm events and no lag")
    missing, extra = sorted(expected - got), sorted(got - expected)
    assert not missing and not extra, f"missing {missing[:5]} ({len(missing)}), extra {extra[:5]} ({len(extra)})"
