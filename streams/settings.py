"""Worker settings from the environment (CITYOPS_*), validated once at start."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
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
    web_host: str = "127.0.0.1"  # the address the web server binds: 0.0.0.0 in a container, for Prometheus
    data_dir: Path = Path(".stack/worker")
    delivery: str = "worker"  # who POSTs the outboxes: the worker, or `cityops deliver` ("separate")
    kinds: tuple[str, ...] = ()  # the sensor kinds this worker consumes; () = every kind of the topology

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
            "web_host": env.get("CITYOPS_WEB_HOST", "127.0.0.1").strip() or "127.0.0.1",
            "data_dir": Path(env.get("CITYOPS_DATA_DIR", ".stack/worker")),
            "delivery": _choice(env, "CITYOPS_DELIVERY", ("worker", "separate"), "worker"),
            "kinds": parse_kinds(env.get("CITYOPS_KINDS", "")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"hazmat, air"`` -> ("hazmat", "air"); "" -> () (every kind). Checked against the
    topology by ``owned_kinds``."""
    return tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))


def owned_kinds(settings: Settings, topology_kinds: Iterable[str]) -> list[str]:
    """The kinds a worker consumes, in the topology's order; ConfigError names an unknown one."""
    return select_kinds(settings.kinds, topology_kinds, "CITYOPS_KINDS / --kinds", f"a kind of {settings.topology}")


def select_kinds(names: Sequence[str], known: Iterable[str], option: str, what: str) -> list[str]:
    """``known`` kept in its order, only those in ``names`` (all if ``names`` is empty)."""
    known = list(known)
    unknown = [k for k in names if k not in known]
    if unknown:
        msg = f"{option} names {', '.join(map(repr, unknown))}, not {what}; use some of: {', '.join(known)}"
        raise ConfigError(msg)
    return [k for k in known if not names or k in names]


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
