"""The live alarm board in Redis: one entry per active alarm_key.

It is also the worker's alarm state: on start the worker re-arms its levels
from it, so a restart neither repeats nor forgets an alarm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sinks.base import Alert

HISTORY_LENGTH = 10_000


class RedisAlarmBoard:
    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self._redis = client
        self.active_key = f"cityops:{namespace}:alarms:active"
        self.history_key = f"cityops:{namespace}:alarms:history"

    @classmethod
    def from_url(cls, url: str, namespace: str) -> RedisAlarmBoard:
        return cls(aioredis.Redis.from_url(url), namespace)

    async def write_batch(self, alerts: Sequence[Alert], state: Mapping[str, Mapping[str, bytes]] | None = None) -> None:
        """Apply the changes in order, atomically (MULTI/EXEC), together with the
        per-sensor state records of the batch (``state``: hash name -> field ->
        bytes). Re-applying the same batch leaves the same state: HSET/HDEL are
        idempotent."""
        records = {key: fields for key, fields in (state or {}).items() if fields}
        if not alerts and not records:
            return
        pipe = self._redis.pipeline(transaction=True)
        for alert in alerts:
            if alert.status == "resolved":
                pipe.hdel(self.active_key, alert.alarm_key)
            else:
                pipe.hset(self.active_key, alert.alarm_key, alert.to_json())
        if alerts:
            pipe.lpush(self.history_key, *[a.to_json() for a in alerts])
            pipe.ltrim(self.history_key, 0, HISTORY_LENGTH - 1)
        for key, fields in records.items():
            pipe.hset(key, mapping=cast(Any, dict(fields)))  # redis-py's key type is invariant
        await pipe.execute()

    async def state(self, key: str) -> dict[bytes, bytes]:
        """Every per-sensor state record under ``key``."""
        return cast(dict[bytes, bytes], await self._redis.hgetall(key))

    async def active(self) -> list[Alert]:
        raw = await self._redis.hvals(self.active_key)
        return [Alert.from_json(item) for item in raw]

    async def ping(self) -> bool:
        """True when Redis answers; False (not an exception) when it is down."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()
