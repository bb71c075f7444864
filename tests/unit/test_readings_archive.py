"""The readings archive without Kafka: messages -> Parquet files -> DuckDB answers
(streams/archive). The Kafka consumer around it is tested in tests/integration/test_archive.py; the JSONL alarm archive in tests/unit/test_archive.py."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from streams.archive.consumer import Archiver
from streams.archive.query import ArchiveQueryError, run_query
from streams.archive.store import ArchiveStore
from streams.decode import RawMessage
from streams.deadletter import DeadLetter, Reason
from streams.topology import Topology, load_topology
from tests.unit.test_topology import REPO

T0_MS = int(datetime(2027, 1, 15, 7, 30, tzinfo=UTC).timestamp() * 1000)
YEAR_MS = 365 * 86_400_000


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(REPO / "topology.yaml")


@pytest.fixture
def store(tmp_path: Path) -> ArchiveStore:
    return ArchiveStore(tmp_path / "archive", retention_days=30)


def _msg(body: object, topic: str, offset: int, partition: int = 0, arrival_ms: int = T0_MS) -> RawMessage:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RawMessage(raw, None, topic, partition, offset, arrival_ms)


def _air(sensor: str, ts: object, **values: float) -> dict[str, object]:
    return {"sensor_id": sensor, "ts": ts, "values": values}


def test_readings_land_in_kind_date_hour_of_event_time_with_their_values(topology: Topology,
                                                                       store: ArchiveStore) -> None:
    archiver = Archiver(topology, store)
    # two hours of one sensor, one reading per 10 minutes: 07:30 .. 09:20 UTC
    expected = [(T0_MS + i * 600_000, 10.0 + i) for i in range(12)]
    for offset, (ts, pm25) in enumerate(expected):
        archiver.add(_msg(_air("DG-AQ-0001", ts, pm25=pm25), "city.air.readings", offset))
    stats = archiver.flush()
    assert (stats.readings, stats.files) == (12, 3)  # hours 07, 08, 09
    dirs = sorted(str(p.parent.relative_to(store.root)) for p in store.root.glob("**/*.parquet"))
    assert dirs == [f"readings/kind=air/date=2027-01-15/hour={h:02d}" for h in (7, 8, 9)]
    columns, rows = run_query(store.root, "SELECT hour, epoch_ms(event_time), pm25, pm10, kafka_offset "
                                          "FROM readings ORDER BY event_time")
    assert columns[2:] == ["pm25", "pm10", "kafka_offset"]
    assert [(r[1], r[2]) for r in rows] == expected
    assert [r[0] for r in rows] == [7, 7, 7, 8, 8, 8, 8, 8, 8, 9, 9, 9]
    assert all(r[3] is None for r in rows)  # a quantity the reading did not carry is null, not NaN or 0
    assert [r[4] for r in rows] == list(range(12))


def test_gateway_arrays_keep_their_positions_and_rfc3339_times_are_event_time(topology: Topology,
                                                                             store: ArchiveStore) -> None:
    archiver = Archiver(topology, store)
    array = [_air("DG-AQ-0001", "2027-01-15T15:30:00+08:00", pm25=5.0),
             {"sensor_id": "DG-AQ-0002", "ts": "bad"},  # dead-lettered by the worker: not a reading here
             _air("DG-AQ-0003", "2027-01-15T15:30:00+08:00", o3=80.0)]
    archiver.add(_msg(array, "city.air.readings", 41, partition=3))
    archiver.add(_msg(b"not json", "city.air.readings", 42, partition=3))
    assert archiver.flush().readings == 2
    _, rows = run_query(store.root, "SELECT sensor_id, epoch_ms(event_time), kafka_partition, kafka_offset, reading_index, "
                                    "pm25, o3 FROM readings ORDER BY sensor_id")
    assert rows == [("DG-AQ-0001", T0_MS, 3, 41, 0, 5.0, None), ("DG-AQ-0003", T0_MS, 3, 41, 2, None, 80.0)]


def test_readings_of_any_age_are_kept_and_each_kind_has_its_own_columns(topology: Topology,
                                                                       store: ArchiveStore) -> None:
    archiver = Archiver(topology, store)
    archiver.add(_msg(_air("DG-AQ-0001", T0_MS - YEAR_MS, pm25=40.0), "city.air.readings", 0))
    gas = {"sensor_id": "DG-GS-0001", "ts": T0_MS, "values": {"gas_lel": 31.5}, "flag": "N"}
    archiver.add(_msg(gas, "city.hazmat.readings", 0))
    archiver.flush()
    _, rows = run_query(store.root, "SELECT kind, date, pm25, gas_lel FROM readings ORDER BY kind")
    assert rows == [("air", date(2026, 1, 15), 40.0, None), ("hazmat", date(2027, 1, 15), None, 31.5)]
    hazmat_file = next(store.root.glob("readings/kind=hazmat/**/*.parquet"))
    names = pq.read_schema(hazmat_file).names
    assert "gas_lel" in names and "pm25" not in names


def test_dead_letters_are_archived_with_their_exact_original_bytes(topology: Topology, store: ArchiveStore) -> None:
    archiver = Archiver(topology, store)
    original = b'{"sensor_id": "DG-AQ-0001", "ts": 1, "values": {"pm1": 3}} \xff'
    bad = RawMessage(original, b"DG-AQ-0001", "city.air.readings", 2, 1834, T0_MS)
    record = DeadLetter.of(bad, Reason.UNKNOWN_QUANTITY, "unknown field `pm1`").to_json(T0_MS + 5)
    archiver.add(_msg(record, "city.deadletter", 0))
    archiver.add(_msg(b"someone else's message", "city.deadletter", 1))
    stats = archiver.flush()
    assert (stats.deadletters, stats.foreign) == (1, 1)
    _, rows = run_query(store.root, "SELECT epoch_ms(received_at), reason, topic, kafka_partition, kafka_offset, kafka_key, original "
                                    "FROM deadletters")
    assert rows == [(T0_MS + 5, "unknown_quantity", "city.air.readings", 2, 1834, "DG-AQ-0001", original)]
    assert base64.b64encode(rows[0][6]) == base64.b64encode(original)


def test_retention_removes_files_written_longer_ago_than_the_limit_whatever_their_event_time(
        topology: Topology, tmp_path: Path) -> None:
    written = [datetime(2027, 1, 15, 12, tzinfo=UTC)]
    store = ArchiveStore(tmp_path / "archive", retention_days=30, clock=lambda: written[0])
    archiver = Archiver(topology, store)
    # written 31 days ago (a live reading of then), 29 days ago, and today: a year-old backlog uploaded today
    for offset, (age_days, event_ms) in enumerate(((31, T0_MS - 31 * 86_400_000), (29, T0_MS - 29 * 86_400_000),
                                                   (0, T0_MS - YEAR_MS))):
        written[0] = datetime(2027, 1, 15, 12, tzinfo=UTC) - timedelta(days=age_days)
        archiver.add(_msg(_air("DG-AQ-0001", event_ms, pm25=float(age_days)), "city.air.readings", offset))
        archiver.flush()
    removed = store.expire(datetime(2027, 1, 15, 12, tzinfo=UTC))
    assert len(removed) == 1
    _, rows = run_query(store.root, "SELECT pm25 FROM readings ORDER BY pm25")
    assert rows == [(0.0,), (29.0,)]
    assert not (store.root / "readings" / "kind=air" / "date=2026-12-15").exists()  # emptied directories go too


def test_a_crash_mid_write_leaves_no_file_a_reader_sees(store: ArchiveStore) -> None:
    directory = store.root / "readings" / "kind=air" / "date=2027-01-15" / "hour=07"
    directory.mkdir(parents=True)
    (directory / ".part-20270115T073000-abc.parquet.tmp").write_bytes(b"PAR1 torn")
    assert store.remove_partial() == 1
    assert list(directory.iterdir()) == []


def test_a_bad_query_names_the_problem_and_the_views(topology: Topology, store: ArchiveStore) -> None:
    with pytest.raises(ArchiveQueryError, match="nothing is archived under .* yet"):
        run_query(store.root, "SELECT * FROM readings")
    archiver = Archiver(topology, store)
    archiver.add(_msg(_air("DG-AQ-0001", T0_MS, pm25=1.0), "city.air.readings", 0))
    archiver.flush()
    with pytest.raises(ArchiveQueryError, match=r'(?s)"pm2".*views: readings'):
        run_query(store.root, "SELECT pm2 FROM readings")


def test_the_alarm_archive_is_a_view_next_to_the_readings(store: ArchiveStore, tmp_path: Path) -> None:
    alarms = tmp_path / "alarms"
    alarms.mkdir()
    lines = [{"alert_id": "a1", "rule": "gas_lel_alarm", "sensor_id": "DG-GS-0001", "status": "firing"},
             {"alert_id": "a2", "rule": "gas_lel_alarm", "sensor_id": "DG-GS-0001", "status": "resolved"}]
    (alarms / "alerts-2027-01-15.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    _, rows = run_query(store.root, "SELECT alert_id, status FROM alarms ORDER BY alert_id", alarms)
    assert rows == [("a1", "firing"), ("a2", "resolved")]


def test_a_catalog_sensor_on_another_kinds_topic_is_not_archived_as_that_kinds_reading(
        topology: Topology, store: ArchiveStore) -> None:
    archiver = Archiver(topology, store)
    archiver.add(_msg(_air("DG-AQ-0001", T0_MS, pm25=3.0), "city.air.readings", 0))
    archiver.add(_msg(_air("DG-GS-0001", T0_MS, pm25=3.0), "city.air.readings", 1))  # a hazmat sensor: kind_mismatch
    assert archiver.flush().readings == 1
    _, rows = run_query(store.root, "SELECT sensor_id FROM readings")
    assert rows == [("DG-AQ-0001",)]
