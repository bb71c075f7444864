"""Score the production pipeline on adversarial scenarios (loadtest/adversary.py).

Each seed's records run in process through ``streams.pipeline.KindPipeline`` (the
worker's decoder, detectors and routes; no Kafka, Redis or Faust) in the order the
scenario's consumer reads them, in batches of random size (1 to the kind's
``max_messages``), with the consumer's clock as the batch time. Then:

* **recall** per incident type: an alarm onset (``firing``) of one of the incident's
  rules on its sensor, between its start and its end + GRACE_S (in the sensor's
  reported time);
* **threshold alarms within 2 readings**: for gas, toxic, pressure and level
  incidents, the onset no later than the second reading after the first one across
  the first set point;
* **false alarms**: onsets on sensors taking part that no incident explains (an onset
  on an incident's sensor during its window, of any rule, is explained), per 1,000
  sensor-hours of the sensors taking part (energy meters' three days of history included);
* **absent sensors**: catalog sensors that never report should each get a no-signal
  alarm; those alarms are not false.

    .venv/bin/python loadtest/eval_adversary.py --seeds 101-124 [--hours 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtest.adversary import SILENCE_TYPES, THRESHOLD_TYPES, Scenario, generate  # noqa: E402
from streams.decode import RawMessage  # noqa: E402
from streams.pipeline import KindPipeline  # noqa: E402
from streams.topology import Topology, load_topology  # noqa: E402

GRACE_S = 600.0


@dataclass(frozen=True, slots=True)
class Onset:
    rule: str
    sensor_id: str
    event_ms: int


def run(topology: Topology, scenario: Scenario, rng: np.random.Generator) -> list[Onset]:
    """The scenario's records through one pipeline per kind, in random batch sizes."""
    pipelines = {k: KindPipeline(topology, k) for k in topology.spec.kinds}
    topics = {k: topology.kind(k).topic for k in topology.spec.kinds}
    pending: dict[str, list[RawMessage]] = defaultdict(list)
    want = {k: int(rng.integers(1, topology.kind(k).batch.max_messages + 1)) for k in pipelines}
    onsets: list[Onset] = []
    offsets: dict[tuple[str, int], int] = defaultdict(int)

    def flush(kind: str, now_ms: int) -> None:
        result = pipelines[kind].process(pending[kind], now_ms)
        onsets.extend(Onset(a.rule, a.sensor_id, a.event_time_ms) for a in result.alerts if a.status == "firing")
        pending[kind] = []
        want[kind] = int(rng.integers(1, topology.kind(kind).batch.max_messages + 1))

    for record in scenario.records:
        lane = (record.kind, record.partition)
        pending[record.kind].append(RawMessage(record.value, record.key, topics[record.kind], record.partition,
                                               offsets[lane], record.arrival_ms))
        offsets[lane] += 1
        if len(pending[record.kind]) >= want[record.kind]:
            flush(record.kind, record.arrival_ms)
    for kind in pipelines:
        if pending[kind]:
            flush(kind, scenario.records[-1].arrival_ms)
    return onsets


def score(scenario: Scenario, onsets: list[Onset]) -> dict[str, Any]:
    by_sensor: dict[str, list[int]] = defaultdict(list)
    for i, o in enumerate(onsets):
        by_sensor[o.sensor_id].append(i)
    explained: set[int] = set()
    late: dict[int, str] = {}  # onset -> incident type, for onsets explained by a grace period...
    inside: set[int] = set()  # ...and not inside another incident of the sensor
    per_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    margin = 150_000  # reported time may run up to the largest clock skew ahead
    for inc in scenario.incidents:
        lo, hi = inc.start_ms - margin, inc.end_ms + margin + int(GRACE_S * 1000)
        mine = [i for i in by_sensor.get(inc.sensor_id, []) if lo <= onsets[i].event_ms <= hi]
        explained.update(mine)
        for i in mine:
            if onsets[i].event_ms > inc.end_ms + margin:
                late.setdefault(i, inc.type)
            else:
                inside.add(i)
        hits = sorted(onsets[i].event_ms for i in mine if onsets[i].rule in inc.rules)
        row: dict[str, Any] = {"id": inc.id, "sensor_id": inc.sensor_id, "found": bool(hits),
                               "ttd_s": (hits[0] - inc.start_ms) / 1000 if hits else None}
        if inc.type in THRESHOLD_TYPES and inc.crossing_ms:
            row["within_2_readings"] = bool(hits) and hits[0] <= inc.crossing_ms[-1]
        per_type[inc.type].append(row)
    false = [o for i, o in enumerate(onsets) if i not in explained and o.sensor_id in scenario.taking_part]
    absent_flagged = {o.sensor_id for o in onsets if o.sensor_id in scenario.absent and o.rule.startswith("no_signal")}
    sensor_hours = scenario.sensor_hours
    by_rule: dict[str, int] = defaultdict(int)
    for o in false:
        by_rule[o.rule] += 1
    # an alarm that starts after its incident is over (in the grace period) counts as
    # explained, which can hide a false alarm caused by the incident (a baseline that absorbed
    # it); they are listed so that they are looked at
    late_by: dict[str, int] = defaultdict(int)
    for i, kind in late.items():
        if i in inside:
            continue
        late_by[f"{kind}/{onsets[i].rule}"] += 1
    return {
        "seed": scenario.seed, "consumer": scenario.consumer, "readings_records": len(scenario.records),
        "sensors": len(scenario.taking_part), "absent": len(scenario.absent), "absent_flagged": len(absent_flagged),
        "sensor_hours": sensor_hours, "false_alarms": len(false), "false_by_rule": dict(sorted(by_rule.items())),
        "false_examples": [[o.rule, o.sensor_id, o.event_ms] for o in false[:5]],
        "after_incident_end": dict(sorted(late_by.items())),
        "incidents": {k: v for k, v in sorted(per_type.items())},
    }


