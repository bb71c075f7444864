"""The worker's warning when most of a batch is dead-lettered for its event time
(streams/age_warning.py), fed by the real decoder: recorded data a year old
produced to a live topic, and a gateway clock an hour ahead."""

from __future__ import annotations

import json
import logging

import pytest

from streams.age_warning import INTERVAL_S, AgeRejectionWarner
from streams.decode import RawMessage
from streams.pipeline import KindPipeline
from streams.topology import load_topology
from tests.unit.test_topology import REPO

NOW_MS = 1_800_000_000_000
YEAR_MS = 365 * 86_400_000
TOPIC = "city.air.readings"


def _batch(offsets: range, ts_ms: int, sensor: str = "DG-AQ-0001") -> list[RawMessage]:
    return [RawMessage(json.dumps({"sensor_id": sensor, "ts": ts_ms + i * 1000, "values": {"pm25": 30.0}}).encode(),
                       sensor.encode(), TOPIC, 0, i, NOW_MS) for i in offsets]


class _Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def pipeline() -> KindPipeline:
    return KindPipeline(load_topology(REPO / "topology.yaml"), "air")


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def warner(clock: _Clock) -> AgeRejectionWarner:
    return AgeRejectionWarner(load_topology(REPO / "topology.yaml").spec.input, clock=clock)


def _observe(warner: AgeRejectionWarner, pipeline: KindPipeline, messages: list[RawMessage]) -> list[str]:
    result = pipeline.process(messages, NOW_MS)
    return warner.observe("air", result.n_readings, result.dead)


def test_a_batch_of_year_old_readings_warns_once_naming_topic_reason_and_fix(
        warner: AgeRejectionWarner, pipeline: KindPipeline, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streams.age_warning"):
        lines = _observe(warner, pipeline, _batch(range(50), NOW_MS - YEAR_MS))
    assert len(lines) == 1 and [r.getMessage() for r in caplog.records] == lines
    line = lines[0]
    assert line.startswith(f"{TOPIC}: 50 of 50 air readings in a batch were dead-lettered as ts_past")
    assert "input.max_age_s = 2,592,000 s (30 days)" in line and "Recorded data" in line


def test_a_clock_ahead_warns_as_ts_future_with_its_fix(warner: AgeRejectionWarner, pipeline: KindPipeline) -> None:
    lines = _observe(warner, pipeline, _batch(range(10), NOW_MS + 3_600_000))
    assert len(lines) == 1 and "dead-lettered as ts_future" in lines[0]
    assert "input.max_future_skew_s = 300 s" in lines[0] and "NTP" in lines[0]


def test_a_few_old_readings_among_live_ones_do_not_warn(warner: AgeRejectionWarner, pipeline: KindPipeline) -> None:
    live = _batch(range(0, 60), NOW_MS - 60_000, sensor="DG-AQ-0002")
    old = _batch(range(60, 100), NOW_MS - YEAR_MS)  # 40 of 100: a minority
    result = pipeline.process(live + old, NOW_MS)
    assert sum(d.reason == "ts_past" for d in result.dead) == 40
    assert warner.observe("air", result.n_readings, result.dead) == []


def test_further_batches_are_counted_and_summed_into_the_next_warning(
        warner: AgeRejectionWarner, pipeline: KindPipeline, clock: _Clock) -> None:
    assert len(_observe(warner, pipeline, _batch(range(0, 10), NOW_MS - YEAR_MS))) == 1
    for start in (10, 20, 30):
        clock.now_s += 1
        assert _observe(warner, pipeline, _batch(range(start, start + 10), NOW_MS - YEAR_MS)) == []
    clock.now_s = INTERVAL_S + 0.5
    again = _observe(warner, pipeline, _batch(range(40, 50), NOW_MS - YEAR_MS))
    assert len(again) == 1 and "(and 30 more in 3 batches in the last 60 s)" in again[0]


def test_valid_batches_say_nothing(warner: AgeRejectionWarner, pipeline: KindPipeline) -> None:
    assert _observe(warner, pipeline, _batch(range(20), NOW_MS - 60_000)) == []
