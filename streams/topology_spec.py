"""The typed shape of topology.yaml (pydantic models, frozen, no extra keys).

Only the shape lives here; cross-references (a route naming a detector, a
detector naming a sensor kind) are checked in ``streams.topology``.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Severity(enum.Enum):
    """Alarm severity, mildest first, with China's four warning colours."""

    WARNING = "warning"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @property
    def colour(self) -> str:
        """Emergency Response Law colour: red I > orange II > yellow III > blue IV."""
        return _SEVERITY_COLOUR[self]


_SEVERITY_RANK = {s: i + 1 for i, s in enumerate(Severity)}
_SEVERITY_COLOUR = {
    Severity.WARNING: "blue",
    Severity.MINOR: "yellow",
    Severity.MAJOR: "orange",
    Severity.CRITICAL: "red",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]


class TopicsSpec(_Model):
    alerts: str = "city.alerts"
    deadletter: str = "city.deadletter"
    partitions: PositiveInt = 4


class InputSpec(_Model):
    max_message_bytes: PositiveInt = 262_144
    max_future_skew_s: Annotated[float, Field(ge=0)] = 300.0
    max_age_s: Annotated[float, Field(gt=0)] = 30 * 86_400.0
    max_unknown_sensors: PositiveInt = 100_000  # per kind: bounds per-sensor state memory


class DepartmentSpec(_Model):
    name: str


class BatchSpec(_Model):
    max_messages: PositiveInt = 1000
    budget_ms: PositiveInt = 500


class QuantitySpec(_Model):
    unit: str
    min: float
    max: float

    @model_validator(mode="after")
    def _range(self) -> QuantitySpec:
        if self.min >= self.max:
            msg = f"min ({self.min}) must be below max ({self.max})"
            raise ValueError(msg)
        return self


class KindSpec(_Model):
    topic: str
    departments: list[str]
    batch: BatchSpec = BatchSpec()
    expected_period_s: Annotated[float, Field(gt=0)] = 60.0
    quantities: dict[str, QuantitySpec] = Field(min_length=1)


class DetectorSpec(_Model):
    name: str
    kind: str
    sensor_kind: str
    params: dict[str, Any] = {}


class LevelSpec(_Model):
    """One alarm level of a route: a fixed set point or a per-sensor catalog limit."""

    severity: Severity
    at: float | None = None
    limit: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> LevelSpec:
        if (self.at is None) == (self.limit is None):
            msg = "give exactly one of `at: <number>` or `limit: <quantity>.<name>`"
            raise ValueError(msg)
        return self


class RouteSpec(_Model):
    rule: str
    detector: str
    direction: Literal["above", "below"] = "above"
    deadband: Annotated[float, Field(ge=0)] = 0.0
    summary: str = "{rule} at {site_id}"
    departments: list[str] | None = None  # default: the sensor's, else its kind's
    levels: list[LevelSpec] = Field(min_length=1)
    # conditions (streams/rules.py): on-delay, N of the last M readings, clear hold time
    for_s: Annotated[float, Field(ge=0)] = 0.0
    n_of_m: tuple[PositiveInt, PositiveInt] | None = None
    hold_s: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("n_of_m")
    @classmethod
    def _n_of_m(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not value[0] <= value[1] <= 64:
            msg = f"{list(value)} must be [n, m] with n <= m <= 64"
            raise ValueError(msg)
        return value


class TopologySpec(_Model):
    version: Literal[1]
    city: str
    timezone: Annotated[str, Field(pattern=r"^[+-]\d{2}:\d{2}$")] = "+08:00"
    catalog: str
    topics: TopicsSpec = TopicsSpec()
    input: InputSpec = InputSpec()
    departments: dict[str, DepartmentSpec]
    kinds: dict[str, KindSpec] = Field(min_length=1)
    detectors: list[DetectorSpec] = []
    routes: list[RouteSpec] = []
