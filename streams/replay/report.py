"""The incident report of a replay: ``report.html`` (self-contained: inline SVG plots,
no scripts, no network) and ``report.json`` with the same facts.

Per alarm incident of the window: the readings of its sensor with the route's set
points and the alarm's events marked, the alarm's timeline (the replay's events, and
the live alarm store's acknowledgement: who and when, if the live system has it),
who would have been notified and when, the time from the first abnormal reading to
the alarm and to the acknowledgement, and the sensors nearby (same site, same
district) with what they did in the window.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from sinks.alarm_store import Alarm, AlarmStore
from sinks.base import Alert
from streams.archive.rows import archive_decoders
from streams.replay.diff import Incident, incidents, within
from streams.replay.run import ReplayOptions, ReplayOutcome
from streams.settings import Settings
from streams.timeparse import parse_offset
from streams.topology import Topology

_COLOURS = {"critical": "#c0392b", "major": "#e67e22", "minor": "#d4ac0d", "warning": "#2e86c1"}


@dataclass(frozen=True, slots=True)
class Series:
    sensor_id: str
    quantity: str
    times_ms: np.ndarray
    values: np.ndarray


def _readings(topology: Topology, options: ReplayOptions, outcome: ReplayOutcome,
              sensors: set[str]) -> dict[tuple[str, str], Series]:
    """(sensor, quantity) -> the window's readings, in event-time order."""
    decoders = archive_decoders(topology)
    found: dict[tuple[str, str], Series] = {}
    for window in outcome.windows:
        if not window.messages:
            continue
        parsed = decoders[window.kind].parse(window.messages, now_ms=0)
        ids = np.asarray(parsed.sensor_ids, dtype=object)
        for sensor in sensors & set(parsed.sensor_ids):
            rows = np.flatnonzero((ids == sensor) & (parsed.event_ms >= options.from_ms))  # not the warm-up
            order = rows[np.argsort(parsed.event_ms[rows], kind="stable")]
            for q, quantity in enumerate(topology.quantities(window.kind)):
                values = parsed.values[order, q]
                if np.isfinite(values).any():
                    found[(sensor, quantity)] = Series(sensor, quantity, parsed.event_ms[order], values)
    return found


def _setpoints(outcome: ReplayOutcome, alert: Alert) -> list[tuple[str, float]]:
    pipeline = outcome.pipelines.get(alert.kind)
    if pipeline is None:
        return []
    for route in pipeline.routes:
        spec = route.evaluator.spec
        if spec.rule != alert.rule:
            continue
        idx = pipeline.index.lookup([alert.sensor_id])[0]
        points = [(level.severity.value, route.evaluator.setpoint(idx, k + 1)) for k, level in enumerate(spec.levels)]
        return [(severity, float(p)) for severity, p in points if p is not None and np.isfinite(p)]
    return []


def _plotted_quantity(topology: Topology, alert: Alert, readings: dict[tuple[str, str], Series]) -> str:
    """The alert's quantity when it is a reading's, else its detector's input quantity
    (a CUSUM score is plotted as the gas reading it watches)."""
    if (alert.sensor_id, alert.quantity) in readings:
        return alert.quantity
    route = next((r for r in topology.spec.routes if r.rule == alert.rule), None)
    detector = next((d for d in topology.spec.detectors if route is not None and d.name == route.detector), None)
    wanted = detector.params.get("quantity") if detector is not None else None
    if isinstance(wanted, str):
        return wanted
    return next((q for (sensor, q) in readings if sensor == alert.sensor_id), alert.quantity)


def _first_past(series: Series | None, setpoints: Sequence[tuple[str, float]], direction: str,
                before_ms: int, since_ms: int) -> int | None:
    """Event time of the first reading past the lowest set point, in the unbroken run of
    such readings that ends at the alarm."""
    if series is None or not setpoints:
        return None
    lowest = min(p for _, p in setpoints) if direction == "above" else max(p for _, p in setpoints)
    past = series.values > lowest if direction == "above" else series.values < lowest
    return _run_start(series, past, before_ms, since_ms)


def _first_abnormal(series: Series | None, before_ms: int, since_ms: int) -> int | None:
    """Event time of the first reading that left the sensor's own normal band (median
    +- 5 robust sd of its readings before the run-up), in the unbroken run of such
    readings that ends at the alarm: when the sensors first said something was wrong."""
    if series is None:
        return None
    earlier = series.values[(series.times_ms < before_ms) & (series.times_ms >= since_ms)]
    earlier = earlier[np.isfinite(earlier)]
    if earlier.size < 5:
        return None  # no baseline to judge by
    median = float(np.median(earlier))
    spread = max(5 * 1.4826 * float(np.median(np.abs(earlier - median))), 0.05 * max(abs(median), 1.0))
    outside = np.abs(series.values - median) > spread
    return _run_start(series, outside, before_ms, since_ms)


