"""Kafka messages of one sensor kind -> a columnar ReadingBatch + dead letters.

The happy path decodes the whole micro-batch with a single msgspec call (the
message bodies are spliced into one JSON array) into typed structs whose
``values`` struct has one field per catalog quantity, then builds columns with
numpy. Only when that call fails does it fall back to one message at a time to
find and dead-letter the culprits; valid readings in the same batch, and in the
same gateway array, are still processed.
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import chain
from operator import attrgetter
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detectors.base import FLAG_CODE, FLAG_NORMAL, ReadingBatch
from streams.catalog import SensorIndex
from streams.deadletter import DeadLetter, Reason
from streams.topology_spec import InputSpec, KindSpec

SensorId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
EpochMs = Annotated[int, msgspec.Meta(ge=-(2**62), le=2**62)]  # fits int64 (numpy), with room
EventTime = Annotated[datetime, msgspec.Meta(tz=True)] | EpochMs
# The batch decode keeps RFC 3339 times as strings and converts them in bulk (pyarrow); a
# string this pattern or pyarrow rejects sends the batch down the strict path (msgspec's
# datetime, and its error for the dead letter).
BulkEventTime = str | EpochMs
RFC3339 = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
UTC_MS = pa.timestamp("ms", tz="UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MILLISECOND = timedelta(milliseconds=1)
Flag = Literal["N", "F", "M", "S", "D", "C", "T", "B"]
# everything msgspec may raise on hostile input (invalid UTF-8 inside a Raw
# element surfaces as UnicodeDecodeError, deep nesting as RecursionError)
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One Kafka record as the worker received it."""

    value: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int = -1  # the record's Kafka timestamp (broker or producer time); -1: unknown


@dataclass(frozen=True, slots=True)
class RawBatch:
    """One fetch of Kafka records as columns: bodies and keys in arrival order, with
    their coordinates as numpy arrays. The hot path never builds a per-record object;
    ``message(i)`` makes one only for a record that is dead-lettered."""

    values: list[bytes]
    keys: list[bytes | None]
    topics: list[str]
    partitions: np.ndarray  # (n,) int32
    offsets: np.ndarray  # (n,) int64
    timestamps_ms: np.ndarray  # (n,) int64, -1 = unknown

    def __len__(self) -> int:
        return len(self.values)

    def message(self, i: int) -> RawMessage:
        return RawMessage(self.values[i], self.keys[i], self.topics[i], int(self.partitions[i]), int(self.offsets[i]),
                          int(self.timestamps_ms[i]))

    @classmethod
    def of(cls, messages: RawBatch | Sequence[RawMessage]) -> RawBatch:
        """A batch as it is, or one built from RawMessages (tests, replays, the archive)."""
        if isinstance(messages, RawBatch):
            return messages
        n = len(messages)
        return cls(
            [m.value for m in messages], [m.key for m in messages], [m.topic for m in messages],
            np.fromiter((m.partition for m in messages), np.int32, count=n),
            np.fromiter((m.offset for m in messages), np.int64, count=n),
            np.fromiter((m.timestamp_ms for m in messages), np.int64, count=n),
        )

    @classmethod
    def concat(cls, parts: Sequence[RawBatch]) -> RawBatch:
        if len(parts) == 1:
            return parts[0]
        return cls(
            [v for p in parts for v in p.values], [k for p in parts for k in p.keys], [t for p in parts for t in p.topics],
            _concat([p.partitions for p in parts], np.int32), _concat([p.offsets for p in parts], np.int64),
            _concat([p.timestamps_ms for p in parts], np.int64),
        )


def _concat(arrays: Sequence[np.ndarray], dtype: type[np.generic]) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


