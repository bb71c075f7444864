"""Do two checkouts' pipelines say exactly the same thing? (for speed work that must not
change a single score)

``dump`` runs ``streams.pipeline.KindPipeline`` of the checkout at REPO over fixed streams
and writes a digest of everything it produces, batch by batch: every detector's Scores
(rows, scores, silent-sensor entries, bit for bit), the alarm events (their JSON), the late
counts, the touched sensors, the boards' latest values, and at the end every detector's and
route's state snapshot. ``compare`` reports any difference between two dumps.

Streams: bench_pipeline's messages for every kind (catalog sensors, 3,000 unknown ones,
five sensors sending everything, 5 % invalid), on three partitions, in batches of 1 to 5,000
messages; the simulated city (streams.sim) with its incidents; two seeds of the adversarial
city (loadtest/adversary.py: skewed clocks, late, duplicate and store-and-forward
deliveries, bursts), in batches of random sizes.

    .venv/bin/python loadtest/compare_outputs.py dump /path/to/checkout-a a.pkl
    .venv/bin/python loadtest/compare_outputs.py dump /path/to/checkout-b b.pkl
    .venv/bin/python loadtest/compare_outputs.py compare a.pkl b.pkl

Run ``dump`` with this file from either checkout: it imports the code under REPO.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any


def _digest(*parts: Any) -> str:
    return hashlib.sha256(pickle.dumps(parts)).hexdigest()


def dump(repo: Path, out: Path) -> None:
    for path in (repo, repo / "loadtest"):
        sys.path.insert(0, str(path))
    import numpy as np

    import adversary
    import bench_pipeline as bp
    import detectors.registry as registry
    from streams.decode import RawMessage
    from streams.pipeline import KindPipeline
    from streams.sim.engine import SimOptions, generate
    from streams.topology import load_topology

    topology = load_topology(repo / "topology.yaml")
    captured: list[tuple[Any, ...]] = []

    def wrap(cls: type) -> None:
        original = cls.score_and_update  # type: ignore[attr-defined]

        def score_and_update(self: Any, batch: Any) -> Any:
            s = original(self, batch)
            captured.append((type(self).__name__, s.measure, s.rows.tobytes(), s.score.tobytes(),
                             None if s.sensor_idx is None else s.sensor_idx.tobytes(),
                             None if s.event_time_ms is None else s.event_time_ms.tobytes()))
            return s

        cls.score_and_update = score_and_update  # type: ignore[attr-defined]

    defining = {next(c for c in cls.__mro__ if "score_and_update" in c.__dict__) for cls in registry.DETECTORS.values()}
    for cls in sorted(defining, key=lambda c: f"{c.__module__}.{c.__qualname__}"):  # each method wrapped once
        wrap(cls)

    results: dict[str, Any] = {}

    def run(name: str, pipeline: Any, batches: list[tuple[list[Any], int]]) -> None:
        record = []
        for messages, now_ms in batches:
            captured.clear()
            r = pipeline.process(messages, now_ms)
            latest = pipeline.latest
            record.append({
                "alerts": [a.to_json() for a in r.alerts], "late": dict(r.late_by_rule), "touched": r.touched.tolist(),
                "readings": r.n_readings, "dead": len(r.dead), "scores": _digest(captured),
                "latest": _digest(latest.values.value.tobytes(), latest.values.time.tobytes(),
                                  latest.scores.value.tobytes(), latest.scores.time.tobytes()),
            })
        state = {k: _digest(sorted((n, a.tobytes()) for n, a in v.snapshot().items()))
                 for k, v in pipeline.stateful_parts().items()}
        results[name] = {"batches": record, "state": state}
        print(f"{name}: {len(record)} batches, {sum(len(b['alerts']) for b in record)} alarm events", file=sys.stderr)

    now = 1_800_000_000_000
    sizes = [1, 3, 100, 1000, 7, 5000, 1, 2, 250, 1000, 1, 40, 3000, 10, 1, 1, 600]
    for kind in ("air", "hazmat", "traffic", "energy"):
        for variant, unknown, only, invalid in (("plain", 0, 0, 0.0), ("unknown", 3000, 0, 0.0), ("few", 0, 5, 0.0),
                                                ("invalid", 0, 0, 0.05)):
            name = f"{kind}-{variant}"
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            sensors = bp.sensor_models(topology, kind, rng, unknown)
            if only:
                sensors = sensors[:only]
            start, step = bp.sensor_clock(now, sensors[0].period_s, sum(sizes) * 1.6 / len(sensors),
                                          topology.spec.input.max_age_s)
            factory = bp.MessageFactory(sensors, rng, start, step, bp.MessageMix(invalid_p=invalid))
            batches = []
            for i, n in enumerate(sizes):
                messages = factory.batch(n)[0]
                messages = [RawMessage(m.value, m.key, m.topic, 0 if only else zlib.crc32(m.key) % 3, m.offset)
                            for m in messages]
                batches.append((messages, now + i * 1000))
            run(name, KindPipeline(topology, kind), batches)

    start_ms = 1_795_700_000_000
    ticks = list(generate(topology, SimOptions(rate=None, duration_s=1200, seed=7, start_ms=start_ms, speed=6.0)))
    for kind in ("air", "hazmat", "traffic", "energy"):
        topic = topology.kind(kind).topic
        found = [(m, i) for i, tick in enumerate(ticks) for m in tick if m.topic == topic]
        raw = [RawMessage(m.value, m.key, m.topic, (zlib.crc32(m.key) % 4) if j % 500 else 0, j)
               for j, (m, _) in enumerate(found)]
        rng = np.random.default_rng(3)
        batches, pos = [], 0
        while pos < len(raw):
            n = int(rng.choice([1, 2, 5, 30, 200, 1000]))
            pos += n
            batches.append((raw[pos - n : pos], start_ms + int(found[min(pos, len(found)) - 1][1] * 600) + 2000))
        run(f"{kind}-sim", KindPipeline(topology, kind), batches)

    for seed in (3, 11):
        scenario = adversary.generate(topology, seed, hours=3.0)
        rng = np.random.default_rng(seed)
        pipelines = {k: KindPipeline(topology, k) for k in topology.spec.kinds}
        topics = {k: topology.kind(k).topic for k in topology.spec.kinds}
        pending: dict[str, list[Any]] = defaultdict(list)
        per_kind: dict[str, list[tuple[list[Any], int]]] = defaultdict(list)
        offsets: dict[tuple[str, int], int] = defaultdict(int)
        want = {k: int(rng.integers(1, 400)) for k in pipelines}
        for rec in scenario.records:
            lane = (rec.kind, rec.partition)
            pending[rec.kind].append(RawMessage(rec.value, rec.key, topics[rec.kind], rec.partition, offsets[lane],
                                                rec.arrival_ms))
            offsets[lane] += 1
            if len(pending[rec.kind]) >= want[rec.kind]:
                per_kind[rec.kind].append((pending[rec.kind], rec.arrival_ms))
                pending[rec.kind] = []
                want[rec.kind] = int(rng.choice([1, 3, 50, 400, 2000]))
        for k, pipeline in pipelines.items():
            if pending[k]:
                per_kind[k].append((pending[k], scenario.records[-1].arrival_ms))
            run(f"adversary-{seed}-{k}", pipeline, per_kind[k])

    out.write_bytes(pickle.dumps(results))


def compare(a_path: Path, b_path: Path) -> int:
    a, b = pickle.loads(a_path.read_bytes()), pickle.loads(b_path.read_bytes())
    differences = 0
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"{name}: only in one dump")
            differences += 1
            continue
        for i, (x, y) in enumerate(zip(a[name]["batches"], b[name]["batches"], strict=True)):
            for key in x:
                if x[key] != y[key]:
                    print(f"{name} batch {i}: {key} differs")
                    differences += 1
        for part, digest in a[name]["state"].items():
            if b[name]["state"].get(part) != digest:
                print(f"{name}: state of {part} differs")
                differences += 1
    batches = sum(len(v["batches"]) for v in a.values())
    print(f"{'identical' if not differences else f'{differences} differences'}: {len(a)} streams, {batches} batches")
    return 1 if differences else 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "dump":
        dump(Path(argv[1]).resolve(), Path(argv[2]))
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        return compare(Path(argv[1]), Path(argv[2]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
