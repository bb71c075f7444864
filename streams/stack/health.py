"""Stack status for humans and health checks: is each service's process ours and alive, and
does its port answer. ``status`` never raises."""

from __future__ import annotations

from dataclasses import dataclass

from streams.stack.config import HOST, StackConfig
from streams.stack.kafka import _kafka_pid
from streams.stack.procs import _owner, _port_open
from streams.stack.redis_server import _redis_pid


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    detail: str

    def __str__(self) -> str:
        pid = f" pid={self.pid}" if self.pid else ""
        state = "UP  " if self.running else "DOWN"
        return f"{self.name:<6} {state} {self.address}{pid}  {self.detail}"


@dataclass(frozen=True, slots=True)
class StackStatus:
    kafka: ServiceStatus
    redis: ServiceStatus

    @property
    def all_running(self) -> bool:
        return self.kafka.running and self.redis.running

    def __str__(self) -> str:
        return f"{self.kafka}\n{self.redis}"


def status(cfg: StackConfig) -> StackStatus:
    """Pid alive (and really ours) + port accepts. Never raises."""
    return StackStatus(kafka=_safe_status("kafka", cfg), redis=_safe_status("redis", cfg))


def _safe_status(name: str, cfg: StackConfig) -> ServiceStatus:
    port = cfg.kafka_port if name == "kafka" else cfg.redis_port
    try:
        pid = _kafka_pid(cfg) if name == "kafka" else _redis_pid(cfg)
        return _service_status(name, pid, port)
    except Exception as exc:  # status is for humans and health checks: report, don't raise
        return ServiceStatus(name, False, None, f"{HOST}:{port}", f"status check failed: {exc!r}")


def _service_status(name: str, pid: int | None, port: int) -> ServiceStatus:
    address = f"{HOST}:{port}"
    answers = _port_open(port)
    if pid is not None and answers:
        return ServiceStatus(name, True, pid, address, "running")
    if pid is not None:
        detail = f"process up, port {port} not answering (starting or stuck)"
        return ServiceStatus(name, False, pid, address, detail)
    if answers:
        return ServiceStatus(name, False, None, address, f"port {port} is used by {_owner(port)}")
    return ServiceStatus(name, False, None, address, "stopped")