@dataclass(frozen=True, slots=True)
class ParsedReadings:
    """One row per reading that parsed, in arrival order, plus the messages that did not."""

    values: np.ndarray  # (n, n_quantities) float64, NaN = absent
    event_ms: np.ndarray  # (n,) int64
    sensor_ids: list[str]
    flags: list[str]  # HJ 212 flag letters
    source: RawBatch  # the records the rows came from
    message_row: np.ndarray  # (n,) int32: per row, its record's position in `source`
    array_pos: np.ndarray  # (n,) int32: per row, its index in a gateway array, -1 for a single reading
    reason: np.ndarray  # (n,) object: "" = valid, else a dead-letter reason code
    detail: list[str]
    dead: list[DeadLetter]  # messages (or array elements) that did not parse

    def __len__(self) -> int:
        return len(self.sensor_ids)

    def origin(self, row: int) -> tuple[RawMessage, int | None]:
        """Row ``row``'s record and its index in a gateway array (None: a single reading)."""
        pos = int(self.array_pos[row])
        return self.source.message(int(self.message_row[row])), (pos if pos >= 0 else None)


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    batch: ReadingBatch  # rows sorted by (sensor_idx, arrival order)
    dead: list[DeadLetter]
    n_readings: int  # valid readings in `batch`
    n_unknown_sensors: int  # readings from sensors not in the catalog (processed)


@dataclass(frozen=True, slots=True)
class _Decoded:
    """What the batch decode found: readings, and per reading its record and array index."""

    readings: list[Any]
    message_row: np.ndarray
    array_pos: np.ndarray
    strict: bool = False  # decoded one record at a time: times are datetimes, not strings

    @classmethod
    def empty(cls) -> _Decoded:
        return cls([], np.zeros(0, np.int32), np.zeros(0, np.int32))


class _Shape(enum.Enum):
    """How a batch's records are shaped; the decoder tries the last shape seen first."""

    SINGLE = "one reading per record"
    ARRAYS = "gateway arrays"
    MIXED = "both"


