"""The sensor catalog (CSV) and the dense sensor index built from it."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streams.errors import TopologyError

CATALOG_COLUMNS = ("sensor_id", "kind", "site_id", "site_name", "district", "lat", "lon", "departments", "limits")


@dataclass(frozen=True, slots=True)
class SensorInfo:
    sensor_id: str
    kind: str
    site_id: str
    site_name: str
    district: str
    lat: float
    lon: float
    departments: tuple[str, ...] = ()  # empty: the kind's departments
    limits: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Catalog:
    path: Path
    sensors: tuple[SensorInfo, ...]

    def by_kind(self, kind: str) -> tuple[SensorInfo, ...]:
        return tuple(s for s in self.sensors if s.kind == kind)


def load_catalog(path: Path) -> Catalog:
    """Parse the catalog CSV; every error names the file, line and column."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CATALOG_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                msg = f"{path}: missing columns {missing}; expected {list(CATALOG_COLUMNS)}"
                raise TopologyError(msg)
            sensors = tuple(_parse_row(path, line, row) for line, row in enumerate(reader, start=2))
    except OSError as exc:
        msg = f"catalog: cannot read {path}: {exc.strerror}; fix `catalog:` in topology.yaml"
        raise TopologyError(msg) from exc
    _check_unique(path, sensors)
    return Catalog(path=path, sensors=sensors)


def _parse_row(path: Path, line: int, row: Mapping[str, str]) -> SensorInfo:
    where = f"{path.name}:{line}"
    sensor_id = (row["sensor_id"] or "").strip()
    if not sensor_id:
        msg = f"{where}: sensor_id is empty"
        raise TopologyError(msg)
    where = f"{where} ({sensor_id})"
    for column in ("kind", "site_id", "district"):
        if not (row[column] or "").strip():
            msg = f"{where}: {column} is empty"
            raise TopologyError(msg)
    return SensorInfo(
        sensor_id=sensor_id,
        kind=row["kind"].strip(),
        site_id=row["site_id"].strip(),
        site_name=(row["site_name"] or "").strip(),
        district=row["district"].strip(),
        lat=_coordinate(where, "lat", row["lat"], 90.0),
        lon=_coordinate(where, "lon", row["lon"], 180.0),
        departments=tuple(d.strip() for d in (row["departments"] or "").split(";") if d.strip()),
        limits=_parse_limits(where, row["limits"] or ""),
    )


def _coordinate(where: str, column: str, text: str, bound: float) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"{where}: {column} {text!r} is not a number"
        raise TopologyError(msg) from None
    if not (math.isfinite(value) and -bound <= value <= bound):
        msg = f"{where}: {column} {value} is outside [-{bound}, {bound}]"
        raise TopologyError(msg)
    return value


def _parse_limits(where: str, text: str) -> dict[str, float]:
    limits: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, number = item.partition("=")
        try:
            value = float(number) if sep else math.nan
        except ValueError:
            value = math.nan
        if not sep or "." not in name or not math.isfinite(value):
            msg = f"{where}: limits entry {item!r} must look like `quantity.name=number`"
            raise TopologyError(msg)
        limits[name.strip()] = value
    return limits


def _check_unique(path: Path, sensors: Sequence[SensorInfo]) -> None:
    seen: set[str] = set()
    for sensor in sensors:
        if sensor.sensor_id in seen:
            msg = f"{path.name}: sensor_id {sensor.sensor_id!r} appears twice"
            raise TopologyError(msg)
        seen.add(sensor.sensor_id)


class SensorIndex:
    """Dense ``sensor_idx`` for one kind: catalog sensors first, unknown ones
    appended as they appear (processed with kind defaults, and counted)."""

    def __init__(self, sensors: Sequence[SensorInfo]) -> None:
        self._ids: list[str] = [s.sensor_id for s in sensors]
        self._index: dict[str, int] = {sid: i for i, sid in enumerate(self._ids)}
        self.n_known = len(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def lookup(self, sensor_ids: Sequence[str], max_unknown: int | None = None) -> list[int]:
        """Indices for ``sensor_ids``, adding unknown ones in order of appearance.

        With ``max_unknown``, at most that many sensors outside the catalog are
        ever added (their state is per-sensor memory); the rest get -1."""
        index = self._index
        found = list(map(index.get, sensor_ids))
        if None not in found:  # every sensor already known: the usual case, one C-level pass
            return found  # type: ignore[return-value]
        new = [s for s in dict.fromkeys(sensor_ids) if s not in index]
        if max_unknown is not None:
            new = new[: max(0, max_unknown - (len(self._ids) - self.n_known))]
        for sid in new:
            index[sid] = len(self._ids)
            self._ids.append(sid)
        return [index.get(sid, -1) for sid in sensor_ids]

    def sensor_id(self, idx: int) -> str:
        return self._ids[idx]
