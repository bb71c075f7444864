"""Starting aiokafka clients so that a broker that cannot be reached is one clear
error, not a traceback plus "Unclosed AIOKafkaProducer" warnings."""

from __future__ import annotations

from typing import Protocol

from aiokafka.errors import KafkaConnectionError

from streams.errors import CityOpsError


class _Client(Protocol):
    async def start(self) -> None: ...


async def _release(client: _Client) -> None:
    """Producers and consumers stop(); the admin client close()s."""
    release = getattr(client, "stop", None) or getattr(client, "close")
    await release()


class KafkaUnreachable(CityOpsError):
    """No broker answered at the bootstrap address."""


async def start_client(client: _Client, bootstrap: str) -> None:
    """Start `client`; on failure release it and raise KafkaUnreachable."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        await _release(client)
        msg = (f"cannot reach Kafka at {bootstrap} ({exc}); start the local stack with "
               "`cityops stack up`, or point CITYOPS_BOOTSTRAP at your brokers")
        raise KafkaUnreachable(msg) from None
    except BaseException:
        await _release(client)
        raise
