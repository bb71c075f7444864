"""The Grafana dashboards, as code: one source of truth for `dashboards/*.json`.

`cityops dashboards build` writes the JSON files (a test fails if the committed files
differ from what this module builds); `cityops dashboards push --url URL` provisions the
Prometheus data source and every dashboard through grafana-client, idempotently
(the data source is created or updated by its uid; dashboards are saved with
``overwrite``).

Every query reads metrics the worker exports (streams/metrics.py, streams/latest.py,
streams/live_alarms.py); a test checks the names. The boards never need a per-sensor
counter: current values come from ``cityops_latest_value`` / ``cityops_latest_score``
(catalog sensors only) and the map from ``cityops_live_alarm`` (live alarms only).
Several workers export the same live alarm, hence ``max by (...)`` before counting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATASOURCE_UID = "cityops-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39
LIVE = "max by (kind, rule, severity, level, sensor_id, site_id, district, lat, lon) (cityops_live_alarm)"
SEVERITY_COLOURS = {"critical": "red", "major": "orange", "minor": "yellow", "warning": "blue"}

Panel = dict[str, Any]


def _target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False, ref: str = "A") -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "refId": ref, "legendFormat": legend}
    if instant:
        target["instant"], target["range"] = True, False
    if table:
        target["format"] = "table"
    return target


def _panel(kind: str, title: str, targets: list[dict[str, Any]], w: int, h: int, **extra: Any) -> Panel:
    return {"type": kind, "title": title, "datasource": DATASOURCE, "targets": targets,
            "gridPos": {"w": w, "h": h}, **extra}


def timeseries(title: str, *queries: tuple[str, str], unit: str = "short", w: int = 12, h: int = 8,
               thresholds: list[tuple[float, str]] | None = None) -> Panel:
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds:
        defaults["thresholds"] = _thresholds(thresholds)
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    refs = "ABCDEFGH"
    return _panel("timeseries", title, [_target(e, l, ref=refs[i]) for i, (e, l) in enumerate(queries)], w, h,
                  fieldConfig={"defaults": defaults, "overrides": []})


def stat(title: str, expr: str, legend: str = "", *, unit: str = "short", w: int = 6, h: int = 5,
         thresholds: list[tuple[float, str]] | None = None) -> Panel:
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds:
        defaults["thresholds"] = _thresholds(thresholds)
    return _panel("stat", title, [_target(expr, legend, instant=True)], w, h,
                  fieldConfig={"defaults": defaults, "overrides": []},
                  options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"})


def bargauge(title: str, expr: str, legend: str, *, unit: str = "short", w: int = 12, h: int = 10,
             thresholds: list[tuple[float, str]] | None = None) -> Panel:
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds:
        defaults["thresholds"] = _thresholds(thresholds)
    return _panel("bargauge", title, [_target(expr, legend, instant=True)], w, h,
                  fieldConfig={"defaults": defaults, "overrides": []},
                  options={"orientation": "horizontal", "displayMode": "gradient",
                           "reduceOptions": {"calcs": ["lastNotNull"]}})


def table(title: str, expr: str, *, w: int = 24, h: int = 8) -> Panel:
    return _panel("table", title, [_target(expr, instant=True, table=True)], w, h,
                  transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}])


def geomap(title: str, expr: str, *, w: int = 12, h: int = 14) -> Panel:
    """Live alarms on the map of Dongguan, coloured by level, from the lat/lon labels."""
    layer = {"type": "markers", "name": "alarms", "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
             "config": {"style": {"size": {"fixed": 8}, "color": {"field": "level"}}}}
    return _panel("geomap", title, [_target(expr, instant=True, table=True)], w, h,
                  options={"view": {"id": "coords", "lat": 22.95, "lon": 113.85, "zoom": 10},
                           "layers": [layer], "controls": {"showZoom": True}},
                  transformations=[{"id": "convertFieldType", "options": {"conversions": [
                      {"targetField": "lat", "destinationType": "number"},
                      {"targetField": "lon", "destinationType": "number"}]}}])


def _thresholds(steps: list[tuple[float, str]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"value": None, "color": "green"},
                                          *({"value": v, "color": c} for v, c in steps)]}


def dashboard(uid: str, title: str, tags: list[str], panels: list[Panel], refresh: str = "30s") -> dict[str, Any]:
    laid_out = list(_layout(panels))
    return {
        "uid": uid, "title": title, "tags": ["cityops", *tags], "timezone": "browser", "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []}, "annotations": {"list": []}, "panels": laid_out,
    }


def _layout(panels: list[Panel]) -> Iterator[Panel]:
    """Ids and positions: left to right in a 24-column grid, wrapping."""
    x = y = row_h = 0
    for i, panel in enumerate(panels, start=1):
        w, h = panel["gridPos"]["w"], panel["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        yield {**panel, "id": i, "gridPos": {"x": x, "y": y, "w": w, "h": h}}
        x, row_h = x + w, max(row_h, h)


def live(selector: str = "") -> str:
    """Live alarms, one series each however many workers export them."""
    return LIVE.replace("(cityops_live_alarm)", f"(cityops_live_alarm{{{selector}}})" if selector else "(cityops_live_alarm)")


def _alarm_stats(kind: str = "") -> list[Panel]:
    scope = f'kind="{kind}", ' if kind else ""
    panels = []
    for sev, zh, en in (("critical", "特别严重", "Critical"), ("major", "严重", "Major"),
                        ("minor", "较重", "Minor"), ("warning", "一般", "Warning")):
        selector = scope + 'severity="' + sev + '"'
        panels.append(stat(f"{zh} / {en}", f"count({live(selector)}) or vector(0)",
                           thresholds=[(1, SEVERITY_COLOURS[sev])]))
    return panels


def overview() -> dict[str, Any]:
    return dashboard("cityops-overview", "城市运行总览 / City overview", ["overview"], [
        *_alarm_stats(),
        geomap("实时报警地图 / Live alarms", LIVE),
        bargauge("各镇街空气质量指数 / AQI by district", 'max by (district) (cityops_latest_score{detector="aqi"})',
                 "{{district}}", h=14, thresholds=[(51, "yellow"), (101, "orange"), (151, "red"), (201, "purple")]),
        timeseries("报警事件（按领域） / Alarm events by domain",
                   ('sum by (kind) (increase(cityops_alerts_total{status="firing"}[15m]))', "{{kind}}"), w=12),
        timeseries("实时报警（按级别） / Live alarms by severity",
                   (f"count by (severity) ({LIVE})", "{{severity}}"), w=12),
        table("实时报警列表 / Live alarms", LIVE),
    ])


def air() -> dict[str, Any]:
    return dashboard("cityops-air", "大气环境 / Air quality", ["air"], [
        *_alarm_stats("air"),
        bargauge("各站点AQI / AQI by station (HJ 633)", 'max by (site_id) (cityops_latest_score{detector="aqi"})',
                 "{{site_id}}", w=24, h=16, thresholds=[(51, "yellow"), (101, "orange"), (151, "red"), (201, "purple")]),
        timeseries("PM2.5 各镇街平均 / PM2.5 by district", (
            'avg by (district) (cityops_latest_value{kind="air", quantity="pm25"})', "{{district}}"),
            unit="conμgm3", thresholds=[(75, "orange"), (115, "red")]),
        timeseries("NO₂、O₃ 全市平均 / NO2 and O3, city average", (
            'avg(cityops_latest_value{kind="air", quantity="no2"})', "NO2"),
            ('avg(cityops_latest_value{kind="air", quantity="o3"})', "O3"), unit="conμgm3"),
    ])


def hazmat() -> dict[str, Any]:
    return dashboard("cityops-hazmat", "危险化学品 / Hazardous-chemical sites", ["hazmat"], [
        *_alarm_stats("hazmat"),
        bargauge("可燃气体（各企业最高） / Combustible gas, highest per site", 
                 'max by (site_id) (cityops_latest_value{kind="hazmat", quantity="gas_lel"})', "{{site_id}}",
                 unit="percent", w=12, h=16, thresholds=[(25, "orange"), (50, "red")]),
        timeseries("可燃气体 %LEL（一级25 / 二级50） / Gas %LEL against the 25/50 set points",
                   ('max by (site_id) (cityops_latest_value{kind="hazmat", quantity="gas_lel"})', "{{site_id}}"),
                   unit="percent", h=16, thresholds=[(25, "orange"), (50, "red")]),
        timeseries("储罐压力 / Tank pressure",
                   ('max by (sensor_id) (cityops_latest_value{kind="hazmat", quantity="pressure_kpa"})', "{{sensor_id}}"),
                   unit="kpa"),
        timeseries("储罐液位 / Tank level",
                   ('max by (sensor_id) (cityops_latest_value{kind="hazmat", quantity="level_pct"})', "{{sensor_id}}"),
                   unit="percent", thresholds=[(85, "orange"), (95, "red")]),
    ])


def traffic() -> dict[str, Any]:
    return dashboard("cityops-traffic", "道路交通 / Traffic", ["traffic"], [
        *_alarm_stats("traffic"),
        timeseries("车速（各站点） / Speed by station",
                   ('avg by (site_id) (cityops_latest_value{kind="traffic", quantity="speed_kmh"})', "{{site_id}}"),
                   unit="velocitykmh", h=12),
        timeseries("占有率（各站点） / Occupancy by station",
                   ('avg by (site_id) (cityops_latest_value{kind="traffic", quantity="occupancy_pct"})', "{{site_id}}"),
                   unit="percent", h=12),
    ])


def energy() -> dict[str, Any]:
    return dashboard("cityops-energy", "企业能耗 / Energy", ["energy"], [
        *_alarm_stats("energy"),
        timeseries("全市企业负荷 / Total enterprise load",
                   ('sum(cityops_latest_value{kind="energy", quantity="power_kw"})', "kW"), unit="kwatt", h=10),
        bargauge("负荷最高的企业 / Largest loads", 'topk(15, max by (site_id) (cityops_latest_value{kind="energy", quantity="power_kw"}))',
                 "{{site_id}}", unit="kwatt", h=10),
    ])


def pipeline() -> dict[str, Any]:
    p95 = "histogram_quantile(0.95, sum by (le, kind) (rate({}[5m])))"
    return dashboard("cityops-pipeline", "系统运行状态 / Pipeline health", ["pipeline"], [
        stat("读数/秒 / Readings/s", "sum(rate(cityops_readings_total[1m]))", unit="reqps"),
        stat("危化报警延迟 p95 / Hazmat alarm p95",
             'histogram_quantile(0.95, sum by (le) (rate(cityops_alarm_latency_seconds_bucket{kind="hazmat"}[5m])))',
             unit="s", thresholds=[(0.1, "red")]),
        stat("待发送通知 / Notifications waiting", "sum(max by (receiver) (cityops_outbox_waiting))",
             thresholds=[(50, "red")]),
        stat("发送失败 / Dead notifications", "sum(max by (receiver) (cityops_outbox_dead))", thresholds=[(1, "red")]),
        timeseries("读数/秒（按领域） / Readings/s by domain",
                   ("sum by (kind) (rate(cityops_readings_total[1m]))", "{{kind}}"), unit="reqps"),
        timeseries("读数到报警 p95 / Reading to alarm p95 (budget: hazmat 100 ms)",
                   (p95.format("cityops_alarm_latency_seconds_bucket"), "{{kind}}"), unit="s",
                   thresholds=[(0.1, "red")]),
        timeseries("批次延迟 p95 / Batch latency p95",
                   (p95.format("cityops_batch_latency_seconds_bucket"), "{{kind}}"), unit="s"),
        timeseries("各阶段耗时 p95 / Stage time p95", (
            "histogram_quantile(0.95, sum by (le, stage) (rate(cityops_stage_seconds_bucket[5m])))", "{{stage}}"),
            unit="s"),
        timeseries("消费滞后（各分区） / Consumer lag per partition",
                   ("max by (kind, partition) (cityops_consumer_lag)", "{{kind}} p{{partition}}")),
        timeseries("超时报警（按规则） / Alarms later than the budget, per rule",
                   ("sum by (kind, rule) (increase(cityops_alarm_budget_overruns_total[5m]))", "{{kind}} {{rule}}")),
        timeseries("超出延迟预算 / Budget overruns",
                   ("sum by (kind) (increase(cityops_budget_overruns_total[5m]))", "{{kind}}")),
        timeseries("死信（按原因） / Dead letters by reason",
                   ("sum by (kind, reason) (increase(cityops_deadletters_total[5m]))", "{{kind}} {{reason}}")),
        timeseries("通知 / Notifications", (
            "sum by (receiver, outcome) (increase(cityops_notifications_total[5m]))", "{{receiver}} {{outcome}}")),
        timeseries("投递 / Deliveries", (
            "sum by (receiver, event) (increase(cityops_outbox_events_total[5m]))", "{{receiver}} {{event}}")),
        timeseries("状态内存 / Detector state", ("sum by (kind) (cityops_detector_state_bytes)", "{{kind}}"),
                   unit="bytes"),
        timeseries("传感器数 / Sensors tracked", ("sum by (kind, catalog) (cityops_sensors_tracked)", "{{kind}} catalog={{catalog}}")),
    ])


DASHBOARDS = {"overview": overview, "air": air, "hazmat": hazmat, "traffic": traffic, "energy": energy,
              "pipeline": pipeline}


def build_all() -> dict[str, dict[str, Any]]:
    """file name -> dashboard JSON model."""
    return {f"{name}.json": make() for name, make in DASHBOARDS.items()}


def render(model: dict[str, Any]) -> str:
    return json.dumps(model, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in build_all().items():
        path = directory / name
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written
