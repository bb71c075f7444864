"""An `Alert` as an OASIS CAP 1.2 message (design.md "Outputs"), pure: no I/O.

``alert_to_cap(alert, config, references=...)`` returns the UTF-8 XML bytes of one
``<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">``, built with ElementTree.

Message type: ``firing`` -> Alert, ``updated`` -> Update, ``resolved`` -> Cancel.
Update and Cancel must name the original message in ``<references>``
("sender,identifier,sent"; get it with ``cap_reference(original_alert, config)``).

Identifier (GB/T 35965.1-2018 Annex A style, ``ZZZZZZDDDUUUXX_YYYYMMDDhhmmss_N``)::

    <org_code: 14 digits>_<event time, Beijing time, YYYYMMDDhhmmss>_<alert_id>

``org_code`` is the issuer: 6-digit admin division (GB/T 2260) + 3-digit sector
(GB/T 4657) + 3-digit unit (default 000) + 2-digit extension (default 00). The
time is the reading's event time (``event_ts``) in UTC+08:00. The standard's
1-digit sequence ``N`` cannot keep thousands of sensors alarming in one second
apart, so it is replaced by the alert's ``alert_id`` (a digest of alarm key,
status, event time and level change): the identifier is a function of the alert
alone (a redelivered or replayed alert gives the same one) and differs for every
alarm event. It is therefore longer than the standard's 31 characters.

Warning level -> CAP (Emergency Response Law colours; domain-reference 2.2)::

    level   grade       CAP severity  urgency    certainty  (internal severity)
    red     I   特别严重  Extreme       Immediate  Observed   critical
    orange  II  严重      Severe        Immediate  Observed   major
    yellow  III 较重      Moderate      Expected   Observed   minor
    blue    IV  一般      Minor         Future     Observed   warning

Certainty is Observed throughout: every alarm is raised by a measured reading
crossing a set point. A Cancel keeps the severity of the level it clears, with
urgency Past and responseType AllClear.

Sensor kind -> CAP category: air Env, hazmat Safety, traffic Transport, energy
Infra, any other kind Other.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Final, Literal

from sinks.base import Alert
from streams.topology_spec import Severity

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
BEIJING: Final = timezone(timedelta(hours=8))

CapStatus = Literal["Actual", "Exercise", "Test", "Draft"]
CapScope = Literal["Public", "Restricted"]


@dataclass(frozen=True, slots=True)
class LevelMapping:
    severity: str
    urgency: str
    certainty: str
    grade_zh: str  # headline mark of the zh-CN info


LEVELS: Final[Mapping[str, LevelMapping]] = {
    "red": LevelMapping("Extreme", "Immediate", "Observed", "红色预警[Ⅰ级/特别严重]"),
    "orange": LevelMapping("Severe", "Immediate", "Observed", "橙色预警[Ⅱ级/严重]"),
    "yellow": LevelMapping("Moderate", "Expected", "Observed", "黄色预警[Ⅲ级/较重]"),
    "blue": LevelMapping("Minor", "Future", "Observed", "蓝色预警[Ⅳ级/一般]"),
}
CATEGORIES: Final[Mapping[str, str]] = {
    "air": "Env", "hazmat": "Safety", "traffic": "Transport", "energy": "Infra",
}
_XML_DECLARATION = b"<?xml version='1.0' encoding='utf-8'?>\n"  # as ET.tostring(encoding='utf-8') writes it
MSG_TYPES: Final[Mapping[str, str]] = {"firing": "Alert", "updated": "Update", "resolved": "Cancel"}

_TOKEN = re.compile(r"[^\s,<&]+")  # CAP: sender/identifier have no spaces, commas, '<' or '&'
_ORG_CODE = re.compile(r"\d{14}")
_ALERT_ID = re.compile(r"[0-9A-Za-z-]+")
# characters XML 1.0 cannot carry at all (not even escaped)
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class CapReference:
    """One earlier message, as CAP's ``references`` names it."""

    sender: str
    identifier: str
    sent: str

    def __post_init__(self) -> None:
        for name in ("sender", "identifier", "sent"):
            _check_token(f"references.{name}", getattr(self, name))

    def __str__(self) -> str:
        return f"{self.sender},{self.identifier},{self.sent}"


