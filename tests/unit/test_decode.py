"""The input contract: valid readings become rows, every bad one a dead letter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streams.catalog import SensorIndex, SensorInfo
from streams.decode import KindDecoder, RawMessage
from streams.topology_spec import InputSpec, KindSpec, QuantitySpec

NOW_MS = 1_795_700_000_000
AIR = KindSpec(
    topic="city.air.readings",
    departments=["environment"],
    quantities={
        "pm25": QuantitySpec(unit="µg/m³", min=0, max=2000),
        "co": QuantitySpec(unit="mg/m³", min=0, max=200),
    },
)


def _decoder() -> KindDecoder:
    return KindDecoder("air", AIR, InputSpec(max_message_bytes=2048), {"DG-GS-0001": "hazmat"})


def _index() -> SensorIndex:
    return SensorIndex([SensorInfo("DG-AQ-0001", "air", "s1", "", "Humen", 22.8, 113.6)])


def _msg(value: bytes | str, offset: int = 0) -> RawMessage:
    body = value.encode() if isinstance(value, str) else value
    return RawMessage(value=body, key=b"k", topic="city.air.readings", partition=1, offset=offset)


def _reading(sensor: str = "DG-AQ-0001", ts: object = NOW_MS, **values: object) -> dict[str, object]:
    return {"sensor_id": sensor, "ts": ts, "values": values or {"pm25": 40.0}}


def test_valid_single_and_gateway_array_become_long_format_rows() -> None:
    msgs = [
        _msg(json.dumps(_reading(pm25=40.0, co=0.7))),
        _msg(json.dumps([_reading("DG-AQ-0001", "2026-11-26T08:00:00+08:00", pm25=55.0), _reading("NEW-1", pm25=1.0)])),
    ]
    out = _decoder().decode(msgs, _index(), NOW_MS)
    assert out.dead == []
    assert out.n_readings == 3
    assert out.n_unknown_sensors == 1
    assert len(out.batch) == 4  # pm25+co, pm25, pm25
    # 2026-11-26T08:00:00+08:00 is 00:00 UTC
    assert 1_795_651_200_000 in out.batch.event_time_ms.tolist()
    sensor0 = out.batch.value[(out.batch.sensor_idx == 0) & (out.batch.quantity_idx == 0)]
    assert sensor0.tolist() == [40.0, 55.0]  # arrival order kept per sensor


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "malformed_json"),
        ('{"sensor_id": "DG-AQ-0001", "ts": 1, "values": {"pm25": NaN}}', "non_finite"),
        ('{"sensor_id": "DG-AQ-0001", "ts": 1, "values": {"pm25": 1e999}}', "non_finite"),
        ('{"sensor_id": "DG-AQ-0001", "ts": 1, "values": {"pm25": "40"}}', "wrong_type"),
        ('{"sensor_id": "DG-AQ-0001", "ts": "2026-11-26T08:00:00", "values": {"pm25": 4}}', "wrong_type"),
        ('{"ts": 1, "values": {"pm25": 4}}', "missing_field"),
        ('{"sensor_id": "DG-AQ-0001", "ts": 1, "values": {"pm1": 4}}', "unknown_quantity"),
        ('{"sensor_id": "DG-AQ-0001", "ts": 1, "values": {"pm25": 4}, "flag": "X"}', "invalid_flag"),
        ("[]", "empty"),
        ("", "empty"),
        ("  \n", "empty"),
        ('{"sensor_id": "DG-AQ-0001", "ts": 1.5e12, "values": {"pm25": 4}}', "wrong_type"),
        ('{"sensor_id": "' + "x" * 200 + '", "ts": 1, "values": {"pm25": 4}}', "wrong_type"),
        ("[" * 900 + "]" * 900, "wrong_type"),  # deep nesting: an error, not a crash
    ],
)
def test_bad_message_is_dead_lettered_and_the_rest_of_the_batch_survives(body: str, reason: str) -> None:
    good = _msg(json.dumps(_reading(pm25=12.0)), offset=7)
    out = _decoder().decode([good, _msg(body, offset=8)], _index(), NOW_MS)
    assert [d.reason for d in out.dead] == [reason]
    assert out.dead[0].offset == 8 and out.dead[0].partition == 1
    assert out.dead[0].original == body.encode()
    assert out.batch.value.tolist() == [12.0]


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (_reading(ts=NOW_MS + 3_600_000), "ts_future"),
        (_reading(ts=NOW_MS - 40 * 86_400_000), "ts_past"),
        (_reading(pm25=-3.0), "out_of_range"),
        (_reading("DG-GS-0001"), "kind_mismatch"),
        ({"sensor_id": "DG-AQ-0001", "ts": NOW_MS, "values": {}}, "empty"),
    ],
)
def test_semantic_checks(reading: dict[str, object], reason: str) -> None:
    out = _decoder().decode([_msg(json.dumps(reading))], _index(), NOW_MS)
    assert [d.reason for d in out.dead] == [reason]
    assert len(out.batch) == 0


def test_oversize_message() -> None:
    big = json.dumps([_reading(pm25=float(i)) for i in range(100)])
    out = _decoder().decode([_msg(big)], _index(), NOW_MS)
    assert [d.reason for d in out.dead] == ["oversize"]


def test_one_bad_reading_in_a_gateway_array_keeps_the_others() -> None:
    body = json.dumps([_reading(pm25=1.0), {"sensor_id": "DG-AQ-0001", "ts": NOW_MS, "values": {"pm25": "x"}}, _reading(pm25=3.0, ts=NOW_MS + 10 * 3_600_000)])
    out = _decoder().decode([_msg(body)], _index(), NOW_MS)
    assert sorted((d.reason, d.reading_index) for d in out.dead) == [("ts_future", 2), ("wrong_type", 1)]
    assert out.batch.value.tolist() == [1.0]


def test_dead_letter_record_keeps_original_bytes() -> None:
    raw = b"\xff\xfe not utf8"
    out = _decoder().decode([_msg(raw, offset=42)], _index(), NOW_MS)
    record = json.loads(out.dead[0].to_json(NOW_MS))
    assert record["source"] == {"topic": "city.air.readings", "partition": 1, "offset": 42, "key": "k"}
    import base64

    assert base64.b64decode(record["original_b64"]) == raw
    assert record["original_text"] is None
    assert record["reason"] == "malformed_json"


def test_batch_rows_are_sorted_by_sensor_then_arrival() -> None:
    msgs = [_msg(json.dumps(_reading(s, pm25=float(i)))) for i, s in enumerate(["B", "A", "B", "A"])]
    out = _decoder().decode(msgs, _index(), NOW_MS)
    assert np.all(np.diff(out.batch.sensor_idx) >= 0)
    assert out.batch.value.tolist() == [0.0, 2.0, 1.0, 3.0]


def test_deeply_nested_json_is_dead_lettered_not_a_crash() -> None:
    decoder = KindDecoder("air", AIR, InputSpec(max_message_bytes=1_000_000), {})
    body = "[" * 100_000 + "]" * 100_000
    out = decoder.decode([_msg(body), _msg(json.dumps(_reading(pm25=5.0)))], _index(), NOW_MS)
    assert [(d.reason, d.detail) for d in out.dead] == [("malformed_json", "JSON nested too deeply")]
    assert out.batch.value.tolist() == [5.0]


@pytest.mark.parametrize("seed", range(8))
def test_random_corruption_never_raises_and_every_unparsable_message_is_dead_lettered(seed: int) -> None:
    rng = np.random.default_rng(seed)
    valid = json.dumps([_reading(pm25=1.0), _reading(co=0.5)]).encode()
    messages = []
    for offset in range(2000):
        body = bytearray(valid)
        for _ in range(int(rng.integers(1, 4))):  # flip, delete or duplicate a few bytes
            i = int(rng.integers(0, len(body)))
            op = rng.integers(0, 3)
            if op == 0:
                body[i] = int(rng.integers(0, 256))
            elif op == 1:
                del body[i]
            else:
                body.insert(i, body[i])
        messages.append(_msg(bytes(body), offset=offset))
    decoder = KindDecoder("air", AIR, InputSpec(max_message_bytes=4096), {})
    out = decoder.decode(messages, _index(), NOW_MS)
    dead_offsets = {d.offset for d in out.dead}
    for msg in messages:
        try:
            json.loads(msg.value)
        except ValueError:
            assert msg.offset in dead_offsets, msg.value
    assert out.n_readings + len(out.dead) >= len(messages) - sum(1 for d in out.dead if d.reading_index is not None)


def test_unknown_sensors_are_capped_to_bound_state_memory() -> None:
    decoder = KindDecoder("air", AIR, InputSpec(max_unknown_sensors=2), {})
    index = _index()
    first = decoder.decode([_msg(json.dumps(_reading(s))) for s in ("U1", "U2", "DG-AQ-0001")], index, NOW_MS)
    assert first.dead == [] and first.n_unknown_sensors == 2
    later = decoder.decode([_msg(json.dumps(_reading(s)), offset=9) for s in ("U3", "U1", "DG-AQ-0001")], index, NOW_MS)
    assert [(d.reason, d.offset) for d in later.dead] == [("unknown_sensor_limit", 9)]
    assert "add it to the catalog" in later.dead[0].detail
    assert later.n_readings == 2 and len(index) == 3


def _rows(decoder: KindDecoder, msgs: list[RawMessage]) -> list[tuple[float, int, int]]:
    """(value, event ms, partition) per row, in the batch's order."""
    b = decoder.decode(msgs, _index(), NOW_MS).batch
    return list(zip(b.value.tolist(), b.event_time_ms.tolist(), b.partition.tolist(), strict=True))


