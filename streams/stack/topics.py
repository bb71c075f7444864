"""Topic creation on a running broker: ``ensure_topics`` creates the missing ones and waits
until every partition has a leader."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from streams.stack.config import StackError
from streams.stack.procs import POLL_S, _run_async

TOPIC_ALREADY_EXISTS = 36


def ensure_topics(
    bootstrap: str, topics: Sequence[tuple[str, int]], timeout_s: float = 60.0
) -> None:
    """Create the missing topics (name, partitions), replication factor 1. Existing topics are
    left alone, whatever their partition count. Returns once all are visible with leaders."""
    _validate_topics(topics)
    if not topics:
        return
    try:
        _run_async(asyncio.wait_for(_ensure_topics(bootstrap, topics, timeout_s), timeout_s))
    except (asyncio.TimeoutError, TimeoutError) as exc:
        raise StackError(f"topics {[t for t, _ in topics]} not ready on {bootstrap} "
                         f"within {timeout_s:.0f}s; is the broker up (`status`)?") from exc


async def _ensure_topics(
    bootstrap: str, topics: Sequence[tuple[str, int]], timeout_s: float
) -> None:
    timeout_ms = int(timeout_s * 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, parts, 1) for name, parts in topics if name not in existing]
        if missing:
            response = await admin.create_topics(missing, timeout_ms=timeout_ms)
            _raise_topic_errors(response)
        names = [name for name, _ in topics]
        while not _topics_ready(await admin.describe_topics(names)):
            await asyncio.sleep(POLL_S)  # leaders appear just after CreateTopics; bounded
    finally:
        await admin.close()


def _raise_topic_errors(response: Any) -> None:
    for topic, code, *rest in response.topic_errors:
        if code not in (0, TOPIC_ALREADY_EXISTS):  # a concurrent creator beat us to it: fine
            message = rest[0] if rest and rest[0] else for_code(code).__name__
            raise StackError(f"creating topic {topic!r} failed: {message}")


def _topics_ready(described: list[dict[str, Any]]) -> bool:
    return all(
        t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
        for t in described
    )


def _validate_topics(topics: Sequence[tuple[str, int]]) -> None:
    for name, partitions in topics:
        if not name or partitions < 1:
            raise StackError(f"invalid topic ({name!r}, {partitions}): need a name, >= 1 partition")
