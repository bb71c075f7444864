"""Rebalances under a backlog: two real `cityops worker`s, one joins and one leaves mid-stream.

A check for changes to the worker's consumer path (streams/consumer.py), not a benchmark:
with a pre-loaded backlog the stream buffers are full, which is when a rebalance
meets blocked deliveries. Worker A starts on the backlog; when it has counted
``--join-at`` of the readings, worker B joins the group (rebalance 1); when the two
have counted ``--leave-at``, A is stopped with SIGTERM (rebalance 2: B takes every
partition). Then it waits until the group's committed offsets reach the end of
every input topic, and reads back the alerts topic.

It prints how long each phase took, the readings each worker counted (their sum
may exceed the load: a batch in flight at a revocation is processed again; A's
figure is its last scrape before SIGTERM, so it may miss A's final batches), the
unique and duplicate alert ids, and any worker log line with a warning or error.
Uses its own topics, group and Redis namespace, removed at the end.

    .venv/bin/python loadtest/profile_rebalance.py [--readings 200000] [--join-at 0.2] [--leave-at 0.6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(REPO), str(REPO / "loadtest")) if p not in sys.path]

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from bench_e2e import (  # noqa: E402
    DEFAULT_MIX, Worker, build_load, delete_redis_namespace, delete_topics, free_port, isolated_topology, parse_mix,
    produce_all, wait_until,
)

from sinks.base import Alert  # noqa: E402
from streams import stack  # noqa: E402
from streams.topology import Topology  # noqa: E402


async def lag(bootstrap: str, groups: dict[str, str], partitions: int) -> int:
    """Sum over the input partitions of (end offset - committed offset of the topic's group)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await asyncio.gather(admin.start(), consumer.start())
    try:
        tps = [TopicPartition(t, p) for t in groups for p in range(partitions)]
        committed = {}
        for topic, group in groups.items():
            mine = [tp for tp in tps if tp.topic == topic]
            committed.update(await admin.list_consumer_group_offsets(group, partitions=mine))
        ends = await consumer.end_offsets(tps)
        return sum(ends[tp] - max(committed[tp].offset, 0) if tp in committed else ends[tp] for tp in tps)
    finally:
        await asyncio.gather(admin.close(), consumer.stop(), return_exceptions=True)


async def read_alerts(bootstrap: str, topic: str, partitions: int) -> list[Alert]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out: list[Alert] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                out += [Alert.from_json(r.value) for r in recs]
        return out
    finally:
        await consumer.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readings", type=int, default=200_000)
    p.add_argument("--join-at", type=float, default=0.2, help="share of readings counted by A when B starts")
    p.add_argument("--leave-at", type=float, default=0.6, help="share counted by A + B when A is stopped")
    p.add_argument("--deadline-s", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=20261126)
    a = p.parse_args()
    cfg = stack.StackConfig.from_env(root=REPO / ".stack")
    if not stack.status(cfg).all_running:
        print("the local stack is not running: `.venv/bin/cityops stack up`", file=sys.stderr)
        return 2
    suffix = uuid.uuid4().hex[:10]
    workdir = Path(tempfile.mkdtemp(prefix=f"cityops-rebalance-{suffix}-"))
    topo: Topology = isolated_topology(workdir, suffix)
    group, namespace = f"cityops-rebalance-{suffix}", f"rebalance-{suffix}"
    base_env = {**os.environ, "CITYOPS_BOOTSTRAP": cfg.bootstrap, "CITYOPS_REDIS_URL": cfg.redis_url,
                "CITYOPS_APP_ID": group, "CITYOPS_NAMESPACE": namespace}
    workers = {}
    for name in ("A", "B"):
        port = free_port()
        env = {**base_env, "CITYOPS_WEB_PORT": str(port), "CITYOPS_DATA_DIR": str(workdir / f"data-{name}")}
        workers[name] = Worker(topo, env, workdir / f"worker-{name}.log", port)
    A, B = workers["A"], workers["B"]
    groups = {topo.kind(k).topic: f"{group}.{k}" for k in topo.spec.kinds}  # Settings.consumer_group
    parts = topo.spec.topics.partitions
    counted = {"A": 0.0, "B": 0.0}

    def count(name: str) -> float:
        w = workers[name]
        if w.proc is not None and w.proc.poll() is None:
            counted[name] = max(counted[name], w.readings_total())
        return counted[name]

    try:
        stack.ensure_topics(cfg.bootstrap, topo.all_topics())
        gas_ids = [s.sensor_id for s in topo.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS")]
        load = build_load(topo, a.readings, parse_mix(DEFAULT_MIX), gas_ids, a.seed)
        expected = sum(load.readings.values())
        asyncio.run(produce_all(cfg.bootstrap, load))
        print(f"# pre-loaded {expected} readings in {load.n_records} records; group {group}")
        t0 = time.monotonic()
        A.start()
        wait_until(lambda: A.alive() and count("A") >= a.join_at * expected, a.deadline_s, "A's first share", 0.2)
        t_join = time.monotonic()
        B.start()
        wait_until(lambda: A.alive() and B.alive() and count("B") > 0, a.deadline_s, "B's first batch", 0.2)
        t_b = time.monotonic()
        wait_until(lambda: A.alive() and B.alive() and count("A") + count("B") >= a.leave_at * expected,
                   a.deadline_s, "the leave share", 0.2)
        t_leave = time.monotonic()
        A.stop()
        t_stopped = time.monotonic()
        wait_until(lambda: B.alive() and asyncio.run(lag(cfg.bootstrap, groups, parts)) == 0,
                   a.deadline_s, "committed offsets at the end of every input partition", 1.0)
        t_done = time.monotonic()
        count("B")
        alerts = asyncio.run(read_alerts(cfg.bootstrap, topo.spec.topics.alerts, parts))
        ids = [x.alert_id for x in alerts]
        # A's figure is its last /metrics value before SIGTERM: batches it finished after that are missing
        print(f"A counted {counted['A']:.0f} (last scrape), B counted {counted['B']:.0f}: "
              f"sum {sum(counted.values()):.0f} of {expected} pre-loaded")
        print(f"B joined at +{t_join - t0:.1f} s and counted its first batch {t_b - t_join:.1f} s later; "
              f"A stopped at +{t_leave - t0:.1f} s (SIGTERM took {t_stopped - t_leave:.1f} s); "
              f"group lag 0 at +{t_done - t0:.1f} s")
        print(f"alerts: {len(ids)} records, {len(set(ids))} unique alert ids, {len(ids) - len(set(ids))} duplicates")
        for name, w in workers.items():
            bad = [ln for ln in w.log_path.read_text(errors="replace").splitlines()
                   if re.search(r"WARN|ERROR|CRIT|Traceback|never awaited", ln)]
            print(f"worker {name} log: {len(bad)} warning/error lines", *bad[:8], sep="\n  ")
        return 0
    finally:
        for w in workers.values():
            w.stop()
        asyncio.run(delete_topics(cfg.bootstrap, suffix))
        delete_redis_namespace(cfg.redis_url, namespace)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