@pytest.mark.parametrize("first", ["single", "arrays", "mixed"])
def test_every_shape_decodes_the_same_whatever_shape_came_before(first: str) -> None:
    """The decoder tries the last batch's shape first; a batch of another shape
    (one reading per record, gateway arrays, both) must still give the same rows."""
    singles = [_msg(json.dumps(_reading(ts=NOW_MS - 3000 + i, pm25=float(i))), offset=i) for i in range(3)]
    arrays = [_msg(json.dumps([_reading(ts=NOW_MS - 2000 + 10 * i + j, pm25=float(10 * i + j)) for j in range(3)]),
                   offset=10 + i) for i in range(2)]
    mixed = [singles[0], arrays[0], singles[1]]
    batches = {"single": singles, "arrays": arrays, "mixed": mixed}
    fresh = {name: _rows(_decoder(), msgs) for name, msgs in batches.items()}
    assert len(fresh["single"]) == 3 and len(fresh["arrays"]) == 6 and len(fresh["mixed"]) == 5
    decoder = _decoder()
    _rows(decoder, batches[first])
    for name, msgs in batches.items():
        assert _rows(decoder, msgs) == fresh[name], (first, name)


def test_gateway_array_dead_letters_name_their_position_in_the_array() -> None:
    msgs = [_msg(json.dumps([_reading(pm25=1.0), _reading(pm25=-5.0), _reading(pm25=3.0)]), offset=4),
            _msg(json.dumps([]), offset=5)]
    out = _decoder().decode(msgs, _index(), NOW_MS)
    assert out.n_readings == 2
    assert sorted((d.offset, d.reason, d.reading_index) for d in out.dead) == [(4, "out_of_range", 1), (5, "empty", None)]


