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

    @classmethod
    def rank_of(cls, name: str) -> int:
        """The rank of a severity name; 0 for a name that is none (an alert from elsewhere)."""
        try:
            return cls(name).rank
        except ValueError:
            return 0

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


WINDOW_SHARE_OF_BUDGET = 0.7  # 0.8 until issue #4: docs/benchmarks.md "Alarm manager and notifications"


class BatchSpec(_Model):
    max_messages: PositiveInt = 1000
    budget_ms: PositiveInt = 500

    @property
    def window_ms(self) -> float:
        """How long a replay's default batching lets a batch span (streams/replay/window.py).
        The live worker has no fixed window: its consumers coalesce busy batches for
        budget/2 minus their measured p99 time (streams/consumer.py)."""
        return self.budget_ms * WINDOW_SHARE_OF_BUDGET


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
    category: Category | None = None  # default: by detector kind (detectors/registry.py DETECTOR_CATEGORIES)

    @field_validator("n_of_m")
    @classmethod
    def _n_of_m(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not value[0] <= value[1] <= 64:
            msg = f"{list(value)} must be [n, m] with n <= m <= 64"
            raise ValueError(msg)
        return value


Category = Literal["value", "fault", "offline", "quality"]
LABEL_NAMES = ("rule", "kind", "category", "severity", "sensor_id", "site_id", "district")
Label = Literal["rule", "kind", "category", "severity", "sensor_id", "site_id", "district"]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class AlarmMatch(_Model):
    """Which alarms an inhibition side covers: every given label must take one of its values."""

    rule: list[str] | None = None
    kind: list[str] | None = None
    category: list[Category] | None = None  # detectors/registry.py DETECTOR_CATEGORIES
    severity: list[Severity] | None = None
    district: list[str] | None = None


class InhibitRuleSpec(_Model):
    """Alertmanager's inhibit_rules: while a *source* alarm is live, *target*
    alarms that agree with it on every ``equal`` label are not notified."""

    name: Name
    source: AlarmMatch
    target: AlarmMatch
    equal: list[Label] = Field(default_factory=lambda: list[Label](["sensor_id"]), min_length=1)

    @field_validator("equal")
    @classmethod
    def _same_place(cls, value: list[str]) -> list[str]:
        if "sensor_id" not in value and "site_id" not in value:
            msg = "must include sensor_id or site_id (inhibition looks up live alarms per site)"
            raise ValueError(msg)
        return value


class CapSenderSpec(_Model):
    """Who issues the CAP messages (sinks/cap.py CapConfig)."""

    sender: str
    sender_name: str
    org_code: Annotated[str, Field(pattern=r"^\d{14}$")]
    status: Literal["Actual", "Exercise", "Test", "Draft"] = "Actual"
    scope: Literal["Public", "Restricted"] = "Public"
    restriction: str | None = None
    radius_km: Annotated[float, Field(gt=0)] = 0.5
    english: bool = True


class ReceiverSpec(_Model):
    """One HTTP receiver. Its URL is ``url``, or the value of the environment
    variable ``url_env`` (then the receiver is off while that variable is unset)."""

    name: Name
    type: Literal["webhook", "cap"]
    url: str | None = None
    url_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    departments: list[str] | None = None  # alarms routed to any of these; None: every department
    min_severity: Severity = Severity.WARNING  # a new alarm below this is not sent
    send_resolved: bool = True
    repeat: bool = False  # re-send unacknowledged alarms of notifications.repeat_severities
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    max_attempts: PositiveInt = 8
    backoff_first_s: Annotated[float, Field(gt=0)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 300.0
    cap: CapSenderSpec | None = None
    # extra request headers whose values come from the environment (secrets stay out of
    # this file), e.g. {Authorization: CITYOPS_CAP_AUTH} with CITYOPS_CAP_AUTH="Bearer ..."
    headers_env: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")],
                      Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]] = {}

    @model_validator(mode="after")
    def _consistent(self) -> ReceiverSpec:
        if (self.url is None) == (self.url_env is None):
            msg = "give exactly one of `url: <http(s) URL>` or `url_env: <ENV_VAR>`"
            raise ValueError(msg)
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            msg = f"url: {self.url!r} must start with http:// or https://"
            raise ValueError(msg)
        if self.type == "cap" and self.cap is None:
            msg = "a cap receiver needs `cap: {sender, sender_name, org_code}`"
            raise ValueError(msg)
        if self.type == "cap" and self.repeat:
            msg = "repeat: CAP receivers get Alert/Update/Cancel only; repeat is for webhook receivers"
            raise ValueError(msg)
        return self


class ArchiveSpec(_Model):
    """The JSONL archive of every alarm event (sinks/archive.py)."""

    enabled: bool = True
    directory: str = "archive"  # relative to the worker's data directory (CITYOPS_DATA_DIR)


class ReadingsArchiveSpec(_Model):
    """The Parquet archive of every reading and dead letter (streams/archive), written by
    `cityops archive run`, its own consumer group: the worker's batches do not wait for it."""

    directory: str = "readings-archive"  # relative to CITYOPS_DATA_DIR
    retention_days: Annotated[int, Field(ge=1)] = 90  # major-hazard rules ask for >= 30 days
    flush_s: Annotated[float, Field(gt=0)] = 60.0  # at most this long between files (and commits)
    max_messages: PositiveInt = 200_000  # messages buffered before a flush
    zstd_level: Annotated[int, Field(ge=1, le=22)] = 3  # 6 and 9 are no smaller here (docs/benchmarks.md)


class NotificationsSpec(_Model):
    """Routing and noise control for the HTTP receivers (sinks/notifier.py)."""

    external_url: str = "http://localhost:6066"  # links in webhook payloads
    repeat_interval_s: Annotated[float, Field(gt=0)] = 900.0
    repeat_severities: list[Severity] = Field(default_factory=lambda: [Severity.CRITICAL])
    inhibit: list[InhibitRuleSpec] = []
    receivers: list[ReceiverSpec] = []
    archive: ArchiveSpec = ArchiveSpec()


class MetricsSpec(_Model):
    """What streams/latest.py exports per catalog sensor for the boards."""

    latest_values: dict[str, list[str]] = {}  # kind -> quantities
    latest_scores: list[str] = []  # detector names (e.g. the AQI)


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
    notifications: NotificationsSpec = NotificationsSpec()
    metrics: MetricsSpec = MetricsSpec()
    readings_archive: ReadingsArchiveSpec = ReadingsArchiveSpec()
