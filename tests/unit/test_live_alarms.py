"""streams/live_alarms.py: the board's live alarms as one sample each, on a private Redis."""

from __future__ import annotations

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from sinks.redis_board import RedisAlarmBoard
from streams.live_alarms import LiveAlarms
from tests.unit.test_notifier import alert
from tests.unit.test_outbox import client, redis_server  # noqa: F401  (fixtures)


async def test_live_alarms_follow_the_board(client: aioredis.Redis) -> None:
    board = RedisAlarmBoard(client, "t")
    live = LiveAlarms(board)
    registry = CollectorRegistry()
    registry.register(live)
    await board.write_batch([alert(sensor="S1", severity="critical", site="SITE-A"),
                             alert(sensor="S2", severity="major", site="SITE-B")])
    await live.refresh()
    labels = {"kind": "hazmat", "rule": "gas_lel_alarm", "severity": "critical", "level": "red", "sensor_id": "S1",
              "site_id": "SITE-A", "district": "Songshan Lake", "lat": "22.90000", "lon": "113.90000"}
    assert registry.get_sample_value("cityops_live_alarm", labels) == 1.0
    await board.write_batch([alert("resolved", sensor="S1", severity="critical", site="SITE-A")])
    assert registry.get_sample_value("cityops_live_alarm", labels) == 1.0  # a scrape shows the last copy
    await live.refresh()
    assert registry.get_sample_value("cityops_live_alarm", labels) is None
    assert registry.get_sample_value("cityops_live_alarm", {**labels, "sensor_id": "S2", "severity": "major",
                                                            "level": "orange", "site_id": "SITE-B"}) == 1.0