def test_two_readings_glued_with_a_comma_are_one_bad_message_not_two_readings() -> None:
    """The batch decode joins bodies with commas: a body that is itself two JSON values
    separated by a comma must not pass as two records."""
    glued = json.dumps(_reading(pm25=1.0)) + "," + json.dumps(_reading(pm25=2.0))
    out = _decoder().decode([_msg(glued)], _index(), NOW_MS)
    assert out.n_readings == 0
    assert [d.reason for d in out.dead] == ["malformed_json"]


def test_flag_codes_match_the_hj212_table() -> None:
    from detectors.base import FLAG_CODE
    from streams.decode import flag_codes

    letters = list("NFMSDCTB") * 2
    assert flag_codes(letters).tolist() == [FLAG_CODE[f] for f in letters]
    assert flag_codes([]).tolist() == []


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [
        ("2026-11-26T08:00:00+08:00", 1_795_651_200_000),
        ("2026-11-26T00:00:00.9999Z", 1_795_651_200_999),  # sub-millisecond digits are cut, not rounded
        ("2026-11-26 00:00:00.5+00:00", 1_795_651_200_500),
        ("2026-11-26T08:00:00.25+0800", 1_795_651_200_250),  # only the strict path takes +0800
        ("2026-11-26t00:00:00z", 1_795_651_200_000),
        (1_795_651_200_123, 1_795_651_200_123),
    ],
)
def test_event_times_are_exact_on_the_bulk_and_the_strict_path(ts: object, expected_ms: int) -> None:
    """The same time string gives the same milliseconds whether it is converted in bulk or
    one reading at a time (a batch with a bad message goes one at a time): else a reading's
    event time would depend on its batch neighbours."""
    now = 1_795_651_260_000
    good = _msg(json.dumps(_reading(ts=ts, pm25=5.0)))
    for batch in ([good], [good, _msg("{not json", offset=1)]):
        out = _decoder().decode(batch, _index(), now)
        assert out.batch.event_time_ms.tolist() == [expected_ms], batch


@pytest.mark.parametrize("ts", ["2026-11-26T08:00:00", "2026-13-26T08:00:00Z", "yesterday", "2026-11-26T08:00+08:00"])
def test_a_time_without_offset_or_invalid_is_dead_lettered_and_names_ts(ts: str) -> None:
    msgs = [_msg(json.dumps(_reading(pm25=5.0)), offset=0), _msg(json.dumps(_reading(ts=ts, pm25=6.0)), offset=1)]
    out = _decoder().decode(msgs, _index(), NOW_MS)
    assert out.n_readings == 1
    assert [(d.offset, d.reason) for d in out.dead] == [(1, "wrong_type")]
    assert "ts" in out.dead[0].detail


def test_an_epoch_ms_beyond_int64_is_dead_lettered_not_a_crash() -> None:
    msgs = [_msg(json.dumps(_reading(pm25=5.0))), _msg(json.dumps(_reading(ts=2**63 + 5, pm25=6.0)), offset=1)]
    out = _decoder().decode(msgs, _index(), NOW_MS)
    assert out.n_readings == 1
    assert [(d.offset, d.reason) for d in out.dead] == [(1, "wrong_type")]
