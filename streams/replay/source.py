"""Rebuild Kafka messages from the readings archive.

A row keeps its topic, partition, offset, position in a gateway array and Kafka
timestamp, so the rows of one message become that message again (an array when it
was one; elements that were invalid are not in the archive and stay out). Rows
written twice (an archiver crash between file and commit) are kept once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from streams.archive.rows import UTC_MS
from streams.archive.store import READINGS
from streams.decode import RawMessage
from streams.topology import Topology

_ENCODE = msgspec.json.Encoder()
_META = ("sensor_id", "event_time", "flag", "topic", "kafka_partition", "kafka_offset", "reading_index", "kafka_time")


def archived_messages(root: Path, topology: Topology, kind: str, from_ms: int | None = None,
                      to_ms: int | None = None, by: str = "kafka_time") -> list[RawMessage]:
    """The kind's archived messages whose Kafka timestamp (``by="event_time"``: whose
    readings' time) is in [from_ms, to_ms), in (Kafka timestamp, partition, offset) order."""
    directory = root / READINGS / f"kind={kind}"
    if not directory.is_dir():
        return []
    quantities = topology.quantities(kind)
    dataset = ds.dataset(directory, format="parquet", partitioning="hive")
    condition = None
    if from_ms is not None:
        condition = pc.field(by) >= pa.scalar(from_ms, UTC_MS)
    if to_ms is not None:
        upper = pc.field(by) < pa.scalar(to_ms, UTC_MS)
        condition = upper if condition is None else condition & upper
    present = [q for q in quantities if q in dataset.schema.names]
    table = dataset.to_table(columns=[*_META, *present], filter=condition)
    rows = table.to_pydict()
    return _messages(rows, present)


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if value is not None else -1


def _messages(rows: dict[str, list[Any]], quantities: list[str]) -> list[RawMessage]:
    grouped: dict[tuple[str, int, int], dict[int | None, dict[str, Any]]] = {}
    arrival: dict[tuple[str, int, int], int] = {}
    for i in range(len(rows["sensor_id"])):
        where = (rows["topic"][i], rows["kafka_partition"][i], rows["kafka_offset"][i])
        values = {q: rows[q][i] for q in quantities if rows[q][i] is not None and not math.isnan(rows[q][i])}
        reading = {"sensor_id": rows["sensor_id"][i], "ts": _ms(rows["event_time"][i]), "values": values,
                   "flag": rows["flag"][i]}
        grouped.setdefault(where, {})[rows["reading_index"][i]] = reading  # a duplicate row overwrites itself
        arrival[where] = _ms(rows["kafka_time"][i])
    messages = []
    for (topic, partition, offset), readings in grouped.items():
        body: dict[str, Any] | list[dict[str, Any]]
        if None in readings:
            body = readings[None]
        else:
            body = [readings[j] for j in sorted(j for j in readings if j is not None)]
        first = body if isinstance(body, dict) else body[0]
        messages.append(RawMessage(_ENCODE.encode(body), first["sensor_id"].encode(), topic, partition, offset,
                                   arrival[(topic, partition, offset)]))
    messages.sort(key=lambda m: (m.timestamp_ms, m.partition, m.offset))
    return messages
