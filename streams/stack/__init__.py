"""Local development stack: a single-node Apache Kafka (KRaft) built from Maven Central jars,
plus a private Redis instance.

Everything lives under one state directory (default ``<cwd>/.stack``)::

    kafka/   pom.xml lib/ data/ logs/server.out server.properties log4j2.properties
             cluster.id kafka.pid
    redis/   redis.pid redis.log appendonlydir/

``up`` is idempotent, ``down`` keeps the data, ``status`` never raises. No Docker, no tarball:
the broker's runtime closure is fetched with Maven (see resources/kafka/pom.xml).
"""

from __future__ import annotations

import contextlib
import fcntl
import signal
import time
from collections.abc import Iterator, Sequence

from streams.stack.config import KAFKA_VERSION as KAFKA_VERSION
from streams.stack.config import Log, StackConfig, StackError
from streams.stack.health import ServiceStatus, StackStatus, status
from streams.stack.kafka import _kafka_pid, _kafka_pid_file, _start_kafka, _wait_kafka_ready
from streams.stack.kafka import broker_command as broker_command
from streams.stack.kafka import new_cluster_id as new_cluster_id
from streams.stack.kafka import render_server_properties as render_server_properties
from streams.stack.prereqs import _require_java, _require_promtool, _require_redis_server
from streams.stack.procs import _pid_alive, _poll, _require_free_port, _signal
from streams.stack.redis_server import _redis_pid, _redis_pid_file, _start_redis, _wait_redis_ready
from streams.stack.redis_server import redis_command as redis_command
from streams.stack.topics import _validate_topics, ensure_topics

__all__ = [
    "ServiceStatus",
    "StackConfig",
    "StackError",
    "StackStatus",
    "down",
    "ensure_topics",
    "status",
    "up",
]


def up(
    cfg: StackConfig,
    topics: Sequence[tuple[str, int]] = (),
    timeout_s: float = 120.0,
    log: Log = print,
) -> StackStatus:
    """Start Kafka and Redis unless already running, wait until both really serve, create topics.

    ``timeout_s`` bounds the readiness wait; a first-time jar fetch has its own, longer bound.
    """
    _validate_topics(topics)
    java = _require_java()
    redis_server = _require_redis_server(log)
    _require_promtool(log)  # not a service (yet): the tests check the alert rules with it
    with _locked(cfg):
        _check_ports(cfg)  # before starting anything: never leave a half-started stack behind
        deadline = time.monotonic() + timeout_s
        kafka_proc = _start_kafka(cfg, java, log)
        _start_redis(cfg, redis_server, log)
        _wait_kafka_ready(cfg, kafka_proc, deadline, log)
        _wait_redis_ready(cfg, deadline, log)
    if topics:
        ensure_topics(cfg.bootstrap, topics, timeout_s=max(deadline - time.monotonic(), 10.0))
        log(f"kafka: topics ready: {', '.join(name for name, _ in topics)}")
    return status(cfg)


def down(cfg: StackConfig, timeout_s: float = 60.0, log: Log = print) -> StackStatus:
    """SIGTERM both (Kafka does a controlled shutdown, Redis fsyncs its AOF), SIGKILL after the
    deadline. Idempotent; data is kept."""
    if not cfg.root.exists():
        return status(cfg)  # never started here: nothing to stop, don't create the dir
    with _locked(cfg):
        _stop_all(cfg, timeout_s, log)
    return status(cfg)


def _stop_all(cfg: StackConfig, timeout_s: float, log: Log) -> None:
    targets = {"kafka": _kafka_pid(cfg), "redis": _redis_pid(cfg)}
    for name, pid in targets.items():
        if pid is None:
            log(f"{name}: not running")
        else:
            log(f"{name}: stopping (pid {pid})")
            _signal(pid, signal.SIGTERM)
    pids = [pid for pid in targets.values() if pid is not None]
    deadline = time.monotonic() + timeout_s
    if not _poll(lambda: not any(map(_pid_alive, pids)), deadline):
        for pid in filter(_pid_alive, pids):
            log(f"pid {pid} ignored SIGTERM for {timeout_s:.0f}s: sending SIGKILL")
            _signal(pid, signal.SIGKILL)
        _poll(lambda: not any(map(_pid_alive, pids)), time.monotonic() + 10.0)
    if _kafka_pid(cfg) is None:
        _kafka_pid_file(cfg).unlink(missing_ok=True)
    if _redis_pid(cfg) is None:
        _redis_pid_file(cfg).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(cfg: StackConfig) -> Iterator[None]:
    """Serialise up/down on one state dir (e.g. `make up` racing a test run): two concurrent
    `up`s would otherwise both spawn a broker and clobber each other's pid file."""
    cfg.root.mkdir(parents=True, exist_ok=True)
    (cfg.root / ".gitignore").write_text("*\n")  # the state dir never ends up in git
    with (cfg.root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        yield


def _check_ports(cfg: StackConfig) -> None:
    if _kafka_pid(cfg) is None:
        _require_free_port(cfg.kafka_port, "Kafka", "CITYOPS_KAFKA_PORT")
        _require_free_port(cfg.controller_port, "Kafka controller", "CITYOPS_KAFKA_CONTROLLER_PORT")
    if _redis_pid(cfg) is None:
        _require_free_port(cfg.redis_port, "Redis", "CITYOPS_REDIS_PORT")
