"""Our private redis-server: command line, start (daemonized, AOF) and readiness (PING).
Files live under ``<root>/redis``. Named so as not to shadow the ``redis`` client package."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from streams.stack.config import HOST, Log, StackConfig, StackError
from streams.stack.procs import _cmdline, _our_pid, _poll, _tail_file, _tail_text


def _redis_pid_file(cfg: StackConfig) -> Path:
    return cfg.redis_dir / "redis.pid"


def _redis_pid(cfg: StackConfig) -> int | None:
    return _our_pid(_redis_pid_file(cfg), cfg.redis_port, lambda pid: _is_our_redis(cfg, pid))


def _is_our_redis(cfg: StackConfig, pid: int) -> bool:
    # redis-server rewrites its title to "redis-server 127.0.0.1:<port>"; the pid comes from our
    # own pid file or our port, so name + port is enough to reject a recycled pid.
    title = " ".join(_cmdline(pid))
    return "redis-server" in title and f":{cfg.redis_port}" in title


def redis_command(cfg: StackConfig, redis_server: str = "redis-server") -> list[str]:
    d = cfg.redis_dir
    return [
        redis_server, "--port", str(cfg.redis_port), "--bind", HOST, "--dir", str(d),
        "--daemonize", "yes", "--pidfile", str(_redis_pid_file(cfg)),
        "--logfile", str(d / "redis.log"), "--save", "", "--appendonly", "yes",
    ]  # fmt: skip


def _start_redis(cfg: StackConfig, redis_server: str, log: Log) -> None:
    """Our own instance (never the Debian system service); AOF so data survives a restart."""
    pid = _redis_pid(cfg)
    if pid is not None:
        log(f"redis: already running (pid {pid}), not starting another one")
        return
    cfg.redis_dir.mkdir(parents=True, exist_ok=True)
    _redis_pid_file(cfg).unlink(missing_ok=True)  # stale: it does not point at our Redis
    cmd = redis_command(cfg, redis_server)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        tail = _tail_text(res.stdout + res.stderr, 20)
        raise StackError(f"redis-server failed to start:\n{tail}")
    log(f"redis: started on {HOST}:{cfg.redis_port} (log: {cfg.redis_dir / 'redis.log'})")


def _wait_redis_ready(cfg: StackConfig, deadline: float, log: Log) -> None:
    if not _poll(lambda: _redis_pong(cfg.redis_port), deadline):
        log_file = cfg.redis_dir / "redis.log"
        raise StackError(f"Redis did not answer PING on {HOST}:{cfg.redis_port} in time. "
                         f"Last lines of {log_file}:\n{_tail_file(log_file, 20)}")
    log(f"redis: ready at {cfg.redis_url}")


def _redis_pong(port: int) -> bool:
    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        return client.ping() is True  # raises while refused / still loading the AOF
    except redis.RedisError:
        return False
    finally:
        client.close()
