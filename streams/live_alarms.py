"""The live alarms as Prometheus samples, for the boards (counts by severity, the map).

``cityops_live_alarm{kind, rule, severity, level, sensor_id, site_id, district, lat, lon} 1``
per live alarm: bounded by the number of live alarms, not by the catalog, and gone
once the alarm resolves. A Grafana Geomap panel places them by ``lat``/``lon``;
``count by (kind, severity) (max by (kind, rule, sensor_id, severity) (cityops_live_alarm))``
counts them (the ``max by`` collapses the same alarm exported by several workers).

The source is the Redis board (sinks/redis_board.py), the city-wide truth: each
worker re-reads it every few seconds, so every worker exports every live alarm
whatever partitions it owns. A scrape never touches Redis: it reads the last copy.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from sinks.base import Alert
from sinks.redis_board import RedisAlarmBoard
from streams.periodic import PeriodicRefresh

LABELS = ("kind", "rule", "severity", "level", "sensor_id", "site_id", "district", "lat", "lon")


class LiveAlarms(PeriodicRefresh, Collector):
    errors = (RedisError, OSError)  # the worker's own retries report a Redis outage
    task_name = "cityops-live-alarms"

    def __init__(self, board: RedisAlarmBoard, period_s: float = 5.0) -> None:
        self.board, self.period_s = board, period_s
        self.alarms: list[Alert] = []
        self.refreshed = False

    async def refresh(self) -> None:
        self.alarms = await self.board.active()
        self.refreshed = True

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "cityops_live_alarm", "One sample (1) per live alarm on the Redis board, for maps and counts", labels=list(LABELS))
        for alert in self.alarms:
            family.add_metric([
                alert.kind, alert.rule, alert.severity, alert.level, alert.sensor_id, alert.site_id, alert.district,
                "" if alert.lat is None else f"{alert.lat:.5f}", "" if alert.lon is None else f"{alert.lon:.5f}",
            ], 1.0)
        yield family

    async def close(self) -> None:
        await self.stop()