@dataclass(frozen=True, slots=True)
class CapConfig:
    """Who issues the messages and how (constructor args = config)."""

    sender: str  # e.g. "cityops@dg.gov.cn"
    sender_name: str  # e.g. "东莞市城市运行管理中心"
    org_code: str  # GB/T 35965 issuer code, 14 digits
    status: CapStatus = "Actual"  # Exercise / Test for drills
    scope: CapScope = "Public"
    restriction: str | None = None  # required when scope is Restricted
    note: str | None = None  # e.g. the exercise's name
    radius_km: float = 0.5
    english: bool = True  # add an en-US info after the zh-CN one
    event_names: Mapping[str, str] = field(default_factory=dict)  # rule -> human name
    units: Mapping[str, str] = field(default_factory=dict)  # quantity -> unit

    def __post_init__(self) -> None:
        _check_token("sender", self.sender)
        _check_text("sender_name", self.sender_name, required=True)
        if not _ORG_CODE.fullmatch(self.org_code):
            msg = f"org_code: {self.org_code!r} is not 14 digits (GB/T 2260 + GB/T 4657 + unit + extension)"
            raise ValueError(msg)
        if self.status not in ("Actual", "Exercise", "Test", "Draft"):
            msg = f"status: {self.status!r} is not one of Actual, Exercise, Test, Draft"
            raise ValueError(msg)
        if self.scope not in ("Public", "Restricted"):
            msg = f"scope: {self.scope!r} is not Public or Restricted"
            raise ValueError(msg)
        if self.scope == "Restricted" and not self.restriction:
            msg = "restriction: required when scope is Restricted"
            raise ValueError(msg)
        _check_text("restriction", self.restriction)
        _check_text("note", self.note)
        if not (math.isfinite(self.radius_km) and self.radius_km > 0):
            msg = f"radius_km: {self.radius_km} must be a positive number"
            raise ValueError(msg)


def cap_identifier(alert: Alert, config: CapConfig) -> str:
    """``<org_code>_<event time YYYYMMDDhhmmss, UTC+8>_<alert_id>`` (module docstring)."""
    if not _ALERT_ID.fullmatch(alert.alert_id):
        msg = f"alert_id: {alert.alert_id!r} must be letters, digits and '-' only"
        raise ValueError(msg)
    stamp = _parse_time("event_ts", alert.event_ts).astimezone(BEIJING).strftime("%Y%m%d%H%M%S")
    return f"{config.org_code}_{stamp}_{alert.alert_id}"


def cap_reference(alert: Alert, config: CapConfig) -> CapReference:
    """How later messages name the message made from ``alert``."""
    return CapReference(config.sender, cap_identifier(alert, config), cap_datetime("detected_at", alert.detected_at))


def cap_datetime(name: str, text: str) -> str:
    """RFC 3339 -> CAP dateTime: whole seconds, explicit offset, UTC as -00:00."""
    when = _parse_time(name, text).replace(microsecond=0)
    offset = when.utcoffset()
    if offset is None or offset.microseconds or offset.seconds % 60:
        msg = f"{name}: {text!r} has an offset CAP cannot carry (whole minutes only)"
        raise ValueError(msg)
    out = when.isoformat()
    return out[:-6] + "-00:00" if out.endswith("+00:00") else out


