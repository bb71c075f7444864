"""Scenario files: scripted incidents and random sensor faults (YAML, validated).

A scenario names *what* happens and *when* (simulated seconds from the start);
``streams.sim.incidents`` resolves targets against the catalog. Errors name the
file and the field: ``default.yaml: incidents[1].duration_s: Input should be
greater than 0 (got -5)``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.errors import ConfigError
from streams.topology import format_loc

DEFAULT_SCENARIO = "default.yaml"  # in streams/resources/scenarios/

NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
FaultFlag = Literal["F", "M", "S", "D", "C", "T", "B"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Incident(_Model):
    """Fields every incident has. At most one target; none: the seeded RNG picks."""

    id: str | None = None  # default: "<type>-<n>"
    at_s: NonNegative
    duration_s: Positive
    site_id: str | None = None
    sensor_id: str | None = None
    district: str | None = None
    ramp_s: NonNegative | None = None  # rise and fall time; default a quarter of duration_s
    report_period_s: Positive = 2.0  # affected sensors report this often while it lasts

    @model_validator(mode="after")
    def _one_target(self) -> _Incident:
        given = [n for n in ("site_id", "sensor_id", "district") if getattr(self, n) is not None]
        if len(given) > 1:
            msg = f"give at most one target of site_id, sensor_id, district; got {given}"
            raise ValueError(msg)
        if self.ramp_s is not None and 2 * self.ramp_s > self.duration_s:
            msg = f"ramp_s ({self.ramp_s}) must be at most half of duration_s ({self.duration_s})"
            raise ValueError(msg)
        return self

    @property
    def rise_s(self) -> float:
        return self.duration_s / 4 if self.ramp_s is None else self.ramp_s


class GasLeak(_Incident):
    """gas_lel at one hazmat site's detectors: the nearest reaches ``peak_lel``,
    each next-nearest ``decay`` times the previous; the nearest tank's pressure dips."""

    type: Literal["gas_leak"]
    peak_lel: Annotated[float, Field(gt=0, le=100)] = 65.0
    decay: Fraction = 0.55
    pressure_dip_pct: Annotated[float, Field(ge=0, lt=100)] = 6.0


class PollutionEpisode(_Incident):
    """PM2.5 (and PM10 = ``pm10_ratio`` x PM2.5) at a district's air stations."""

    type: Literal["pollution_episode"]
    peak_pm25: Positive = 230.0
    pm10_ratio: Annotated[float, Field(ge=1)] = 1.4


class TrafficIncident(_Incident):
    """One road station's speed falls to ``speed_factor`` x its ``speed_kmh.<speed_of>``
    limit; occupancy rises; the upstream station queues, the downstream one empties.

    ``speed_of: low`` with ``speed_factor`` > 1 is the mild kind (a night-time
    lane blockage): speed stays above every speed limit, only occupancy shows it
    (the upstream station then slows to the same factor of its own ``low``)."""

    type: Literal["traffic_incident"]
    speed_factor: Annotated[float, Field(gt=0, le=2)] = 0.5
    speed_of: Literal["lowlow", "low"] = "lowlow"
    occupancy_pct: Annotated[float, Field(gt=0, le=100)] = 80.0
    upstream: bool = True


class MeterFault(_Incident):
    """An energy meter reports ``flag`` with zero power (register frozen)."""

    type: Literal["meter_fault"]
    flag: FaultFlag = "D"
    ramp_s: NonNegative | None = 0.0


SensorKind = Literal["air", "hazmat", "traffic", "energy"]


class SlowLeak(_Incident):
    """gas_lel at one gas detector climbs by ``peak_lel`` over ``ramp_s`` and stays
    there: a slow leak that never reaches the 25 %LEL first set point (with the
    detector's zero offset and noise it stays below it for peak_lel <= 20)."""

    type: Literal["slow_leak"]
    peak_lel: Annotated[float, Field(gt=0, le=22)] = 20.0
    report_period_s: Positive = 10.0


