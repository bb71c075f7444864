"""sinks/cap.py: CAP 1.2 documents, checked against the OASIS schema in ../shared."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from typing import Any

import msgspec
import pytest
import xmlschema

from sinks.base import Alert
from sinks.cap import (
    CAP_NS,
    LEVELS,
    CapConfig,
    CapReference,
    alert_to_cap,
    cap_datetime,
    cap_identifier,
    cap_reference,
)
from streams.pipeline import alert_id
from tests.shared import shared_dir

SCHEMA_PATH = shared_dir() / "schemas" / "cap" / "CAP-v1.2.xsd"
NS = {"cap": CAP_NS}
CONFIG = CapConfig(
    sender="cityops@dg.gov.cn", sender_name="东莞市城市运行管理中心", org_code="44190000000000",
    units={"pm25": "µg/m³"}, event_names={"pm25_high": "PM2.5 超标"},
)


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    assert SCHEMA_PATH.is_file(), f"the OASIS CAP schema is missing at {SCHEMA_PATH}"
    return xmlschema.XMLSchema(str(SCHEMA_PATH))


def make_alert(**changes: Any) -> Alert:
    base = Alert(
        alert_id="a1b2c3d4e5f6a1b2c3d4e5f6", alarm_key="dg-air-001:pm25_high", status="firing",
        severity="critical", level="red", rule="pm25_high", kind="air", sensor_id="dg-air-001",
        site_id="南城站", district="南城街道", lat=23.0205, lon=113.7518, quantity="pm25", value=312.5,
        threshold=250.0, score=312.5, event_ts="2026-11-26T08:00:00.123+08:00", event_time_ms=1_795_651_200_123,
        detected_at="2026-11-26T08:00:01.456+08:00", departments=["environment", "emergency"],
        summary="[critical] PM2.5 high at 南城站",
    )
    return msgspec.structs.replace(base, **changes)


def parse(doc: bytes) -> ET.Element:
    return ET.fromstring(doc)


def text(root: ET.Element, path: str) -> str | None:
    return root.findtext(path, namespaces=NS)


def params(info: ET.Element) -> list[tuple[str | None, str | None]]:
    return [(p.findtext("cap:valueName", namespaces=NS), p.findtext("cap:value", namespaces=NS))
            for p in info.findall("cap:parameter", NS)]


ORIGINAL = make_alert()
REF = cap_reference(ORIGINAL, CONFIG)
UPDATED = make_alert(alert_id="b" * 24, status="updated", severity="major", level="orange",
                     event_ts="2026-11-26T08:05:00+08:00", detected_at="2026-11-26T08:05:02.001+08:00")
RESOLVED = make_alert(alert_id="c" * 24, status="resolved", severity="major", level="orange",
                      event_ts="2026-11-26T08:30:00+08:00", detected_at="2026-11-26T08:30:00.999+08:00")


@pytest.mark.parametrize(
    ("alert", "refs", "msg_type"),
    [(ORIGINAL, (), "Alert"), (UPDATED, (REF,), "Update"), (RESOLVED, (REF,), "Cancel")],
    ids=["Alert", "Update", "Cancel"],
)
@pytest.mark.parametrize("english", [True, False], ids=["zh+en", "zh"])
def test_every_message_type_validates(
    schema: xmlschema.XMLSchema, alert: Alert, refs: tuple[CapReference, ...], msg_type: str, english: bool,
) -> None:
    config = dataclasses.replace(CONFIG, english=english)
    doc = alert_to_cap(alert, config, references=refs)
    schema.validate(doc.decode("utf-8"))
    root = parse(doc)
    assert root.tag == f"{{{CAP_NS}}}alert"
    assert text(root, "cap:msgType") == msg_type
    assert [i.findtext("cap:language", namespaces=NS) for i in root.findall("cap:info", NS)] == (
        ["zh-CN", "en-US"] if english else ["zh-CN"])
    assert doc.startswith(b"<?xml version='1.0' encoding='utf-8'?>")


@pytest.mark.parametrize(
    "config",
    [
        CapConfig(sender="drill@dg.gov.cn", sender_name="演练", org_code="44190000000000", status="Exercise",
                  note="2026 年危化品泄漏演练"),
        CapConfig(sender="t@dg.gov.cn", sender_name="测试", org_code="44190000000000", status="Test"),
        CapConfig(sender="r@dg.gov.cn", sender_name="内部", org_code="44190000000000", scope="Restricted",
                  restriction="emergency command platform only"),
    ],
    ids=["Exercise", "Test", "Restricted"],
)
def test_status_and_scope_are_configurable(schema: xmlschema.XMLSchema, config: CapConfig) -> None:
    doc = alert_to_cap(ORIGINAL, config)
    schema.validate(doc.decode("utf-8"))
    root = parse(doc)
    assert text(root, "cap:status") == config.status
    assert text(root, "cap:scope") == config.scope
    assert text(root, "cap:restriction") == config.restriction
    assert text(root, "cap:note") == config.note


@pytest.mark.parametrize("drop", ["cap:identifier", "cap:info/cap:urgency", "cap:info/cap:area/cap:areaDesc"])
def test_schema_rejects_a_document_missing_a_required_element(schema: xmlschema.XMLSchema, drop: str) -> None:
    root = parse(alert_to_cap(ORIGINAL, CONFIG))
    parent_path, _, _ = drop.rpartition("/")
    parent = root.find(parent_path, NS) if parent_path else root
    assert parent is not None
    child = parent.find(drop.rpartition("/")[2], NS)
    assert child is not None
    parent.remove(child)
    broken = ET.tostring(root, encoding="unicode", default_namespace=CAP_NS)
    assert not schema.is_valid(broken)
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema.validate(broken)


def test_schema_rejects_fractional_seconds_in_sent(schema: xmlschema.XMLSchema) -> None:
    root = parse(alert_to_cap(ORIGINAL, CONFIG))
    sent = root.find("cap:sent", NS)
    assert sent is not None
    sent.text = "2026-11-26T08:00:01.456+08:00"
    assert not schema.is_valid(ET.tostring(root, encoding="unicode", default_namespace=CAP_NS))


@pytest.mark.parametrize(
    ("severity", "level", "cap_severity", "urgency", "certainty"),
    [
        ("critical", "red", "Extreme", "Immediate", "Observed"),
        ("major", "orange", "Severe", "Immediate", "Observed"),
        ("minor", "yellow", "Moderate", "Expected", "Observed"),
        ("warning", "blue", "Minor", "Future", "Observed"),
    ],
)
def test_level_maps_to_cap_severity_urgency_certainty(
    schema: xmlschema.XMLSchema, severity: str, level: str, cap_severity: str, urgency: str, certainty: str,
) -> None:
    doc = alert_to_cap(make_alert(severity=severity, level=level), CONFIG)
    schema.validate(doc.decode("utf-8"))
    for info in parse(doc).findall("cap:info", NS):
        assert info.findtext("cap:severity", namespaces=NS) == cap_severity
        assert info.findtext("cap:urgency", namespaces=NS) == urgency
        assert info.findtext("cap:certainty", namespaces=NS) == certainty
    assert LEVELS[level].severity == cap_severity


def test_cancel_keeps_severity_says_all_clear() -> None:
    info = parse(alert_to_cap(RESOLVED, CONFIG, references=[REF])).find("cap:info", NS)
    assert info is not None
    assert info.findtext("cap:responseType", namespaces=NS) == "AllClear"
    assert info.findtext("cap:urgency", namespaces=NS) == "Past"
    assert info.findtext("cap:severity", namespaces=NS) == "Severe"
    assert (info.findtext("cap:headline", namespaces=NS) or "").startswith("解除橙色预警[Ⅱ级/严重] ")


@pytest.mark.parametrize("alert", [UPDATED, RESOLVED], ids=["Update", "Cancel"])
def test_update_and_cancel_reference_the_original(alert: Alert) -> None:
    root = parse(alert_to_cap(alert, CONFIG, references=[REF]))
    original = parse(alert_to_cap(ORIGINAL, CONFIG))
    expected = f"{text(original, 'cap:sender')},{text(original, 'cap:identifier')},{text(original, 'cap:sent')}"
    assert text(root, "cap:references") == expected
    assert expected == "cityops@dg.gov.cn,44190000000000_20261126080000_a1b2c3d4e5f6a1b2c3d4e5f6,2026-11-26T08:00:01+08:00"


def test_several_references_are_space_separated() -> None:
    later = cap_reference(UPDATED, CONFIG)
    root = parse(alert_to_cap(RESOLVED, CONFIG, references=[REF, later]))
    assert text(root, "cap:references") == f"{REF} {later}"


@pytest.mark.parametrize("alert", [UPDATED, RESOLVED], ids=["Update", "Cancel"])
def test_update_and_cancel_without_the_original_are_rejected(alert: Alert) -> None:
    with pytest.raises(ValueError, match="references"):
        alert_to_cap(alert, CONFIG)


def test_alert_has_no_references() -> None:
    assert text(parse(alert_to_cap(ORIGINAL, CONFIG)), "cap:references") is None


def test_identifier_follows_the_gbt35965_layout() -> None:
    ident = cap_identifier(ORIGINAL, CONFIG)
    org, stamp, tail = ident.split("_")
    assert (org, stamp, tail) == ("44190000000000", "20261126080000", ORIGINAL.alert_id)
    # the event time is written in Beijing time whatever offset the alert carries
    utc = make_alert(event_ts="2026-11-26T00:00:00.123+00:00")
    assert cap_identifier(utc, CONFIG) == ident


def test_redelivered_alert_gives_the_same_document() -> None:
    again = Alert.from_json(ORIGINAL.to_json())
    assert alert_to_cap(again, CONFIG) == alert_to_cap(ORIGINAL, CONFIG)
    assert cap_identifier(again, CONFIG) == cap_identifier(ORIGINAL, CONFIG)


def test_identifiers_unique_per_alarm_event() -> None:
    # two sensors and two level changes in the same second: the sequence digit of the
    # standard could not keep them apart, the alert_id does
    events = [("s1:r", "firing", 0, 1), ("s2:r", "firing", 0, 1), ("s1:r", "updated", 1, 2), ("s1:r", "resolved", 2, 0)]
    idents = {
        cap_identifier(make_alert(alert_id=alert_id(key, status, 1_795_651_200_123, prev, cur), alarm_key=key), CONFIG)
        for key, status, prev, cur in events
    }
    assert len(idents) == len(events)


def test_sent_is_detected_at_in_cap_datetime() -> None:
    assert text(parse(alert_to_cap(ORIGINAL, CONFIG)), "cap:sent") == "2026-11-26T08:00:01+08:00"
    assert text(parse(alert_to_cap(ORIGINAL, CONFIG)), "cap:info/cap:onset") == "2026-11-26T08:00:00+08:00"
    assert cap_datetime("t", "2026-11-26T00:00:00.999Z") == "2026-11-26T00:00:00-00:00"
    assert cap_datetime("t", "2026-11-25T19:30:00-04:30") == "2026-11-25T19:30:00-04:30"


@pytest.mark.parametrize("bad", ["2026-11-26T08:00:00", "yesterday", "2026-11-26T08:00:00+08:00:30"])
def test_times_cap_cannot_carry_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="detected_at"):
        alert_to_cap(make_alert(detected_at=bad), CONFIG)


def test_info_content() -> None:
    info = parse(alert_to_cap(ORIGINAL, CONFIG)).find("cap:info", NS)
    assert info is not None
    assert info.findtext("cap:category", namespaces=NS) == "Env"
    assert info.findtext("cap:event", namespaces=NS) == "PM2.5 超标"
    assert info.findtext("cap:senderName", namespaces=NS) == "东莞市城市运行管理中心"
    assert info.findtext("cap:headline", namespaces=NS) == "红色预警[Ⅰ级/特别严重] [critical] PM2.5 high at 南城站"
    description = info.findtext("cap:description", namespaces=NS) or ""
    assert "312.5 µg/m³" in description and "250.0 µg/m³" in description and "pm25" in description
    assert params(info) == [
        ("alarm_key", "dg-air-001:pm25_high"), ("rule", "pm25_high"), ("sensor_id", "dg-air-001"),
        ("site_id", "南城站"), ("level", "red"), ("severity", "critical"), ("quantity", "pm25"),
        ("value", "312.5"), ("threshold", "250.0"), ("score", "312.5"),
        ("department", "environment"), ("department", "emergency"),
    ]


@pytest.mark.parametrize(
    ("kind", "category"),
    [("air", "Env"), ("hazmat", "Safety"), ("traffic", "Transport"), ("energy", "Infra"), ("water", "Other")],
)
def test_kind_maps_to_category(kind: str, category: str) -> None:
    assert text(parse(alert_to_cap(make_alert(kind=kind), CONFIG)), "cap:info/cap:category") == category


def test_circle_is_lat_lon_radius_km() -> None:
    area = parse(alert_to_cap(ORIGINAL, CONFIG)).find("cap:info/cap:area", NS)
    assert area is not None
    assert area.findtext("cap:areaDesc", namespaces=NS) == "南城街道 / 南城站"
    assert area.findtext("cap:circle", namespaces=NS) == "23.0205,113.7518 0.5"
    wide = CapConfig(sender="a@b", sender_name="x", org_code="44190000000000", radius_km=2.25)
    far = make_alert(lat=-33.8688, lon=-151.2093)
    assert text(parse(alert_to_cap(far, wide)), "cap:info/cap:area/cap:circle") == "-33.8688,-151.2093 2.25"


def test_unknown_location_keeps_area_desc_without_geometry(schema: xmlschema.XMLSchema) -> None:
    doc = alert_to_cap(make_alert(lat=None, lon=None, district="unknown", site_id="dg-air-999"), CONFIG)
    schema.validate(doc.decode("utf-8"))
    area = parse(doc).find("cap:info/cap:area", NS)
    assert area is not None
    assert area.findtext("cap:areaDesc", namespaces=NS) == "unknown / dg-air-999"
    assert area.find("cap:circle", NS) is None and area.find("cap:polygon", NS) is None


def test_polygon_when_given(schema: xmlschema.XMLSchema) -> None:
    ring = [(23.0, 113.7), (23.0, 113.8), (23.1, 113.8), (23.0, 113.7)]
    doc = alert_to_cap(ORIGINAL, CONFIG, polygon=ring)
    schema.validate(doc.decode("utf-8"))
    area = parse(doc).find("cap:info/cap:area", NS)
    assert area is not None
    assert area.findtext("cap:polygon", namespaces=NS) == "23,113.7 23,113.8 23.1,113.8 23,113.7"
    with pytest.raises(ValueError, match="polygon"):
        alert_to_cap(ORIGINAL, CONFIG, polygon=ring[:3])


def test_no_threshold_is_omitted() -> None:
    info = parse(alert_to_cap(make_alert(threshold=None), CONFIG)).find("cap:info", NS)
    assert info is not None
    assert "threshold" not in dict(params(info))
    assert "无固定阈值" in (info.findtext("cap:description", namespaces=NS) or "")


def test_markup_in_text_is_escaped(schema: xmlschema.XMLSchema) -> None:
    doc = alert_to_cap(make_alert(summary="a < b & c > d", site_id="<site>"), CONFIG)
    schema.validate(doc.decode("utf-8"))
    assert b"<site>" not in doc
    assert text(parse(doc), "cap:info/cap:area/cap:areaDesc") == "南城街道 / <site>"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"summary": "bell\x07"}, "summary"),
        ({"site_id": "a\x00b"}, "site_id"),
        ({"departments": ["ok", "\ufffe"]}, r"departments\[1\]"),
        ({"district": ""}, "district"),
        ({"value": float("nan")}, "value"),
        ({"threshold": float("inf")}, "threshold"),
        ({"lat": 91.0}, "lat/lon"),
        ({"lat": 23.0, "lon": None}, "lat/lon"),
        ({"level": "purple"}, "level"),
        ({"level": "blue"}, "level"),  # disagrees with severity critical
        ({"severity": "info"}, "severity"),
        ({"status": "acked"}, "status"),
        ({"alert_id": "a b"}, "alert_id"),
        ({"event_ts": "2026-11-26T08:00:00"}, "event_ts"),
    ],
)
def test_what_cap_cannot_carry_is_rejected_by_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        alert_to_cap(make_alert(**changes), CONFIG)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sender": "city ops"}, "sender"),
        ({"sender": "a,b"}, "sender"),
        ({"org_code": "4419"}, "org_code"),
        ({"status": "Actually"}, "status"),
        ({"scope": "Private"}, "scope"),
        ({"scope": "Restricted"}, "restriction"),
        ({"radius_km": 0.0}, "radius_km"),
        ({"sender_name": " "}, "sender_name"),
    ],
)
def test_bad_config_is_rejected_by_field(changes: dict[str, Any], field: str) -> None:
    kwargs: dict[str, Any] = {"sender": "a@b", "sender_name": "x", "org_code": "44190000000000", **changes}
    with pytest.raises(ValueError, match=f"^{field}"):
        CapConfig(**kwargs)


def test_reference_tokens_are_checked() -> None:
    with pytest.raises(ValueError, match="references.identifier"):
        CapReference("a@b", "has space", "2026-11-26T08:00:01+08:00")