def alert_to_cap(
    alert: Alert,
    config: CapConfig,
    *,
    references: Sequence[CapReference] = (),
    polygon: Sequence[tuple[float, float]] | None = None,
) -> bytes:
    """The CAP 1.2 document for ``alert``; Update/Cancel need ``references`` (the original first).

    Raises ValueError naming the field when the alert holds what CAP cannot carry.
    """
    msg_type = MSG_TYPES.get(alert.status)
    if msg_type is None:
        msg = f"status: {alert.status!r} is not firing, updated or resolved"
        raise ValueError(msg)
    if msg_type != "Alert" and not references:
        msg = f"references: a {msg_type} message must reference the original alert"
        raise ValueError(msg)
    _check_fields(alert)
    mapping = _level(alert)
    root = ET.Element(_q("alert"))
    _sub(root, "identifier", cap_identifier(alert, config))
    _sub(root, "sender", config.sender)
    _sub(root, "sent", cap_datetime("detected_at", alert.detected_at))
    _sub(root, "status", config.status)
    _sub(root, "msgType", msg_type)
    _sub(root, "scope", config.scope)
    if config.restriction:
        _sub(root, "restriction", config.restriction)
    if config.note:
        _sub(root, "note", config.note)
    if references:
        _sub(root, "references", " ".join(str(r) for r in references))
    for language in ("zh-CN", "en-US") if config.english else ("zh-CN",):
        info = _info(root, alert, config, mapping, language)
        info.append(_area(alert, config, polygon))
    # serialize to str and encode once: ET's utf-8 writer goes through a codec per
    # write call and is 1.4x slower for the same bytes
    return _XML_DECLARATION + ET.tostring(root, encoding="unicode", default_namespace=CAP_NS).encode()


def _level(alert: Alert) -> LevelMapping:
    mapping = LEVELS.get(alert.level)
    if mapping is None:
        msg = f"level: {alert.level!r} is not one of {sorted(LEVELS)}"
        raise ValueError(msg)
    try:
        colour = Severity(alert.severity).colour
    except ValueError:
        msg = f"severity: {alert.severity!r} is not one of {[s.value for s in Severity]}"
        raise ValueError(msg) from None
    if colour != alert.level:
        msg = f"level: {alert.level!r} disagrees with severity {alert.severity!r} ({colour})"
        raise ValueError(msg)
    return mapping


def _info(
    root: ET.Element, alert: Alert, config: CapConfig, mapping: LevelMapping, language: str,
) -> ET.Element:
    cancel = alert.status == "resolved"
    zh = language == "zh-CN"
    info = ET.SubElement(root, _q("info"))
    _sub(info, "language", language)
    _sub(info, "category", CATEGORIES.get(alert.kind, "Other"))
    _sub(info, "event", config.event_names.get(alert.rule) or alert.rule, "event")
    if cancel:
        _sub(info, "responseType", "AllClear")
    _sub(info, "urgency", "Past" if cancel else mapping.urgency)
    _sub(info, "severity", mapping.severity)
    _sub(info, "certainty", mapping.certainty)
    _sub(info, "onset", cap_datetime("event_ts", alert.event_ts))
    _sub(info, "senderName", config.sender_name)
    headline = f"{'解除' if cancel else ''}{mapping.grade_zh} {alert.summary}" if zh else alert.summary
    _sub(info, "headline", headline, "summary")
    _sub(info, "description", _description(alert, config, zh), "description")
    for name, value in _parameters(alert):
        param = ET.SubElement(info, _q("parameter"))
        _sub(param, "valueName", name)
        _sub(param, "value", value, name)
    return info


def _description(alert: Alert, config: CapConfig, zh: bool) -> str:
    unit = config.units.get(alert.quantity, "")
    value = f"{_number('value', alert.value)} {unit}".rstrip()
    threshold = f"{_number('threshold', alert.threshold)} {unit}".rstrip() if alert.threshold is not None else None
    if zh:
        limit = f"，阈值 {threshold}" if threshold else "，无固定阈值"
        return f"{alert.quantity} 读数 {value}{limit}；站点 {alert.site_id}，传感器 {alert.sensor_id}，{alert.district}。"
    limit = f", threshold {threshold}" if threshold else ", no fixed threshold"
    return f"{alert.quantity} reading {value}{limit}; site {alert.site_id}, sensor {alert.sensor_id}, {alert.district}."


