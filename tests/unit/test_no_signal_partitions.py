"""no_signal keeps one event-time clock per input partition (a watermark in Flink's sense).

A kind's readings come from several Kafka partitions consumed at different speeds:
after a lag, a restart or in a replay one partition can be hours ahead of another.
A sensor must be judged silent only against the clock of the partition that carries
it, so the order in which partitions are drained cannot change the silences.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from detectors.base import DetectorContext, ReadingBatch
from detectors.no_signal import NoSignal
from tests.unit.detector_streams import R, feed, stream

N_SENSORS = 16
CTX = DetectorContext(quantities=("value",), expected_period_s=10.0,
                      sensor_ids=tuple(f"s{i}" for i in range(N_SENSORS)),
                      sensor_partitions=tuple(i % 2 for i in range(N_SENSORS)))  # even -> 0, odd -> 1


def partition_streams(rounds: int, stop: dict[int, float] | None = None) -> dict[int, list[R]]:
    """Per partition, its readings in Kafka order: sensor s reports at 10 k + s / 2 s."""
    stop = stop or {}
    out: dict[int, list[R]] = {0: [], 1: []}
    for k in range(rounds):
        for s in range(N_SENSORS):
            t = 10.0 * k + s / 2
            if t >= stop.get(s, float("inf")):
                continue
            out[s % 2].append(R(s, t, {"value": 1.0}))
    return out


def merged(parts: dict[int, list[R]], order: str, rng: np.random.Generator) -> list[tuple[int, R]]:
    """The partitions' records as one consumer sees them: interleaved by time, partition 0
    drained before partition 1 (a catch-up), or a random merge (each keeps its order)."""
    if order == "time":
        both = [(p, r) for p, rs in parts.items() for r in rs]
        return sorted(both, key=lambda pr: pr[1].t_s)
    if order == "drain":
        return [(p, r) for p in (0, 1) for r in parts[p]]
    picks = rng.permutation(np.repeat([0, 1], [len(parts[0]), len(parts[1])]))
    pos = {0: 0, 1: 0}
    out = []
    for p in picks.tolist():
        out.append((p, parts[p][pos[p]]))
        pos[p] += 1
    return out


def with_partitions(records: list[tuple[int, R]]) -> ReadingBatch:
    whole = stream(CTX, [r for _, r in records])
    partition = np.array([p for p, _ in records], np.int16)[whole.reading_idx]
    return dataclasses.replace(whole, partition=partition)


def silences(records: list[tuple[int, R]], cuts: list[int] | None = None) -> list[tuple[int, int, float]]:
    return sorted(feed(NoSignal(CTX), with_partitions(records), cuts or []).silent)


def test_draining_one_partition_before_the_other_raises_nothing_for_healthy_sensors() -> None:
    parts = partition_streams(rounds=360)  # an hour of every sensor reporting every 10 s
    rng = np.random.default_rng(1)
    for order in ("time", "drain", "random"):
        assert silences(merged(parts, order, rng)) == [], order


def test_one_kind_wide_clock_would_raise_them_the_control() -> None:
    """The same catch-up with every record on one partition: partition 1's sensors trail
    a clock an hour ahead and look silent, which is what the per-partition clock avoids."""
    drained = merged(partition_streams(rounds=360), "drain", np.random.default_rng(1))
    one_partition = [(0, r) for _, r in drained]
    ctx = dataclasses.replace(CTX, sensor_partitions=(0,) * N_SENSORS)
    found = feed(NoSignal(ctx), with_partitions(one_partition)).silent
    assert {s for s, _, _ in found} == {s for s in range(N_SENSORS) if s % 2 == 1}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_silent_sensor_is_reported_the_same_whatever_the_drain_order_and_the_cuts(seed: int) -> None:
    parts = partition_streams(rounds=120, stop={3: 405.0, 6: 600.0, 9: 905.0})
    rng = np.random.default_rng(seed)
    reference = silences(merged(parts, "time", rng))
    assert {s for s, _, _ in reference} == {3, 6, 9}
    # sensor 3 (partition 1) last spoke at 401.5 s: two periods at the tick 430 s
    assert min(t for s, t, _ in reference if s == 3) == 430_000
    for order in ("drain", "random"):
        records = merged(parts, order, rng)
        assert silences(records) == reference, order
        cuts = sorted(rng.choice(len(records), 30, replace=False).tolist())
        assert silences(records, cuts) == reference, f"{order} in 31 batches"


def test_a_catalog_sensor_that_never_reports_is_judged_by_its_own_partition() -> None:
    parts = partition_streams(rounds=60, stop={5: 0.0})  # sensor 5 (partition 1) never speaks
    rng = np.random.default_rng(4)
    for order in ("time", "drain", "random"):
        found = silences(merged(parts, order, rng))
        assert {s for s, _, _ in found} == {5}, order
        # partition 1 starts observing at 0.5 s (sensor 1); a sensor never heard is
        # reported after unheard_after_periods (10): (110 - 0.5) / 10 >= 10 at the tick 110 s
        assert min(t for _, t, _ in found) == 110_000


def test_an_idle_partition_follows_the_clock_of_the_others() -> None:
    """Partition 1 stops delivering at all (its gateway died). Its own clock stands still,
    so only the idle flag (the worker saw nothing from it for a while) lets the others'
    clock judge its sensors; without the flag they are never reported."""
    parts = partition_streams(rounds=60, stop={s: 200.0 for s in range(1, N_SENSORS, 2)})
    records = merged(parts, "time", np.random.default_rng(5))
    whole = with_partitions(records)
    cut = next(i for i, (_, r) in enumerate(records) if r.t_s > 300.0)

    def run(idle: tuple[int, ...]) -> list[tuple[int, int, float]]:
        det, out = NoSignal(CTX), []
        for lo, hi in ((0, cut), (cut, len(records))):
            piece = whole.take(np.flatnonzero((whole.reading_idx >= lo) & (whole.reading_idx < hi)))
            batch = dataclasses.replace(piece.take(np.argsort(piece.sensor_idx, kind="stable")),
                                        idle_partitions=idle if lo else ())
            scores = det.score_and_update(batch)
            silent = scores.rows < 0
            if silent.any():
                sensors, times = scores.sensors_and_times(batch)
                out += zip(sensors[silent].tolist(), times[silent].tolist(), scores.score[silent].tolist(), strict=True)
        return sorted(out)

    assert run(idle=()) == []
    flagged = run(idle=(1,))
    assert {s for s, _, _ in flagged} == set(range(1, N_SENSORS, 2))
    # partition 0's clock ends at 595 s (the 3rd newest of its sensors): tick 590 s. Sensor 15
    # last spoke at 197.5 s: (590 - 197.5) / 10 periods, less its usual staleness beyond one
    # period (it reports last in each round: under one period more)
    score_15 = next(x for s, t, x in flagged if s == 15 and t == 590_000)
    assert 38.25 < score_15 <= 39.25


# -- the usual staleness: gateways and slow clocks ---------------------------------------
def gateway_park(rounds: int, gateway: int, every: int, behind_s: float = 0.0,
                 stop_s: float = float("inf")) -> list[tuple[int, R]]:
    """Sensors 0..7 on partition 0, each reporting every 10 s; sensor ``gateway``'s readings
    are forwarded ``every`` at a time (they arrive with the last of them) and its clock runs
    ``behind_s`` late; it stops for good at ``stop_s``."""
    out: list[tuple[float, int, R]] = []
    for k in range(rounds):
        for s in range(8):
            t = 10.0 * k + s
            if s != gateway:
                out.append((t, s, R(s, t, {"value": 1.0})))
            elif t < stop_s:
                forwarded = 10.0 * (k // every * every + every - 1) + s  # with the last of its group
                out.append((forwarded, s, R(s, t - behind_s, {"value": 1.0})))
    out.sort(key=lambda x: (x[0], x[1]))
    return [(0, r) for _, _, r in out]


CTX8 = DetectorContext(quantities=("value",), expected_period_s=10.0, sensor_ids=tuple(f"s{i}" for i in range(8)),
                       sensor_partitions=(0,) * 8)


def silent_of(records: list[tuple[int, R]], **params: object) -> list[tuple[int, int, float]]:
    return sorted(feed(NoSignal(CTX8, **params), with_partitions(records)).silent)  # type: ignore[arg-type]


def test_a_gateway_forwarding_six_readings_a_minute_is_learned_not_reported() -> None:
    records = gateway_park(rounds=360, gateway=3, every=6)
    without = silent_of(records, learn_staleness=False)
    assert {s for s, _, _ in without} == {3}
    assert len(without) > 100  # the old rule: a report every minute, all hour
    learned = silent_of(records)
    assert all(t < 300_000 for _, t, _ in learned)  # only while the allowance is learned


def test_a_sensor_with_a_slow_clock_is_learned_not_reported() -> None:
    records = gateway_park(rounds=360, gateway=5, every=1, behind_s=35.0)
    assert len(silent_of(records, learn_staleness=False)) > 300
    assert all(t < 300_000 for _, t, _ in silent_of(records))


def test_a_learned_gateway_sensor_that_stops_is_still_reported() -> None:
    records = gateway_park(rounds=360, gateway=3, every=6, stop_s=2400.0)
    late = [(s, t, x) for s, t, x in silent_of(records) if t >= 2400_000]
    assert {s for s, _, _ in late} == {3}
    # it normally trails by up to a minute: reported two periods past that, within 2.5 min
    assert min(t for _, t, _ in late) <= 2400_000 + 150_000
