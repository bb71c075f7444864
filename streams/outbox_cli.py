"""`cityops outbox ...`: what waits in the receivers' outboxes, and re-sending dead letters.

An operations tool like `cityops stack`: it talks to Redis directly (CITYOPS_REDIS_URL,
CITYOPS_NAMESPACE), not to the operator API. Receivers are the ones named in
topology.yaml ``notifications.receivers``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional, TypeVar

import redis.asyncio as aioredis
import typer

from sinks.outbox import Outbox
from streams.errors import CityOpsError
from streams.settings import Settings
from streams.topology import load_topology

outbox_app = typer.Typer(no_args_is_help=True, help="The receivers' outboxes: status, dead letters, re-send.")
TopologyOpt = Annotated[Path, typer.Option("--topology", "-t", help="topology.yaml to use", envvar="CITYOPS_TOPOLOGY")]
T = TypeVar("T")


def _receivers(topology: Path, name: str | None) -> list[str]:
    names = [r.name for r in load_topology(topology).spec.notifications.receivers]
    if name is None:
        return names
    if name not in names:
        raise CityOpsError(f"receiver {name!r} is not in {topology} notifications.receivers; valid: {names}")
    return [name]


def _run(topology: Path, work: Callable[[aioredis.Redis, str], Awaitable[T]]) -> T:
    settings = Settings.from_env(topology=topology)

    async def main() -> T:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            return await work(client, settings.namespace)
        except (OSError, aioredis.ConnectionError) as exc:
            raise CityOpsError(f"cannot reach Redis at {settings.redis_url}: {exc}") from exc
        finally:
            await client.aclose()

    return asyncio.run(main())


@outbox_app.command("status")
def status(topology: TopologyOpt = Path("topology.yaml")) -> None:
    """Per receiver: notifications waiting (or being retried) and dead letters."""
    names = _receivers(topology, None)

    async def work(client: aioredis.Redis, namespace: str) -> list[tuple[str, int, int, int | None]]:
        rows = []
        for name in names:
            box = Outbox(client, namespace, name)
            rows.append((name, await box.pending(), await box.dead_count(), await box.next_due_ms()))
        return rows

    typer.echo(f"{'receiver':<20} {'waiting':>8} {'dead':>6}  next attempt")
    for name, waiting, dead, next_ms in _run(topology, work):
        when = "-" if next_ms is None else datetime.fromtimestamp(next_ms / 1000, tz=UTC).isoformat(timespec="seconds")
        typer.echo(f"{name:<20} {waiting:>8} {dead:>6}  {when}")


@outbox_app.command("dead")
def dead(
    receiver: Annotated[str, typer.Argument(help="receiver name (topology notifications.receivers)")],
    topology: TopologyOpt = Path("topology.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line, with the body")] = False,
) -> None:
    """The dead letters of one receiver: id, attempts, last error."""
    name = _receivers(topology, receiver)[0]
    letters = _run(topology, lambda client, ns: Outbox(client, ns, name).dead_letters())
    for letter in letters:
        if as_json:
            typer.echo(json.dumps({"id": letter.id, "attempts": letter.attempts, "error": letter.error,
                                   "dead_at_ms": letter.dead_at_ms, "body": letter.body.decode(errors="replace")},
                                  ensure_ascii=False))
        else:
            typer.echo(f"{letter.id}  attempts {letter.attempts}  {letter.error}")


@outbox_app.command("retry")
def retry(
    receiver: Annotated[str, typer.Argument(help="receiver name (topology notifications.receivers)")],
    ids: Annotated[Optional[list[str]], typer.Argument(help="dead letter ids (default: all of them)")] = None,
    topology: TopologyOpt = Path("topology.yaml"),
) -> None:
    """Put dead letters back in line (after fixing the receiver); a deliverer sends them."""
    name = _receivers(topology, receiver)[0]
    count = _run(topology, lambda client, ns: Outbox(client, ns, name).requeue(ids or ()))
    typer.echo(f"{count} dead letter(s) of {name} queued again")