def _run_start(series: Series, flagged: np.ndarray, before_ms: int, since_ms: int) -> int | None:
    times = series.times_ms
    first = None
    for i in np.flatnonzero((times <= before_ms) & (times >= since_ms))[::-1]:
        if not flagged[i]:
            break
        first = int(times[i])
    return first


def _svg(series: Series | None, alert_events: Sequence[Alert], setpoints: Sequence[tuple[str, float]],
         neighbours: Sequence[Series], tz: timezone, title: str, window: tuple[int, int],
         png: Path | None = None) -> str:
    """The plot as inline SVG (and as a PNG file when ``png`` is given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=96)
    for other in neighbours:
        ax.plot(_days(other.times_ms), other.values, lw=0.8, color="#bbbbbb", label=f"{other.sensor_id} (same site)")
    if series is not None:
        ax.plot(_days(series.times_ms), series.values, lw=1.4, color="#1f4e79", label=series.sensor_id)
    for severity, point in setpoints:
        ax.axhline(point, ls="--", lw=0.9, color=_COLOURS.get(severity, "#888"), label=f"{severity} set point {point:g}")
    for alert in alert_events:
        colour = "#27ae60" if alert.status == "resolved" else _COLOURS.get(alert.severity, "#888")
        x = alert.event_time_ms / 86_400_000.0
        ax.axvline(x, color=colour, lw=1.2)
        ax.annotate(f"{alert.status} {alert.severity}", (x, 0.98), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=7, color=colour)
    ax.set_title(title, fontsize=10)
    if series is None or len(series.times_ms) == 0:
        ax.set_xlim(float(_days(np.array(window[0]))), float(_days(np.array(window[1]))))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=tz))  # type: ignore[no-untyped-call]
    ax.legend(fontsize=7, loc="upper left", framealpha=0.8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata={"Date": None})  # no date: the same input, the same file
    if png is not None:
        fig.savefig(png, format="png", metadata={"Software": None})
    plt.close(fig)
    svg = out.getvalue()
    return svg[svg.index("<svg"):]


def _days(ms: np.ndarray) -> np.ndarray:
    """Epoch ms -> matplotlib's date numbers (days since 1970-01-01 UTC)."""
    return np.asarray(ms, dtype=np.float64) / 86_400_000.0


async def _live_alarms(settings: Settings, keys: Sequence[str]) -> dict[str, Alarm]:
    """The live alarm store's newest occurrence per alarm key (read only)."""
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        store = AlarmStore(client, settings.namespace)
        found = await store.get_many(list(keys))
        return {key: alarm for key, alarm in zip(keys, found, strict=True) if alarm is not None}
    finally:
        await client.aclose()