class KindDecoder:
    """Decoder for one sensor kind's topic; holds its msgspec types and limits."""

    def __init__(self, kind: str, spec: KindSpec, limits: InputSpec, foreign_sensors: dict[str, str]) -> None:
        self.kind = kind
        self.quantities = tuple(spec.quantities)
        self._lo = np.array([q.min for q in spec.quantities.values()])
        self._hi = np.array([q.max for q in spec.quantities.values()])
        self._limits = limits
        self._foreign = foreign_sensors  # sensor_id -> kind, for catalog sensors of *other* kinds
        # gc=False: readings hold no reference cycles, and untracked structs spare the
        # collector from walking a batch's thousands of objects
        values = msgspec.defstruct(
            f"{kind.capitalize()}Values",
            [(q, float, math.nan) for q in self.quantities],
            forbid_unknown_fields=True, gc=False,
        )
        def reading_struct(name: str, ts: Any) -> Any:
            fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
                ("sensor_id", SensorId), ("ts", ts), ("values", values), ("flag", Flag, "N")]
            return msgspec.defstruct(f"{kind.capitalize()}{name}", fields, gc=False)

        bulk = reading_struct("BulkReading", BulkEventTime)
        reading = reading_struct("Reading", EventTime)
        self._decoders: dict[_Shape, msgspec.json.Decoder[Any]] = {
            _Shape.SINGLE: msgspec.json.Decoder(list[bulk]),  # type: ignore[valid-type]
            _Shape.ARRAYS: msgspec.json.Decoder(list[list[bulk]]),  # type: ignore[valid-type]
            _Shape.MIXED: msgspec.json.Decoder(list[bulk | list[bulk]]),  # type: ignore[valid-type]
        }
        self._shape = _Shape.SINGLE
        self._one_decoder = msgspec.json.Decoder(reading | list[msgspec.Raw])
        self._raw_decoder = msgspec.json.Decoder(reading)
        self._value_getters = [attrgetter(q) for q in self.quantities]

    def decode(self, messages: RawBatch | Sequence[RawMessage], index: SensorIndex, now_ms: int) -> DecodedBatch:
        return self._to_batch(self.parse(messages, now_ms), index)

    def _sized_rows(self, batch: RawBatch, dead: list[DeadLetter]) -> np.ndarray:
        """Positions of the records small enough to decode; the others are dead-lettered
        (an empty body here; a whitespace-only one fails the batch decode)."""
        limit = self._limits.max_message_bytes
        lengths = np.fromiter(map(len, batch.values), np.int64, count=len(batch))
        bad = (lengths == 0) | (lengths > limit)
        if not bad.any():
            return np.arange(len(batch), dtype=np.int32)
        for i in np.flatnonzero(bad).tolist():
            msg = batch.message(i)
            if lengths[i] == 0:
                dead.append(DeadLetter.of(msg, Reason.EMPTY, "the message has no body (null value or whitespace)"))
            else:
                dead.append(DeadLetter.of(msg, Reason.OVERSIZE, f"{lengths[i]} bytes > input.max_message_bytes {limit}"))
        return np.flatnonzero(~bad).astype(np.int32)

    def _decode_all(self, batch: RawBatch, rows: np.ndarray, dead: list[DeadLetter]) -> _Decoded:
        """One msgspec call for the whole batch when every record is valid; else one
        record at a time, to dead-letter exactly the bad ones."""
        if not len(rows):
            return _Decoded.empty()
        values = batch.values
        body = b"[" + b",".join(values if len(rows) == len(values) else [values[i] for i in rows.tolist()]) + b"]"
        for shape in dict.fromkeys((self._shape, _Shape.MIXED)):
            try:
                decoded = self._decoders[shape].decode(body)
            except DECODE_ERRORS:
                continue
            if len(decoded) != len(rows):  # e.g. a body of two readings and a comma: not one JSON value
                break
            self._shape = shape
            return self._flatten(shape, decoded, batch, rows, dead)
        return self._decode_each(batch, rows, dead)

    def _flatten(self, shape: _Shape, decoded: list[Any], batch: RawBatch, rows: np.ndarray,
                 dead: list[DeadLetter]) -> _Decoded:
        if shape is _Shape.SINGLE:
            return _Decoded(decoded, rows, np.full(len(rows), -1, np.int32))
        if shape is _Shape.MIXED:
            shape = _Shape.ARRAYS if all(type(items) is list for items in decoded) else shape
        if shape is _Shape.MIXED:
            return self._gather([(int(i), items) for i, items in zip(rows.tolist(), decoded, strict=True)], batch, dead)
        counts = np.fromiter(map(len, decoded), np.int64, count=len(decoded))
        for i in rows[counts == 0].tolist():
            dead.append(DeadLetter.of(batch.message(i), Reason.EMPTY, "the message is an empty JSON array"))
        starts = np.cumsum(counts) - counts
        return _Decoded(list(chain.from_iterable(decoded)), np.repeat(rows, counts),
                        (np.arange(int(counts.sum())) - np.repeat(starts, counts)).astype(np.int32))

    def _decode_each(self, batch: RawBatch, rows: np.ndarray, dead: list[DeadLetter]) -> _Decoded:
        items = []
        for i in rows.tolist():
            msg = batch.message(i)
            if not msg.value.strip():
                dead.append(DeadLetter.of(msg, Reason.EMPTY, "the message has no body (null value or whitespace)"))
                continue
            items.append((i, self._decode_one(msg, dead)))
        return dataclasses.replace(self._gather(items, batch, dead), strict=True)

    def _gather(self, items: list[tuple[int, Any]], batch: RawBatch, dead: list[DeadLetter]) -> _Decoded:
        """Readings of records decoded one by one (a reading, a list of them, or None)."""
        readings: list[Any] = []
        message_row: list[int] = []
        array_pos: list[int] = []
        for i, item in items:
            if isinstance(item, list):
                if not item and not isinstance(item, _IndexedList):
                    dead.append(DeadLetter.of(batch.message(i), Reason.EMPTY, "the message is an empty JSON array"))
                readings.extend(item)
                message_row.extend([i] * len(item))
                array_pos.extend(getattr(item, "positions", range(len(item))))
            elif item is not None:
                readings.append(item)
                message_row.append(i)
                array_pos.append(-1)
        return _Decoded(readings, np.array(message_row, np.int32), np.array(array_pos, np.int32))

    def _decode_one(self, msg: RawMessage, dead: list[DeadLetter]) -> Any:
        """A reading, a list of the valid readings of a gateway array, or None."""
        try:
            item = self._one_decoder.decode(msg.value)
        except DECODE_ERRORS as exc:
            dead.append(DeadLetter.of(msg, *classify(exc, msg.value)))
            return None
        if not isinstance(item, list):
            return item
        if not item:
            dead.append(DeadLetter.of(msg, Reason.EMPTY, "the message is an empty JSON array"))
        good = []
        for j, raw in enumerate(item):
            try:
                good.append((j, self._raw_decoder.decode(raw)))
            except DECODE_ERRORS as exc:
                dead.append(DeadLetter.of(msg, *classify(exc, bytes(raw)), reading_index=j))
        # keep the array positions of the good readings for dead letters found later
        return _IndexedList(good)

    def parse(self, messages: RawBatch | Sequence[RawMessage], now_ms: int) -> ParsedReadings:
        """Every reading of ``messages``, one row each, with the reason it is rejected
        ("" if valid) before any catalog lookup: the readings archive keeps these rows."""
        batch = RawBatch.of(messages)
        dead: list[DeadLetter] = []
        with _gc_paused():
            rows = self._sized_rows(batch, dead)
            found = self._decode_all(batch, rows, dead)
            event_ms = None if found.strict else bulk_epoch_ms([r.ts for r in found.readings])
            if event_ms is None and not found.strict:  # a time the bulk path cannot vouch for: the strict path names it
                dead.clear()
                rows = self._sized_rows(batch, dead)
                found = self._decode_each(batch, rows, dead)
            if event_ms is None:
                event_ms = np.fromiter(map(_event_ms, found.readings), np.int64, count=len(found.readings))
            readings = found.readings
            values = self._value_matrix(readings)  # (n, n_quantities), NaN = absent
            sensor_ids = [r.sensor_id for r in readings]
            flags = [r.flag for r in readings]
        reason, detail = self._reject_reasons(values, event_ms, sensor_ids, now_ms)
        return ParsedReadings(values, event_ms, sensor_ids, flags, batch, found.message_row, found.array_pos, reason,
                              detail, dead)

    def _to_batch(self, parsed: ParsedReadings, index: SensorIndex) -> DecodedBatch:
        dead = parsed.dead
        sensor_ids = parsed.sensor_ids
        for row in np.flatnonzero(parsed.reason).tolist():
            msg, j = parsed.origin(row)
            dead.append(DeadLetter.of(msg, parsed.reason[row], parsed.detail[row], reading_index=j))
        keep = np.flatnonzero(parsed.reason == "")
        kept_ids = sensor_ids if len(keep) == len(sensor_ids) else [sensor_ids[i] for i in keep.tolist()]
        found = np.asarray(index.lookup(kept_ids, self._limits.max_unknown_sensors), np.int64)
        for row in keep[found < 0].tolist():
            msg, j = parsed.origin(row)
            detail = f"sensor {sensor_ids[row]!r} is not in the catalog and input.max_unknown_sensors={self._limits.max_unknown_sensors} are already tracked; add it to the catalog"
            dead.append(DeadLetter.of(msg, Reason.UNKNOWN_SENSOR_LIMIT, detail, reading_index=j))
        keep, sensor_idx = keep[found >= 0], found[found >= 0]
        unknown = int(np.count_nonzero(sensor_idx >= index.n_known))
        flags = flag_codes(parsed.flags)[keep]
        partitions = parsed.source.partitions[parsed.message_row[keep]].astype(np.int16)
        batch = _long_format(parsed.values[keep], parsed.event_ms[keep], np.asarray(sensor_idx, np.int32), flags,
                             partitions)
        return DecodedBatch(batch=batch, dead=dead, n_readings=len(keep), n_unknown_sensors=unknown)

    def _value_matrix(self, readings: list[Any]) -> np.ndarray:
        n = len(readings)
        vals = [r.values for r in readings]
        columns = [np.fromiter(map(get, vals), np.float64, count=n) for get in self._value_getters]
        return np.column_stack(columns) if columns else np.zeros((n, 0))

    def _reject_reasons(
        self, values: np.ndarray, event_ms: np.ndarray, sensor_ids: list[str], now_ms: int
    ) -> tuple[np.ndarray, list[str]]:
        """Per reading: a reason code ("" = valid) and a human detail."""
        n = values.shape[0]
        reason = np.full(n, "", dtype=object)
        detail = [""] * n
        present = ~np.isnan(values)
        outside = present & ((values < self._lo) | (values > self._hi))
        checks: list[tuple[np.ndarray, Reason, Callable[[int], str]]] = [
            (~present.any(axis=1), Reason.EMPTY, lambda i: "`values` has no quantity"),
            (outside.any(axis=1), Reason.OUT_OF_RANGE, lambda i: self._range_detail(values[i], outside[i])),
            (event_ms > now_ms + int(self._limits.max_future_skew_s * 1000), Reason.TS_FUTURE,
             lambda i: f"ts {event_ms[i]} ms is more than input.max_future_skew_s={self._limits.max_future_skew_s:g} s ahead"),
            (event_ms < now_ms - int(self._limits.max_age_s * 1000), Reason.TS_PAST,
             lambda i: f"ts {event_ms[i]} ms is older than input.max_age_s={self._limits.max_age_s:g} s"),
        ]
        for mask, code, describe in checks:
            if not mask.any():
                continue
            for i in np.flatnonzero(mask & (reason == "")).tolist():
                reason[i], detail[i] = code.value, describe(i)
        self._reject_foreign(sensor_ids, reason, detail)
        return reason, detail

    def _range_detail(self, row: np.ndarray, bad: np.ndarray) -> str:
        q = int(np.flatnonzero(bad)[0])
        return f"values.{self.quantities[q]}={row[q]:g} is outside [{self._lo[q]:g}, {self._hi[q]:g}]"

    def _reject_foreign(self, sensor_ids: list[str], reason: np.ndarray, detail: list[str]) -> None:
        foreign = self._foreign
        if foreign.keys().isdisjoint(sensor_ids):
            return
        for i, sid in enumerate(sensor_ids):
            other = foreign.get(sid)
            if other is not None and reason[i] == "":
                reason[i] = Reason.KIND_MISMATCH.value
                detail[i] = f"sensor {sid} is a catalog {other!r} sensor; send it to that kind's topic"


