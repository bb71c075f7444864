"""Dead-letter records: what was wrong with an input, with the original bytes."""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from streams.decode import RawMessage


class Reason(enum.Enum):
    """Machine-readable dead-letter reason codes (also the metric label)."""

    MALFORMED_JSON = "malformed_json"
    NON_FINITE = "non_finite"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    UNKNOWN_QUANTITY = "unknown_quantity"
    INVALID_FLAG = "invalid_flag"
    EMPTY = "empty"
    OUT_OF_RANGE = "out_of_range"
    OVERSIZE = "oversize"
    TS_FUTURE = "ts_future"
    TS_PAST = "ts_past"
    KIND_MISMATCH = "kind_mismatch"
    UNKNOWN_SENSOR_LIMIT = "unknown_sensor_limit"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    original: bytes
    reading_index: int | None = None  # position in a gateway array, None for a single reading

    @classmethod
    def of(cls, msg: RawMessage, reason: Reason | str, detail: str, reading_index: int | None = None) -> DeadLetter:
        code = reason.value if isinstance(reason, Reason) else reason
        return cls(code, detail, msg.topic, msg.partition, msg.offset, msg.key, msg.value, reading_index)

    def to_json(self, received_at_ms: int) -> bytes:
        """The record on city.deadletter. `original_b64` is the exact input;
        `original_text` is a convenience copy when it was valid UTF-8."""
        record: dict[str, Any] = {
            "reason": self.reason,
            "detail": self.detail,
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset,
                       "key": self.key.decode("utf-8", "replace") if self.key is not None else None},
            "reading_index": self.reading_index,
            "received_at_ms": received_at_ms,
            "original_b64": base64.b64encode(self.original).decode("ascii"),
            "original_text": _text_or_none(self.original),
        }
        return msgspec.json.encode(record)


def _text_or_none(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