class StuckSensor(_Incident):
    """One sensor of ``sensor_kind`` repeats the values of its first reading in the
    incident (a frozen transmitter); energy_kwh keeps counting from the frozen power."""

    type: Literal["stuck_sensor"]
    sensor_kind: SensorKind = "air"
    ramp_s: NonNegative | None = 0.0
    report_period_s: Positive = 60.0


class SensorSilent(_Incident):
    """One sensor of ``sensor_kind`` sends nothing from ``at_s`` to ``at_s + duration_s``."""

    type: Literal["sensor_silent"]
    sensor_kind: SensorKind = "hazmat"
    ramp_s: NonNegative | None = 0.0
    report_period_s: Positive = 60.0


class MeterReset(_Incident):
    """An energy meter's energy_kwh register drops to ~0 at ``at_s`` and counts on from
    there until ``at_s + duration_s`` (then the old register shows again)."""

    type: Literal["meter_reset"]
    ramp_s: NonNegative | None = 0.0
    report_period_s: Positive = 60.0


class MeterIdle(_Incident):
    """An energy meter reads zero power with flag N (plant stopped, meter bypassed)."""

    type: Literal["meter_idle"]
    ramp_s: NonNegative | None = 0.0
    report_period_s: Positive = 60.0


Incident = Annotated[
    GasLeak | PollutionEpisode | TrafficIncident | MeterFault | SlowLeak | StuckSensor | SensorSilent | MeterReset
    | MeterIdle,
    Field(discriminator="type"),
]
INCIDENT_TYPES = ("gas_leak", "pollution_episode", "traffic_incident", "meter_fault", "slow_leak", "stuck_sensor",
                  "sensor_silent", "meter_reset", "meter_idle")


class Faults(_Model):
    """Random equipment faults: non-N HJ 212 flags lasting a few readings."""

    per_sensor_per_hour: NonNegative = 0.05  # expected fault starts per sensor per simulated hour
    flags: list[FaultFlag] = Field(default=["M", "D", "B"], min_length=1)
    min_readings: Annotated[int, Field(ge=1)] = 2
    max_readings: Annotated[int, Field(ge=1)] = 5

    @model_validator(mode="after")
    def _range(self) -> Faults:
        if self.min_readings > self.max_readings:
            msg = f"min_readings ({self.min_readings}) must not exceed max_readings ({self.max_readings})"
            raise ValueError(msg)
        return self


class Scenario(_Model):
    name: str = "unnamed"
    description: str = ""
    faults: Faults = Faults()
    incidents: list[Incident] = []


def load_scenario(path: Path | None = None) -> Scenario:
    """Parse a scenario file; ``None`` loads the packaged default."""
    if path is None:
        source = resources.files("streams").joinpath("resources", "scenarios", DEFAULT_SCENARIO)
        return parse_scenario(DEFAULT_SCENARIO, source.read_text(encoding="utf-8"))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"scenario: cannot read {path}: {exc.strerror}"
        raise ConfigError(msg) from exc
    return parse_scenario(str(path), text)


def parse_scenario(name: str, text: str) -> Scenario:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = f"{name}: not valid YAML: {exc}"
        raise ConfigError(msg) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        msg = f"{name}: expected a mapping at the top level, got {type(data).__name__}"
        raise ConfigError(msg)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(f"  - {_describe(err)}" for err in exc.errors())
        msg = f"{name}: invalid scenario:\n{problems}"
        raise ConfigError(msg) from None


def _describe(err: Any) -> str:
    # Drop the union tag pydantic inserts (incidents.0.gas_leak.at_s -> incidents[0].at_s).
    tags = set(INCIDENT_TYPES)
    loc = [p for i, p in enumerate(err["loc"]) if not (i == 2 and p in tags)]
    where = format_loc(loc)
    if err["type"] == "missing":
        return f"{where}: required field is missing"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    if err["type"] == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        return f"{where}.type: unknown incident type {tag!r}; valid: {sorted(tags)}"
    if err["type"] == "union_tag_not_found":
        return f"{where}.type: required field is missing; valid: {sorted(tags)}"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"