class _IndexedList(list[Any]):
    """Valid readings of a gateway array, with their positions in it."""

    def __init__(self, pairs: list[tuple[int, Any]]) -> None:
        super().__init__(r for _, r in pairs)
        self.positions = [j for j, _ in pairs]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while a batch's objects are made: the collector would walk them
    again and again as they are allocated, and none of them can form a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# per HJ 212 flag letter's code point, its FLAG_CODE (255: not a flag; msgspec has checked)
_FLAG_LUT = np.full(128, 255, np.uint8)
for _letter, _code in FLAG_CODE.items():
    _FLAG_LUT[ord(_letter)] = _code


def flag_codes(flags: list[str]) -> np.ndarray:
    """HJ 212 flag letters -> their codes, in one pass."""
    if flags.count("N") == len(flags):  # the usual batch: every reading normal
        return np.full(len(flags), FLAG_NORMAL, np.uint8)
    return _FLAG_LUT[np.array(flags, "U1").view(np.uint32)]


def _event_ms(reading: Any) -> int:
    """Epoch ms of a strictly decoded reading (exact integer arithmetic, as the bulk path)."""
    ts = reading.ts
    if type(ts) is int:
        return ts
    return int((ts - EPOCH) // MILLISECOND)


def bulk_epoch_ms(times: list[Any]) -> np.ndarray | None:
    """Epoch ms of event times decoded as epoch-ms ints or RFC 3339 strings, strings
    converted in one pyarrow cast; None if a string is not an RFC 3339 time with an
    offset that the cast takes (the caller then decodes strictly)."""
    n = len(times)
    if not n:
        return np.zeros(0, np.int64)
    is_text = np.fromiter(map(str.__instancecheck__, times), np.bool_, count=n)
    n_text = int(np.count_nonzero(is_text))
    if not n_text:
        return np.array(times, np.int64)
    # a batch mixing both forms (senders differ) is split in C: no per-reading Python
    mixed = np.array(times, object) if n_text < n else None
    text = pa.array(times if mixed is None else mixed[is_text], pa.string())
    if not pc.all(pc.match_substring_regex(text, RFC3339)).as_py():
        return None
    try:
        stamps = pc.cast(text, UTC_MS, safe=False)  # safe=False: sub-millisecond digits are cut, not refused
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    ms: np.ndarray = stamps.cast(pa.int64()).to_numpy()
    if mixed is None:
        return ms
    out = np.empty(n, np.int64)
    out[is_text] = ms
    out[~is_text] = mixed[~is_text].astype(np.int64)
    return out


def _long_format(values: np.ndarray, event_ms: np.ndarray, sensor_idx: np.ndarray, flags: np.ndarray,
                 partitions: np.ndarray) -> ReadingBatch:
    """(reading x quantity) matrix -> one row per present value, sorted by
    (sensor, arrival): per-sensor order is Kafka order, so any batching of the
    same stream gives the same per-sensor sequence. ``reading_idx`` is each reading's
    arrival position in the batch: detectors that look across sensors (no_signal's
    clock) need the order in which readings of different sensors came."""
    order = np.lexsort((np.arange(len(sensor_idx)), sensor_idx))
    values, event_ms, sensor_idx, flags = values[order], event_ms[order], sensor_idx[order], flags[order]
    partitions = partitions[order]
    reading, quantity = np.nonzero(~np.isnan(values))
    return ReadingBatch(
        sensor_idx=sensor_idx[reading].astype(np.int32),
        reading_idx=order[reading].astype(np.int32),
        event_time_ms=event_ms[reading],
        quantity_idx=quantity.astype(np.int16),
        value=values[reading, quantity],
        flag=flags[reading],
        partition=partitions[reading],
    )


def classify(exc: Exception, body: bytes) -> tuple[Reason, str]:
    """A msgspec failure -> (reason code, detail naming the field)."""
    text = str(exc)
    if isinstance(exc, RecursionError):
        return Reason.MALFORMED_JSON, "JSON nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return Reason.MALFORMED_JSON, f"not valid UTF-8: {exc.reason} at byte {exc.start}"
    if not isinstance(exc, msgspec.ValidationError):  # ValidationError subclasses DecodeError
        if _parses_with_nan(body):
            return Reason.NON_FINITE, "NaN or Infinity in the JSON; send a finite number or leave the quantity out"
        return Reason.MALFORMED_JSON, text
    if "Number out of range" in text:
        return Reason.NON_FINITE, text
    if "unknown field" in text and ".values" in text:
        return Reason.UNKNOWN_QUANTITY, text
    if "missing required field" in text:
        return Reason.MISSING_FIELD, text
    if "Invalid enum value" in text and "flag" in text:
        return Reason.INVALID_FLAG, f"{text}; valid HJ 212 flags: N F M S D C T B"
    return Reason.WRONG_TYPE, text


def _parses_with_nan(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True
