"""The checkpoint's state records in Redis: written and read in bounded chunks."""

from __future__ import annotations

import redis.asyncio as aioredis

from sinks.redis_board import RedisAlarmBoard
from tests.unit.test_outbox import client, redis_server  # noqa: F401  (fixtures)


async def test_state_records_round_trip_in_chunks_smaller_than_the_checkpoint(client: aioredis.Redis) -> None:
    board = RedisAlarmBoard(client, "t")
    records = {f"S-{i:05d}": bytes([i % 251]) * (1 + i % 97) for i in range(5_003)}
    await board.write_state("cityops:t:state:hazmat:x", records, chunk=1_000)  # 6 round trips
    read = await board.state("cityops:t:state:hazmat:x", chunk=700)
    assert {k.decode(): v for k, v in read.items()} == records
    newer = {"S-00007": b"new", "S-05000": b"newer"}
    await board.write_state("cityops:t:state:hazmat:x", newer, chunk=1)
    read = await board.state("cityops:t:state:hazmat:x")
    assert len(read) == len(records)
    assert read[b"S-00007"] == b"new" and read[b"S-05000"] == b"newer" and read[b"S-00008"] == records["S-00008"]
    assert await board.state("cityops:t:state:none") == {}
