"""Stack configuration: ports, versions and the state-directory layout (``StackConfig``),
read from the environment, and the user-facing ``StackError``."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streams.errors import CityOpsError

Log = Callable[[str], None]

HOST = "127.0.0.1"  # both listeners bind IPv4 loopback; "localhost" may resolve to ::1


# The newest Kafka that our pinned faust-streaming 0.15.3 + aiokafka 0.14.0 work with:
# the whole integration suite passed on 4.4.0 (and on 4.1.1) on 2026-11-26.
KAFKA_VERSION = "4.4.0"


class StackError(CityOpsError):
    """User-facing failure; the message says what to do. The CLI prints it without a traceback."""


@dataclass(frozen=True, slots=True)
class StackConfig:
    root: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    kafka_version: str = KAFKA_VERSION
    kafka_heap_mb: int = 512

    def __post_init__(self) -> None:
        for name in ("kafka_port", "controller_port", "redis_port"):
            _check_port(name, getattr(self, name))
        ports = (self.kafka_port, self.controller_port, self.redis_port)
        if len(set(ports)) != len(ports):
            raise StackError(f"Kafka, controller and Redis ports must differ, got {ports}")
        if not re.fullmatch(r"\d+\.\d+\.\d+", self.kafka_version):
            raise StackError(f"kafka_version must look like {KAFKA_VERSION}, got {self.kafka_version!r}")

    @classmethod
    def from_env(cls, root: Path | None = None) -> StackConfig:
        """Explicit ``root`` wins over CITYOPS_STACK_DIR, which wins over ``<cwd>/.stack``."""
        env_root = os.environ.get("CITYOPS_STACK_DIR")
        chosen = root or (Path(env_root) if env_root else Path.cwd() / ".stack")
        return cls(
            root=chosen.expanduser().resolve(),  # log.dirs and pid checks need absolute paths
            kafka_port=_env_port("CITYOPS_KAFKA_PORT", 9092),
            controller_port=_env_port("CITYOPS_KAFKA_CONTROLLER_PORT", 9093),
            redis_port=_env_port("CITYOPS_REDIS_PORT", 6379),
        )

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    # Layout of the state directory (kept here so tests and tools agree on it).
    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"


def _check_port(name: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise StackError(f"{name} must be a TCP port between 1 and 65535, got {port}")


def _env_port(var: str, default: int) -> int:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{var} must be an integer TCP port (1-65535), got {raw!r}") from None
    _check_port(var, port)
    return port
