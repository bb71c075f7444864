"""streams/replay/diff.py and window.py: incidents, the live-vs-replay diff, batching and clocks."""

from __future__ import annotations

import json

import pytest

from sinks.base import Alert, Status
from streams.decode import RawMessage
from streams.replay.diff import diff, incidents, within
from streams.replay.window import Batching, KindWindow, batches, merged
from streams.replay_cli import parse_speed
from streams.timeparse import parse_duration, parse_time
from streams.errors import CityOpsError

T0 = 1_800_000_000_000


def _alert(key: str, status: Status, at_s: float, severity: str = "major") -> Alert:
    sensor, rule = key.split(":")
    ms = T0 + int(at_s * 1000)
    return Alert(alert_id=f"{key}|{status}|{ms}|{severity}", alarm_key=key, status=status, severity=severity,
                 level="orange", rule=rule, kind="hazmat", sensor_id=sensor, site_id="S1", district="D",
                 lat=None, lon=None, quantity="gas_lel", value=30.0, threshold=25.0, score=30.0,
                 event_ts="", event_time_ms=ms, detected_at="", departments=["emergency"], summary="")


def test_incidents_are_firing_to_resolved_per_alarm_with_their_peak() -> None:
    events = [
        _alert("G1:gas", "firing", 10), _alert("G1:gas", "updated", 12, "critical"), _alert("G1:gas", "resolved", 20),
        _alert("G1:gas", "firing", 30),  # still firing at the end of the window
        _alert("G2:gas", "resolved", 5),  # the end of an alarm raised before the window: no incident
    ]
    found = incidents(reversed(events))  # order of arrival does not matter, event time does
    assert [(i.alarm_key, i.start_ms - T0, None if i.end_ms is None else i.end_ms - T0, i.peak_severity)
            for i in found] == [("G1:gas", 10_000, 20_000, "critical"), ("G1:gas", 30_000, None, "major")]


def test_same_events_are_identical_and_match_every_incident() -> None:
    events = [_alert("G1:gas", "firing", 10), _alert("G1:gas", "resolved", 20)]
    result = diff(events, list(events))
    assert result.identical and len(result.matched) == 1
    assert not (result.gained or result.lost or result.shifted)


def test_an_earlier_start_is_a_shift_with_its_lead_time_and_new_alarms_are_gained() -> None:
    live = [_alert("G1:gas", "firing", 10), _alert("G1:gas", "resolved", 20), _alert("G3:gas", "firing", 40)]
    replay = [_alert("G1:gas", "firing", 7.5), _alert("G1:gas", "resolved", 21), _alert("G2:gas", "firing", 8)]
    result = diff(live, replay)
    assert not result.identical
    assert [(s.live.alarm_key, s.lead_ms) for s in result.shifted] == [("G1:gas", 2500)]
    assert [i.alarm_key for i in result.gained] == ["G2:gas"]
    assert [i.alarm_key for i in result.lost] == ["G3:gas"]
    assert json.dumps(result.to_dict())  # the --json output is plain JSON


def test_within_keeps_the_window_by_event_time_and_the_chosen_sensors() -> None:
    events = [_alert("G1:gas", "firing", 0), _alert("G2:gas", "firing", 5), _alert("G1:gas", "resolved", 10)]
    assert within(events, T0, T0 + 10_000) == events[:2]
    assert within(events, T0, T0 + 20_000, frozenset({"G1"})) == [events[0], events[2]]


def _window(kafka_ms: list[int], event_ms: list[int], clock: str = "kafka", kind: str = "air") -> KindWindow:
    messages = [RawMessage(b"{}", None, "t", 0, i, ts) for i, ts in enumerate(kafka_ms)]
    return KindWindow(kind, "kafka", clock, messages, event_ms)  # type: ignore[arg-type]


def test_live_batching_closes_a_batch_at_the_window_or_at_max_messages() -> None:
    window = _window([0, 100, 300, 301, 302, 303, 1000], [0] * 7)
    cuts = [[m.offset for m in batch] for _, batch in batches(window, Batching(None, max_messages=3, window_ms=250))]
    assert cuts == [[0, 1], [2, 3, 4], [5], [6]]
    fixed = [[m.offset for m in batch] for _, batch in batches(window, Batching(4))]
    assert fixed == [[0, 1, 2, 3], [4, 5, 6]]


def test_clocks_only_move_forward_and_follow_the_chosen_time() -> None:
    kafka = _window([100, 50, 400, 380], [10, 20, 30, 40])
    assert [c for c, _ in batches(kafka, Batching(1))] == [100, 100, 400, 400]
    assert [c for c, _ in batches(_window([-1, -1], [10, 20]), Batching(1))] == [10, 20]  # no Kafka time: reading time
    event = _window([900, 900, 900], [10, 5, 30], clock="event")
    assert [c for c, _ in batches(event, Batching(1))] == [10, 10, 30]


def test_kinds_are_merged_in_clock_order_each_with_its_own_batching() -> None:
    air, gas = _window([0, 500, 1000], [0] * 3, kind="air"), _window([200, 700], [0] * 2, kind="hazmat")
    order = [(clock, kind) for clock, kind, _ in merged([air, gas], {"air": Batching(1), "hazmat": Batching(1)})]
    assert order == [(0, "air"), (200, "hazmat"), (500, "air"), (700, "hazmat"), (1000, "air")]


def test_times_without_an_offset_are_in_the_city_time_zone() -> None:
    assert parse_time("2026-12-07T08:00", "--from", "+08:00") == parse_time("2026-12-07T00:00:00Z", "--from", "+08:00")
    with pytest.raises(CityOpsError, match="--to 'noon'"):
        parse_time("noon", "--to", "+08:00")


def test_speed_is_max_or_a_positive_multiple() -> None:
    assert parse_speed("max") is None and parse_speed("60") == 60.0
    for bad in ("0", "-2", "fast"):
        with pytest.raises(CityOpsError, match="--speed"):
            parse_speed(bad)


def test_durations_take_a_unit_and_bad_ones_name_the_option() -> None:
    assert [parse_duration(t, "--warmup", allow_zero=True) for t in ("0", "90s", "15m", "1h", "2d", "1h30m")] == [
        0, 90_000, 900_000, 3_600_000, 172_800_000, 5_400_000]
    for bad in ("an hour", "90"):
        with pytest.raises(CityOpsError, match=f"--warmup '{bad}'"):
            parse_duration(bad, "--warmup", allow_zero=True)
