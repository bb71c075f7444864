"""The live alarm board in Redis: one entry per active alarm_key.

It is also the worker's alarm state: on start the worker re-arms its levels
from it, so a restart neither repeats nor forgets an alarm.

Keys (``B = cityops:<ns>:alarms``):

- ``B:active``          hash  alarm_key -> the alarm's latest alert (JSON)
- ``B:site:<site_id>``  hash  the same, for one site: what inhibition
  (sinks/notifier.py) reads, one small hash per site instead of the whole board
- ``B:history``         list  the newest alerts, newest first
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sinks.base import Alert

HISTORY_LENGTH = 10_000
STATE_CHUNK = 2_000  # state records per round trip (hazmat: ~18 MB), well inside the socket timeout


class RedisAlarmBoard:
    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self._redis = client
        self.active_key = f"cityops:{namespace}:alarms:active"
        self.history_key = f"cityops:{namespace}:alarms:history"
        self._site_prefix = f"cityops:{namespace}:alarms:site:"

    def site_key(self, site_id: str) -> str:
        return self._site_prefix + site_id

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
                pipe.hdel(self.site_key(alert.site_id), alert.alarm_key)
            else:
                data = alert.to_json()
                pipe.hset(self.active_key, alert.alarm_key, data)
                pipe.hset(self.site_key(alert.site_id), alert.alarm_key, data)
        if alerts:
            pipe.lpush(self.history_key, *[a.to_json() for a in alerts])
            pipe.ltrim(self.history_key, 0, HISTORY_LENGTH - 1)
        for key, fields in records.items():
            pipe.hset(key, mapping=cast(Any, dict(fields)))  # redis-py's key type is invariant
        await pipe.execute()

    async def write_state(self, key: str, records: Mapping[str, bytes], chunk: int = STATE_CHUNK) -> None:
        """Per-sensor state records into the hash ``key``, ``chunk`` fields per round trip.

        Not one transaction: each record stands alone (a sensor's whole state), so a
        write cut short leaves some sensors newer than the committed offsets, and their
        re-delivered readings are late for them and change nothing. One MULTI/EXEC of a
        large checkpoint (50,000 hazmat sensors are 450 MB) outlasted the client's socket
        timeout and was retried forever."""
        items = list(records.items())
        for start in range(0, len(items), chunk):
            await self._redis.hset(key, mapping=cast(Any, dict(items[start:start + chunk])))

    async def state(self, key: str, chunk: int = STATE_CHUNK) -> dict[bytes, bytes]:
        """Every per-sensor state record under ``key``, read ``chunk`` fields at a time
        (HSCAN: one HGETALL of a large hash outlasts the client's socket timeout)."""
        out: dict[bytes, bytes] = {}
        async for field, value in self._redis.hscan_iter(key, count=chunk):
            out[field] = value
        return out

    async def active(self) -> list[Alert]:
        raw = await self._redis.hvals(self.active_key)
        return [Alert.from_json(item) for item in raw]

    async def live_at_sites(self, site_ids: Sequence[str]) -> dict[str, list[Alert]]:
        """The live alarms of each site, in one round trip."""
        if not site_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for site_id in site_ids:
            pipe.hvals(self.site_key(site_id))
        rows = await pipe.execute()
        return {site_id: [Alert.from_json(item) for item in raw] for site_id, raw in zip(site_ids, rows, strict=True)}

    async def live(self, alarm_keys: Sequence[str]) -> dict[str, Alert]:
        """The live alert of each of ``alarm_keys`` that is live."""
        if not alarm_keys:
            return {}
        raw = await self._redis.hmget(self.active_key, list(alarm_keys))
        return {key: Alert.from_json(item) for key, item in zip(alarm_keys, raw, strict=True) if item is not None}

    async def ping(self) -> bool:
        """True when Redis answers; False (not an exception) when it is down."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()


async def delete_namespace(client: aioredis.Redis, namespace: str) -> int:
    """Remove every ``cityops:<namespace>:*`` key (a demo's, a replay's); how many there were."""
    keys = [key async for key in client.scan_iter(match=f"cityops:{namespace}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.unlink(*keys[start:start + 1000])
    return len(keys)