async def write_report(directory: Path, settings: Settings, topology: Topology, options: ReplayOptions,
                       outcome: ReplayOutcome) -> Path:
    tz = parse_offset(topology.spec.timezone)
    found = incidents(outcome.alerts)
    catalog = {s.sensor_id: s for s in topology.catalog.sensors}
    involved = {i.sensor_id for i in found}
    same_site = {s.sensor_id for i in found for s in topology.catalog.sensors
                 if s.site_id == i.site_id and s.sensor_id != i.sensor_id}
    readings = _readings(topology, options, outcome, involved | same_site)
    live = await _live_alarms(settings, sorted({i.alarm_key for i in found}))
    facts = [_incident_facts(i, options, outcome, readings, catalog, live, topology) for i in found]
    report = {
        "window": {"from": _iso(options.from_ms, tz), "to": _iso(options.to_ms, tz),
                   "kinds": [w.kind for w in outcome.windows],
                   "sources": {w.kind: {"source": w.source, "clock": w.clock, "messages": w.n_messages}
                               for w in outcome.windows}},
        "topology": str(topology.path),
        "readings": outcome.record.n_readings,
        "dead_letters": outcome.record.dead_by_reason,
        "incidents": facts,
        "notifications_by_department": _by_department(outcome),
        "diff": outcome.diff.to_dict() if outcome.diff is not None else None,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plots: list[str] = []
    for incident, fact in zip(found, facts, strict=True):
        series = readings.get((incident.sensor_id, fact["quantity"]))
        neighbours = [s for (sid, q), s in readings.items() if sid in same_site and sid != incident.sensor_id
                      and catalog[sid].site_id == incident.site_id and q == fact["quantity"]]
        events = [a for a in outcome.alerts if a.alarm_key == incident.alarm_key
                  and incident.start_ms <= a.event_time_ms <= (incident.end_ms or 2**62)]
        plots.append(_svg(series, events, [(s, p) for s, p in fact["set_points"]], neighbours, tz,
                          f"{incident.sensor_id} {fact['quantity']} · {incident.rule}", (options.from_ms, options.to_ms),
                          directory / f"{len(plots) + 1:02d}-{incident.sensor_id}-{incident.rule}.png"))
    page = directory / "report.html"
    page.write_text(_html(report, plots), encoding="utf-8")
    return page


def _incident_facts(incident: Incident, options: ReplayOptions, outcome: ReplayOutcome, readings: dict[tuple[str, str], Series],
                    catalog: dict[str, Any], live: dict[str, Alarm], topology: Topology) -> dict[str, Any]:
    tz = parse_offset(topology.spec.timezone)
    events = [a for a in outcome.alerts if a.alarm_key == incident.alarm_key
              and incident.start_ms <= a.event_time_ms <= (incident.end_ms or 2**62)]
    firing = events[0]
    quantity = _plotted_quantity(topology, firing, readings)
    # set points are in the unit of the route's score: drawn only over that quantity
    setpoints = _setpoints(outcome, firing) if quantity == firing.quantity else []
    route = next((r for r in topology.spec.routes if r.rule == incident.rule), None)
    direction = route.direction if route is not None else "above"
    series = readings.get((incident.sensor_id, quantity))
    previous_end = max((i.end_ms or 0 for i in incidents(outcome.alerts)
                        if i.alarm_key == incident.alarm_key and (i.end_ms or 0) <= incident.start_ms), default=0)
    past = _first_past(series, setpoints, direction, incident.start_ms, previous_end)
    abnormal = _first_abnormal(series, incident.start_ms, previous_end)
    abnormal = past if abnormal is None or (past is not None and past < abnormal) else abnormal
    notified = [n for n in outcome.notifications if n.alarm_key == incident.alarm_key
                and any(n.alert_id == a.alert_id for a in events)]
    alarm = live.get(incident.alarm_key)
    acked = alarm if alarm is not None and alarm.first_seen_ms == incident.start_ms and alarm.acked_at_ms else None
    info = catalog.get(incident.sensor_id)
    site = [s for s in topology.catalog.sensors if info is not None and s.site_id == info.site_id
            and s.sensor_id != incident.sensor_id]
    district = [s for s in topology.catalog.sensors if info is not None and s.district == info.district
                and s.site_id != info.site_id]
    alarmed = {a.sensor_id for a in within(outcome.record.alerts, options.from_ms, options.to_ms)}
    return {
        "alarm_key": incident.alarm_key, "rule": incident.rule, "sensor_id": incident.sensor_id,
        "site_id": incident.site_id, "site_name": info.site_name if info else None,
        "district": info.district if info else None, "quantity": quantity, "score": firing.quantity,
        "peak_severity": incident.peak_severity, "start": _iso(incident.start_ms, tz),
        "end": _iso(incident.end_ms, tz) if incident.end_ms is not None else None,
        "set_points": [[s, p] for s, p in setpoints], "direction": direction,
        "timeline": sorted(
            [{"event_time": a.event_ts, "detected_at": a.detected_at, "status": a.status,
              "severity": a.severity, "value": a.value, "alert_id": a.alert_id} for a in events]
            + ([{"event_time": _iso(acked.acked_at_ms or 0, tz), "status": "acknowledged (live)",
                 "by": acked.acked_by}] if acked else []),
            key=lambda t: str(t["event_time"])),  # one offset throughout: ISO strings sort by time
        "first_abnormal_reading": _iso(abnormal, tz) if abnormal is not None else None,
        "first_past_set_point": _iso(past, tz) if past is not None else None,
        "abnormal_to_alarm_s": (incident.start_ms - abnormal) / 1000 if abnormal is not None else None,
        "abnormal_to_ack_s": ((acked.acked_at_ms or 0) - abnormal) / 1000 if acked and abnormal is not None else None,
        "notifications": [{"receiver": n.receiver, "status": n.status, "severity": n.severity,
                           "departments": list(n.departments), "at": _iso(n.at_ms, tz),
                           "after_alarm_s": (n.at_ms - incident.start_ms) / 1000} for n in notified],
        "nearby": [{"sensor_id": s.sensor_id, "kind": s.kind, "where": where, "alarmed": s.sensor_id in alarmed}
                   for where, group in (("same site", site), ("same district", district)) for s in group],
    }


def _by_department(outcome: ReplayOutcome) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for n in outcome.notifications:
        for department in n.departments or ("(none)",):
            row = table.setdefault(department, {})
            row[n.receiver] = row.get(n.receiver, 0) + 1
    return table


def _iso(ms: int | None, tz: timezone) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="milliseconds")


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;font-size:.9em;text-align:left}
th{background:#f3f3f3}h2{border-top:2px solid #1f4e79;padding-top:.6em}.muted{color:#777}"""


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(report: dict[str, Any], plots: Sequence[str]) -> str:
    window = report["window"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>cityops incident report {html.escape(window['from'])}"
             f"</title><style>{_STYLE}</style></head><body>",
             f"<h1>Incident report: {html.escape(window['from'])} to {html.escape(window['to'])}</h1>",
             f"<p>Replayed with <code>{html.escape(report['topology'])}</code>: {report['readings']:,} readings. "
             f"Dead letters: {html.escape(json.dumps(report['dead_letters']))}.</p>",
             _table(["kind", "source", "clock", "messages"],
                    [[k, v["source"], v["clock"], v["messages"]] for k, v in window["sources"].items()])]
    diff = report["diff"]
    if diff is not None:
        verdict = "identical to the live alarms" if diff["identical"] else "different from the live alarms"
        parts.append(f"<p><b>Replay vs. live:</b> {verdict} ({diff['live_events']} live events, "
                     f"{diff['replay_events']} replayed).</p>")
        rows = ([["gained", g["alarm_key"], "", _utc(g["start_ms"]), ""] for g in diff["gained"]]
                + [["lost", g["alarm_key"], _utc(g["start_ms"]), "", ""] for g in diff["lost"]]
                + [["shifted", s["alarm_key"], _utc(s["live_start_ms"]), _utc(s["replay_start_ms"]),
                    f"{s['lead_ms'] / 1000:+.1f} s"] for s in diff["shifted"]])
        if rows:
            parts.append(_table(["change", "alarm", "live start", "replay start", "lead time (+: earlier)"], rows))
    parts.append("<h2>Notifications per department (recorded by the replay, not sent)</h2>")
    departments = report["notifications_by_department"]
    receivers = sorted({r for row in departments.values() for r in row})
    parts.append(_table(["department", *receivers], [[d, *[row.get(r, 0) for r in receivers]]
                                                     for d, row in sorted(departments.items())]))
    if not report["incidents"]:
        parts.append("<p class='muted'>No alarm in this window.</p>")
    for fact, svg in zip(report["incidents"], plots, strict=True):
        parts.append(f"<h2>{html.escape(fact['alarm_key'])} · {html.escape(fact['peak_severity'])}</h2>")
        parts.append(f"<p>{html.escape(str(fact['site_name'] or fact['site_id']))}, {html.escape(str(fact['district']))}. "
                     f"Alarm from {html.escape(fact['start'])} to {html.escape(str(fact['end'] or 'the end of the window'))}. "
                     f"First abnormal reading (out of its own normal band): "
                     f"{html.escape(str(fact['first_abnormal_reading'] or 'n/a'))}; first past a set point: "
                     f"{html.escape(str(fact['first_past_set_point'] or 'n/a'))}; from the first abnormal reading "
                     f"to the alarm: {fact['abnormal_to_alarm_s'] if fact['abnormal_to_alarm_s'] is not None else 'n/a'} s; "
                     f"to the acknowledgement: {fact['abnormal_to_ack_s'] if fact['abnormal_to_ack_s'] is not None else 'not acknowledged live'}"
                     f"{' s' if fact['abnormal_to_ack_s'] is not None else ''}.</p>")
        parts.append(svg)
        parts.append(_table(["event time", "status", "severity", "value", "by / alert id"],
                            [[t["event_time"], t["status"], t.get("severity"), t.get("value"),
                              t.get("by") or t.get("alert_id")] for t in fact["timeline"]]))
        parts.append(_table(["receiver", "status", "severity", "departments", "at (replay clock)", "after the alarm, s"],
                            [[n["receiver"], n["status"], n["severity"], ", ".join(n["departments"]), n["at"],
                              n["after_alarm_s"]] for n in fact["notifications"]]))
        parts.append(_table(["nearby sensor", "kind", "where", "alarmed in the window"],
                            [[n["sensor_id"], n["kind"], n["where"], "yes" if n["alarmed"] else "no"]
                             for n in fact["nearby"]]))
    parts.append("</body></html>\n")
    return "\n".join(parts)