def _parameters(alert: Alert) -> list[tuple[str, str]]:
    out = [
        ("alarm_key", alert.alarm_key), ("rule", alert.rule), ("sensor_id", alert.sensor_id),
        ("site_id", alert.site_id), ("level", alert.level), ("severity", alert.severity),
        ("quantity", alert.quantity), ("value", _number("value", alert.value)),
    ]
    if alert.threshold is not None:
        out.append(("threshold", _number("threshold", alert.threshold)))
    out.append(("score", _number("score", alert.score)))
    out.extend(("department", d) for d in alert.departments)
    return out


def _area(alert: Alert, config: CapConfig, polygon: Sequence[tuple[float, float]] | None) -> ET.Element:
    area = ET.Element(_q("area"))
    _sub(area, "areaDesc", f"{alert.district} / {alert.site_id}", "district/site_id")
    if polygon is not None:
        _sub(area, "polygon", _polygon(polygon))
    if (alert.lat is None) != (alert.lon is None):
        msg = f"lat/lon: give both or neither (lat={alert.lat}, lon={alert.lon})"
        raise ValueError(msg)
    if alert.lat is not None and alert.lon is not None:
        point = _point("lat/lon", alert.lat, alert.lon)
        _sub(area, "circle", f"{point} {_fixed(config.radius_km)}")
    return area


def _polygon(points: Sequence[tuple[float, float]]) -> str:
    if len(points) < 4 or tuple(points[0]) != tuple(points[-1]):
        msg = "polygon: needs at least 4 points, the first and last the same"
        raise ValueError(msg)
    return " ".join(_point(f"polygon[{i}]", lat, lon) for i, (lat, lon) in enumerate(points))


def _point(name: str, lat: float, lon: float) -> str:
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        msg = f"{name}: ({lat}, {lon}) is not a WGS 84 latitude, longitude"
        raise ValueError(msg)
    return f"{_fixed(lat)},{_fixed(lon)}"


def _fixed(x: float) -> str:
    """Decimal degrees / km without exponent: 6 places, trailing zeros dropped."""
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _number(name: str, x: float) -> str:
    if not math.isfinite(x):
        msg = f"{name}: {x} is not a finite number"
        raise ValueError(msg)
    return repr(float(x))


def _parse_time(name: str, text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        msg = f"{name}: {text!r} is not an RFC 3339 timestamp"
        raise ValueError(msg) from None
    if when.tzinfo is None:
        msg = f"{name}: {text!r} has no UTC offset"
        raise ValueError(msg)
    return when


_TEXT_FIELDS: Final = ("alarm_key", "rule", "kind", "sensor_id", "site_id", "district", "quantity", "summary")


def _check_fields(alert: Alert) -> None:
    """Every free-text field of the alert: non-empty and representable in XML 1.0."""
    for name in _TEXT_FIELDS:
        _check_text(name, getattr(alert, name), required=True)
    for i, department in enumerate(alert.departments):
        _check_text(f"departments[{i}]", department, required=True)


def _check_token(name: str, text: str) -> None:
    if not _TOKEN.fullmatch(text) or _XML_ILLEGAL.search(text):
        msg = f"{name}: {text!r} must be non-empty, without spaces, commas, '<' or '&'"
        raise ValueError(msg)


def _check_text(name: str, text: str | None, *, required: bool = False) -> None:
    if text is None:
        return
    if required and not text.strip():
        msg = f"{name}: must not be empty"
        raise ValueError(msg)
    bad = _XML_ILLEGAL.search(text)
    if bad:
        msg = f"{name}: contains {bad.group()!r}, which XML 1.0 cannot carry"
        raise ValueError(msg)


def _q(tag: str) -> str:
    return f"{{{CAP_NS}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str, name: str | None = None) -> ET.Element:
    """A child element holding ``text``, checked under the alert field ``name`` (default: tag)."""
    _check_text(name or tag, text, required=True)
    child = ET.SubElement(parent, _q(tag))
    child.text = text
    return child
