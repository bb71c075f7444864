"""Worker settings from the environment (CITYOPS_*), validated once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap: str = "127.0.0.1:9092"  # Kafka host:port[,host:port]
    redis_url: str = "redis://127.0.0.1:6379/0"
    topology: Path = Path("topology.yaml")
    namespace: str = "live"  # Redis key prefix: a replay uses its own
    app_id: str = "cityops"  # Kafka consumer group
    web_port: int = 6066
    data_dir: Path = Path(".stack/worker")
    delivery: str = "worker"  # who POSTs the outboxes: the worker, or `cityops deliver` ("separate")

    def consumer_group(self, kind: str) -> str:
        """The Kafka consumer group of a kind's batch consumers: one group per kind, so a
        worker's start, or a worker joining, is one join per group, not a cascade of
        rebalances of one group that four consumers per worker join one after another."""
        return f"{self.app_id}.{kind}"

    @property
    def broker_url(self) -> str:
        return ",".join(f"kafka://{hp}" for hp in self.bootstrap.split(","))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "bootstrap": env.get("CITYOPS_BOOTSTRAP", f"127.0.0.1:{env_port(env, 'CITYOPS_KAFKA_PORT', 9092)}"),
            "redis_url": env.get("CITYOPS_REDIS_URL", f"redis://127.0.0.1:{env_port(env, 'CITYOPS_REDIS_PORT', 6379)}/0"),
            "topology": Path(env.get("CITYOPS_TOPOLOGY", "topology.yaml")),
            "namespace": env.get("CITYOPS_NAMESPACE", "live"),
            "app_id": env.get("CITYOPS_APP_ID", "cityops"),
            "web_port": env_port(env, "CITYOPS_WEB_PORT", 6066),
            "data_dir": Path(env.get("CITYOPS_DATA_DIR", ".stack/worker")),
            "delivery": _choice(env, "CITYOPS_DELIVERY", ("worker", "separate"), "worker"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def env_port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port from the environment; ConfigError names the variable and the fix."""
    text = env.get(name)
    if text is None:
        return default
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        msg = f"{name}={text!r} is not a TCP port; set it to a number between 1 and 65535"
        raise ConfigError(msg)
    return port


def _choice(env: Mapping[str, str], name: str, options: tuple[str, ...], default: str) -> str:
    value = env.get(name, default).strip() or default
    if value not in options:
        msg = f"{name}={value!r} is not one of {', '.join(options)}"
        raise ConfigError(msg)
    return value