def summarize(results: list[dict[str, Any]]) -> str:
    types: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        for kind, rows in r["incidents"].items():
            types[kind] += rows
    lines = ["| incident type | n | recalled | recall | within 2 readings | median time to detect (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind in sorted(types):
        rows = types[kind]
        found = [x for x in rows if x["found"]]
        two = [x for x in rows if "within_2_readings" in x]
        ttd = [x["ttd_s"] for x in found]
        within = f"{sum(x['within_2_readings'] for x in two)}/{len(two)}" if two else "-"
        lines.append(f"| {kind} | {len(rows)} | {len(found)} | {len(found) / len(rows):.0%} | {within} | "
                     f"{statistics.median(ttd):.0f} |" if ttd else f"| {kind} | {len(rows)} | 0 | 0% | {within} | - |")
    hours = sum(r["sensor_hours"] for r in results)
    false = sum(r["false_alarms"] for r in results)
    by_rule: dict[str, int] = defaultdict(int)
    for r in results:
        for rule, n in r["false_by_rule"].items():
            by_rule[rule] += n
    after_end: dict[str, int] = defaultdict(int)
    for r in results:
        for key, n in r.get("after_incident_end", {}).items():
            after_end[key] += n
    absent = sum(r["absent"] for r in results)
    flagged = sum(r["absent_flagged"] for r in results)
    lines += ["", f"false alarms: {false} in {hours:,.0f} sensor-hours = {1000 * false / hours:.2f} per 1,000 "
              f"sensor-hours; by rule: {dict(sorted(by_rule.items()))}",
              f"absent catalog sensors with a no-signal alarm: {flagged}/{absent}",
              "onsets after their incident had ended (counted as explained; incident type/rule): "
              f"{dict(sorted(after_end.items()))}",
              "consumers: " + ", ".join(f"{r['seed']}:{r['consumer']}" for r in results)]
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv: Iterable[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="1-5", help="e.g. 101-124 or 1,4,9")
    p.add_argument("--hours", type=float, default=8.0)
    p.add_argument("--topology", type=Path, default=ROOT / "topology.yaml")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(list(argv) if argv is not None else None)
    topology = load_topology(a.topology)
    results = []
    for seed in parse_seeds(a.seeds):
        t0 = time.perf_counter()
        scenario = generate(topology, seed, a.hours)
        t1 = time.perf_counter()
        onsets = run(topology, scenario, np.random.default_rng(seed + 1_000_000))
        result = score(scenario, onsets)
        result["seconds"] = {"generate": round(t1 - t0, 1), "run": round(time.perf_counter() - t1, 1)}
        results.append(result)
        print(f"seed {seed} ({scenario.consumer}): {len(scenario.records)} records, "
              f"{sum(len(v) for v in result['incidents'].values())} incidents, "
              f"{sum(x['found'] for v in result['incidents'].values() for x in v)} found, "
              f"{result['false_alarms']} false {result['false_by_rule']}, "
              f"absent flagged {result['absent_flagged']}/{result['absent']}, {result['seconds']}", flush=True)
    print(summarize(results))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
