"""Arrow tables for the archive: one row per reading (wide: a column per quantity of
the kind, null where the reading did not carry it), one row per dead letter."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from streams.decode import KindDecoder, ParsedReadings, RawMessage
from streams.topology import Topology
from streams.topology_spec import InputSpec

UTC_MS = pa.timestamp("ms", tz="UTC")
#: the archive keeps readings whatever their age: the live worker's age limits are its own business
NO_AGE_LIMIT_S = 1e12


def reading_schema(quantities: Sequence[str]) -> pa.Schema:
    return pa.schema([
        ("sensor_id", pa.string()),
        ("event_time", UTC_MS),
        ("flag", pa.string()),
        *[(q, pa.float64()) for q in quantities],
        ("topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("reading_index", pa.int32()),  # position in a gateway array; null for a single reading
        ("kafka_time", UTC_MS),  # the record's Kafka timestamp (arrival); null if unknown
    ])


DEADLETTER_SCHEMA = pa.schema([
    ("received_at", UTC_MS),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("topic", pa.string()),
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
    ("kafka_key", pa.string()),
    ("reading_index", pa.int32()),
    ("original", pa.binary()),
])


def archive_decoders(topology: Topology) -> dict[str, KindDecoder]:
    """Per kind, the worker's decoder without age limits. A catalog sensor of another kind
    is rejected as by the worker (it reaches the archive as a dead letter); a sensor not
    in the catalog is still a reading."""
    spec = topology.spec
    limits = InputSpec(**{**spec.input.model_dump(), "max_age_s": NO_AGE_LIMIT_S, "max_future_skew_s": NO_AGE_LIMIT_S})
    sensors = topology.catalog.sensors
    return {kind: KindDecoder(kind, kind_spec, limits, {s.sensor_id: s.kind for s in sensors if s.kind != kind})
            for kind, kind_spec in spec.kinds.items()}


def readings_table(parsed: ParsedReadings, quantities: Sequence[str]) -> pa.Table:
    """The valid rows of ``parsed`` (rejected rows reach the archive as dead letters)."""
    keep = np.flatnonzero(parsed.reason == "")
    rows = parsed.message_row[keep]
    source = parsed.source
    values = parsed.values[keep]
    kafka_ms = source.timestamps_ms[rows]
    columns: dict[str, Any] = {
        "sensor_id": pa.array([parsed.sensor_ids[i] for i in keep], pa.string()),
        "event_time": pa.array(parsed.event_ms[keep], UTC_MS),
        "flag": pa.array([parsed.flags[i] for i in keep], pa.string()),
    }
    for j, q in enumerate(quantities):
        column = values[:, j]
        columns[q] = pa.array(column, pa.float64(), mask=np.isnan(column))
    array_pos = parsed.array_pos[keep]
    columns |= {
        "topic": pa.array([source.topics[i] for i in rows.tolist()], pa.string()),
        "kafka_partition": pa.array(source.partitions[rows], pa.int32()),
        "kafka_offset": pa.array(source.offsets[rows], pa.int64()),
        "reading_index": pa.array(array_pos, pa.int32(), mask=array_pos < 0),
        "kafka_time": pa.array(kafka_ms, UTC_MS, mask=kafka_ms < 0),
    }
    return pa.table(columns, schema=reading_schema(quantities))


class _Source(msgspec.Struct):
    topic: str
    partition: int
    offset: int
    key: str | None = None


class _DeadRecord(msgspec.Struct):
    reason: str
    detail: str
    source: _Source
    received_at_ms: int
    original_b64: str
    reading_index: int | None = None


_DEAD = msgspec.json.Decoder(_DeadRecord)


def deadletters_table(messages: Sequence[RawMessage]) -> tuple[pa.Table, list[RawMessage]]:
    """Dead-letter records (streams/deadletter.py) -> rows; records that are not ones are returned apart."""
    rows: list[_DeadRecord] = []
    originals: list[bytes] = []
    foreign: list[RawMessage] = []
    for msg in messages:
        try:
            record = _DEAD.decode(msg.value)
            originals.append(base64.b64decode(record.original_b64, validate=True))
        except (msgspec.DecodeError, binascii.Error, ValueError):
            foreign.append(msg)
            continue
        rows.append(record)
    table = pa.table({
        "received_at": pa.array([r.received_at_ms for r in rows], UTC_MS),
        "reason": pa.array([r.reason for r in rows], pa.string()),
        "detail": pa.array([r.detail for r in rows], pa.string()),
        "topic": pa.array([r.source.topic for r in rows], pa.string()),
        "kafka_partition": pa.array([r.source.partition for r in rows], pa.int32()),
        "kafka_offset": pa.array([r.source.offset for r in rows], pa.int64()),
        "kafka_key": pa.array([r.source.key for r in rows], pa.string()),
        "reading_index": pa.array([r.reading_index for r in rows], pa.int32()),
        "original": pa.array(originals, pa.binary()),
    }, schema=DEADLETTER_SCHEMA)
    return table, foreign
