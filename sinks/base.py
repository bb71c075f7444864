"""The alert event (design.md "Alarm events") and the sink protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import msgspec

Status = Literal["firing", "updated", "resolved"]


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One alarm state change, exactly the v1 shape on `city.alerts`."""

    alert_id: str  # deterministic: same input -> same id, so replays and retries dedup
    alarm_key: str  # "<sensor_id>:<rule>"
    status: Status
    severity: str  # critical | major | minor | warning (the level reached; for resolved, the last one)
    level: str  # red | orange | yellow | blue
    rule: str
    kind: str
    sensor_id: str
    site_id: str
    district: str
    lat: float | None
    lon: float | None
    quantity: str
    value: float
    threshold: float | None
    score: float
    event_ts: str  # the reading's event time, RFC 3339 in the city's offset
    event_time_ms: int
    detected_at: str
    departments: list[str]
    summary: str

    def to_json(self) -> bytes:
        return _ENCODER.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Alert:
        return _DECODER.decode(data)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Alert)


class AlertSink(Protocol):
    """Where alerts go. `write_batch` returns once the alerts are durable there:
    the worker commits input offsets only after every sink has returned."""

    async def write_batch(self, alerts: Sequence[Alert]) -> None: ...

    async def close(self) -> None: ...


def alert_fields(alert: Alert) -> dict[str, Any]:
    return msgspec.structs.asdict(alert)
