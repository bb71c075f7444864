"""no_signal's clock: the ``clock_rank``-th newest of the sensors' newest event times, so
a minority of sensors whose clocks run fast cannot make the others look silent.

Expectations are worked out by hand from the module docstring of detectors.no_signal.
"""

from __future__ import annotations

import numpy as np
import pytest

import detectors.no_signal as no_signal
from detectors.base import DetectorContext
from detectors.no_signal import NoSignal
from detectors.registry import build_detector
from tests.unit.detector_streams import R, feed, stream

HAZ = DetectorContext(quantities=("value",), expected_period_s=10.0)  # hazmat: every 10 s


def park(rounds: int = 61, fast: dict[int, float] | None = None, stop: dict[int, float] | None = None,
         resume: dict[int, float] | None = None, jitter: np.random.Generator | None = None) -> list[R]:
    """Eight sensors; sensor s reports at 10 k + s s (round k), arriving in that order.
    ``fast``: seconds a sensor's clock runs ahead; ``stop``/``resume``: when it falls
    silent / speaks again (true time)."""
    fast, stop, resume = fast or {}, stop or {}, resume or {}
    out = []
    for k in range(rounds):
        for s in range(8):
            true = 10 * k + s + (float(jitter.integers(0, 4)) if jitter is not None else 0.0)
            if s in stop and stop[s] < true < resume.get(s, float("inf")):
                continue
            out.append(R(s, true + fast.get(s, 0.0), {"value": 1.0}))
    return out


def test_one_fast_clock_does_not_make_the_others_silent() -> None:
    readings = park(fast={7: 60.0}, stop={3: 205.0})
    fed = feed(NoSignal(HAZ, learn_staleness=False, warmup_readings=0), stream(HAZ, readings))  # the clock alone
    # the clock passes tick 10 k when the third sensor reaches it: sensor 7 (fast), 0, then 1
    # at 10 k + 1 s. Sensor 3 last spoke at 203 s: (T - 203) / 10 >= 2 from T = 230 on
    expected = [(3, t * 1000, (t - 203) / 10) for t in range(230, 601, 10)]
    assert [(s, t) for s, t, _ in fed.silent] == [(s, t) for s, t, _ in expected]
    assert [x for _, _, x in fed.silent] == pytest.approx([x for _, _, x in expected])
    assert set(fed.row_score.values()) == {0.0}


def test_the_newest_event_time_as_clock_fails_on_that_stream() -> None:
    """clock_rank 1 is the old watermark (the newest event time of the kind): the fast
    sensor drags it 60 s ahead and every other sensor looks ~6 periods silent."""
    readings = park(fast={7: 60.0}, stop={3: 205.0})
    fed = feed(NoSignal(HAZ, clock_rank=1, learn_staleness=False, warmup_readings=0), stream(HAZ, readings))
    assert {s for s, _, _ in fed.silent} == {0, 1, 2, 3, 4, 5, 6}
    assert max(x for s, _, x in fed.silent if s != 3) > 5


def test_two_fast_clocks_are_tolerated_a_third_is_not() -> None:
    two = feed(NoSignal(HAZ, learn_staleness=False, warmup_readings=0), stream(HAZ, park(fast={6: 60.0, 7: 290.0})))
    assert two.silent == []
    three = feed(NoSignal(HAZ, learn_staleness=False, warmup_readings=0), stream(HAZ, park(fast={5: 45.0, 6: 60.0, 7: 290.0})))
    assert {s for s, _, _ in three.silent} == {0, 1, 2, 3, 4}  # rank 3: three fast clocks move it


def test_a_fast_sensor_that_falls_silent_is_reported_late_by_its_lead() -> None:
    fed = feed(NoSignal(HAZ), stream(HAZ, park(fast={7: 60.0}, stop={7: 300.0})))
    # sensor 7 last sent 297 + 60 = 357 s: two periods of silence at the tick 380
    assert [(s, t) for s, t, _ in fed.silent][:2] == [(7, 380_000), (7, 390_000)]


def test_the_clock_needs_rank_sensors_without_a_catalog() -> None:
    two_sensors = [r for r in park(stop={1: 100.0}) if r.sensor < 2]
    assert feed(NoSignal(HAZ), stream(HAZ, two_sensors)).silent == []  # rank 3, two sensors heard
    assert {s for s, _, _ in feed(NoSignal(HAZ, clock_rank=1), stream(HAZ, two_sensors)).silent} == {1}


def test_a_small_catalog_caps_the_rank() -> None:
    ctx = DetectorContext(quantities=("value",), expected_period_s=10.0, sensor_ids=("a", "b", "c"))
    assert [NoSignal(ctx, clock_rank=k).rank for k in (1, 2, 3, 9)] == [1, 2, 2, 2]
    assert NoSignal(HAZ, clock_rank=9).rank == 9
    three = [r for r in park(stop={2: 100.0}) if r.sensor < 3]
    assert {s for s, _, _ in feed(NoSignal(ctx), stream(ctx, three)).silent} == {2}


def messy_stream(seed: int) -> tuple[DetectorContext, list[R]]:
    """Fast clocks, a silence that ends, one that does not, a catalog sensor that never
    reports, late and repeated readings, jitter."""
    ctx = DetectorContext(quantities=("value",), expected_period_s=10.0, sensor_ids=tuple("abcdefghi"))
    rng = np.random.default_rng(seed)
    readings = park(rounds=80, fast={7: 60.0, 5: 290.0}, stop={3: 205.0, 2: 400.0}, resume={3: 420.0}, jitter=rng)
    late = [R(4, 150.0, {"value": 1.0}), R(0, 300.0, {"value": 1.0})]
    readings[300:300] = late
    readings.insert(500, readings[499])
    return ctx, readings


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_clocks_do_not_make_batch_boundaries_matter(seed: int) -> None:
    ctx, readings = messy_stream(seed)
    whole = stream(ctx, readings)
    reference = feed(NoSignal(ctx), whole)
    assert {s for s, _, _ in reference.silent} == {2, 3, 8}
    rng = np.random.default_rng(seed)
    n = len(readings)
    for cuts in ([n // 2], sorted(rng.choice(n, 25, replace=False).tolist()), list(range(1, n))):
        got = feed(NoSignal(ctx), whole, cuts)
        assert sorted(got.silent) == sorted(reference.silent)  # emitted per batch, grouped by sensor
        assert got.row_score == reference.row_score


def test_chunked_level_searches_give_the_same_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, readings = messy_stream(4)
    whole = stream(ctx, readings)
    reference = feed(NoSignal(ctx), whole)
    monkeypatch.setattr(no_signal, "_PAIRS_PER_CHUNK", 3)
    assert feed(NoSignal(ctx), whole).silent == reference.silent


def test_the_clock_is_rederived_from_restored_sensors() -> None:
    ctx, readings = messy_stream(5)
    cut = 250
    first, rest = stream(ctx, readings[:cut]), stream(ctx, readings[cut:])
    reference = NoSignal(ctx)
    feed(reference, first)
    subset = np.array([0, 1, 2, 7], np.int64)
    full_snapshot, subset_snapshot = reference.snapshot(), reference.snapshot(subset)
    expected = feed(reference, rest).silent
    restored = NoSignal(ctx)
    restored.restore(full_snapshot)
    assert feed(restored, rest).silent == expected
    # a subset: the clock is that of the restored sensors (0, 1, 2 and fast 7: the third
    # newest is sensor 1's newest), never later than the full one
    partial = NoSignal(ctx)
    partial.restore(subset_snapshot, subset)
    newest_of_1 = max(round(r.t_s * 1000) for r in readings[:cut] if r.sensor == 1)
    assert no_signal._newest(no_signal.ints(partial.state["last_ms"]), partial.rank) == newest_of_1


@pytest.mark.parametrize(("params", "name"), [({"clock_rank": 0}, "clock_rank"), ({"clock_rank": 2.5}, "clock_rank"),
                                              ({"clock_rank": True}, "clock_rank")])
def test_no_signal_rejects_a_bad_clock_rank(params: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_detector("no_signal", HAZ, params)


def one_by_one(ctx: DetectorContext, readings: list[R], rank: int, after: float = 2.0,
               unheard_after: float = 10.0) -> list[tuple[int, int, float]]:
    """The module docstring, one reading at a time in plain Python (learn_period and
    learn_staleness on)."""
    tick = round(ctx.expected_period_s * 1000)
    last: dict[int, int] = {}
    first: dict[int, int] = {}
    count: dict[int, int] = {}
    stale: dict[int, float] = {}  # the usual staleness: a running 0.98-quantile
    start: int | None = None
    out = []

    def clock() -> int | None:
        newest = sorted(last.values(), reverse=True)
        return newest[rank - 1] if len(newest) >= rank else None

    for r in readings:
        t = round(r.t_s * 1000)
        before = clock()
        fresh = r.sensor not in last or t > last[r.sensor]
        seen_start = start
        if fresh:
            if before is not None and r.sensor in last:
                x = max(before // tick * tick + tick // 2 - last[r.sensor], 0)  # the clock at tick resolution
                q = stale.get(r.sensor, float(tick))
                if count[r.sensor] + 1 <= 10:  # warm-up: the largest staleness so far
                    stale[r.sensor] = max(q, x)
                else:
                    stale[r.sensor] = max(q + 0.5 * tick * (0.98 - (x < q)), 0.0)
            last[r.sensor] = t
            first.setdefault(r.sensor, t)
            count[r.sensor] = count.get(r.sensor, 0) + 1
            start = t if start is None else min(start, t)
        now = clock()
        if before is None or now is None or now // tick == before // tick:
            continue
        big_t = now // tick * tick
        for s in sorted(set(last) | set(range(len(ctx.sensor_ids)))):
            if s == r.sensor:
                continue
            if s in last:
                period = float(tick)
                if count[s] >= 3:
                    period = max(period, (last[s] - first[s]) / (count[s] - 1))
                extra = max(stale.get(s, float(tick)) - period, 0.0)
                periods = (big_t - last[s] - extra) / period
                threshold = after if count[s] >= 10 else unheard_after  # judged once it has shown its pattern
            else:
                assert seen_start is not None
                periods = (big_t - seen_start) / tick
                threshold = unheard_after
            if periods >= threshold:
                out.append((s, big_t, periods))
    return sorted(out)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rank", [1, 2, 3, 5])
def test_matches_one_reading_at_a_time_in_plain_python(seed: int, rank: int) -> None:
    rng = np.random.default_rng(100 + seed)
    ctx = DetectorContext(quantities=("value",), expected_period_s=10.0, sensor_ids=tuple("abcdefghij"))
    fast = {int(s): float(rng.choice([30.0, 60.0, 290.0])) for s in rng.choice(8, 2, replace=False)}
    readings = park(rounds=60, fast=fast, stop={int(rng.integers(8)): 150.0}, resume={}, jitter=rng)
    readings = [r for r in readings if rng.random() > 0.1]  # drop some readings
    order = np.argsort(np.arange(len(readings)) + rng.integers(0, 12, len(readings)), kind="stable")
    readings = [readings[i] for i in order]  # arrival order != event order
    fed = feed(NoSignal(ctx, clock_rank=rank), stream(ctx, readings), sorted(rng.choice(len(readings), 5).tolist()))
    expected = one_by_one(ctx, readings, NoSignal(ctx, clock_rank=rank).rank)
    assert [(s, t) for s, t, _ in sorted(fed.silent)] == [(s, t) for s, t, _ in expected]
    assert [x for _, _, x in sorted(fed.silent)] == pytest.approx([x for _, _, x in expected])
