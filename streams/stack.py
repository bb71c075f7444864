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

import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import redis

from streams.errors import CityOpsError
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

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

T = TypeVar("T")
Log = Callable[[str], None]

HOST = "127.0.0.1"  # both listeners bind IPv4 loopback; "localhost" may resolve to ::1
POLL_S = 0.2
MIN_JAVA = 17
MAVEN_DEP_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
FETCH_TIMEOUT_S = 900.0  # a cold ~/.m2 downloads ~45 jars (~40 MB)
VERSION_MARKER = ".kafka-version"
TOPIC_ALREADY_EXISTS = 36

JAVA_HINT = "install it with `apt-get install -y openjdk-17-jre-headless`"
MAVEN_HINT = "install it with `apt-get install -y maven`"
REDIS_INSTALL = "apt-get update && apt-get install -y redis-server"


# The newest Kafka that our pinned faust-streaming 0.15.3 + aiokafka 0.14.0 work with:
# the whole integration suite passed on 4.4.0 (and on 4.1.1) on 2026-11-26.
KAFKA_VERSION = "4.4.0"


class StackError(CityOpsError):
    """User-facing failure; the message says what to do. The CLI prints it without a traceback."""


# --------------------------------------------------------------------------- configuration


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


# --------------------------------------------------------------------------- status


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


# --------------------------------------------------------------------------- up / down


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


def _validate_topics(topics: Sequence[tuple[str, int]]) -> None:
    for name, partitions in topics:
        if not name or partitions < 1:
            raise StackError(f"invalid topic ({name!r}, {partitions}): need a name, >= 1 partition")


# --------------------------------------------------------------------------- prerequisites


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError(f"Java {MIN_JAVA}+ is required to run Kafka: {JAVA_HINT}")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    major = _java_major(out.stderr + out.stdout)
    if major is None or major < MIN_JAVA:
        found = f"Java {major}" if major else "an unrecognised Java"
        raise StackError(f"Kafka needs Java {MIN_JAVA}+, but {java} is {found}: {JAVA_HINT}")
    return java


def _java_major(version_output: str) -> int | None:
    """Parse `java -version`: 'version "17.0.15"' -> 17, legacy 'version "1.8.0_392"' -> 8."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if m is None:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def _require_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"Maven is required to fetch the Kafka jars: {MAVEN_HINT}")
    return mvn


def _require_redis_server(log: Log) -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    log("redis: redis-server not found, installing it with apt-get (Debian package redis-server)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "redis-server"]):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"could not install Redis ({exc}); run: {REDIS_INSTALL}") from exc
        if res.returncode != 0:
            tail = _tail_text(res.stdout + res.stderr, 10)
            raise StackError(f"`{' '.join(cmd)}` failed:\n{tail}\nInstall Redis: {REDIS_INSTALL}")
    found = shutil.which("redis-server")
    if found is None:
        raise StackError(f"redis-server still not on PATH after apt-get; run: {REDIS_INSTALL}")
    return found


# --------------------------------------------------------------------------- kafka


def _kafka_pid_file(cfg: StackConfig) -> Path:
    return cfg.kafka_dir / "kafka.pid"


def _server_properties(cfg: StackConfig) -> Path:
    return cfg.kafka_dir / "server.properties"


def _server_out(cfg: StackConfig) -> Path:
    return cfg.kafka_dir / "logs" / "server.out"


def render_server_properties(cfg: StackConfig) -> str:
    """Single node, combined broker+controller. Static voters (not bootstrap.servers) so that
    `format` needs no --standalone. No inline comments: .properties files don't have them."""
    voter = f"1@{HOST}:{cfg.controller_port}"
    listeners = f"PLAINTEXT://{HOST}:{cfg.kafka_port},CONTROLLER://{HOST}:{cfg.controller_port}"
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters={voter}",
        f"listeners={listeners}",
        f"advertised.listeners={listeners}",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={cfg.kafka_dir / 'data'}",
        "num.partitions=1",
        "auto.create.topics.enable=true",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
    ]
    return "\n".join(lines) + "\n"


def _resource_text(name: str) -> str:
    return resources.files("streams").joinpath("resources", "kafka", name).read_text("utf-8")


def _kafka_pid(cfg: StackConfig) -> int | None:
    """Our broker's pid: from the pid file, else whoever listens on the port if it is our broker
    (covers a lost pid file). Never trusts a recycled pid."""
    return _our_pid(_kafka_pid_file(cfg), cfg.kafka_port, lambda pid: _is_our_kafka(cfg, pid))


def _is_our_kafka(cfg: StackConfig, pid: int) -> bool:
    cmd = _cmdline(pid)
    return "kafka.Kafka" in cmd and str(_server_properties(cfg)) in cmd


def _start_kafka(cfg: StackConfig, java: str, log: Log) -> subprocess.Popen[bytes] | None:
    """Start the broker unless ours is already up. Returns the new process (None if reused)."""
    pid = _kafka_pid(cfg)
    if pid is not None:
        log(f"kafka: already running (pid {pid}), not starting another one")
        return None
    _fetch_jars(cfg, log)
    _write_kafka_config(cfg)
    _format_storage(cfg, java, log)
    return _spawn_broker(cfg, java, log)


def _fetch_jars(cfg: StackConfig, log: Log) -> None:
    """Fetch the broker's runtime closure into lib/ unless it already holds this version.
    Downloads into a sibling dir and swaps it in, so lib/ never mixes two versions."""
    lib = cfg.kafka_dir / "lib"
    if _lib_version(lib) == cfg.kafka_version:
        return
    mvn = _require_maven()
    cfg.kafka_dir.mkdir(parents=True, exist_ok=True)
    (cfg.kafka_dir / "pom.xml").write_text(_resource_text("pom.xml"))
    tmp = cfg.kafka_dir / "lib.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"kafka: fetching Kafka {cfg.kafka_version} jars with Maven into {lib} (first run only)")
    started = time.monotonic()
    _run_maven(mvn, cfg, tmp)
    _check_jars(tmp, cfg.kafka_version)
    (tmp / VERSION_MARKER).write_text(cfg.kafka_version + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    log(f"kafka: {len(list(lib.glob('*.jar')))} jars fetched in {time.monotonic() - started:.1f}s")


def _lib_version(lib: Path) -> str | None:
    try:
        return (lib / VERSION_MARKER).read_text().strip()
    except OSError:
        return None


def _run_maven(mvn: str, cfg: StackConfig, out_dir: Path) -> None:
    cmd = [
        mvn, "-q", "-B", "-f", str(cfg.kafka_dir / "pom.xml"), MAVEN_DEP_PLUGIN,
        "-DincludeScope=runtime", f"-DoutputDirectory={out_dir}",
        f"-Dkafka.version={cfg.kafka_version}",
    ]  # fmt: skip
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise StackError(
            f"Maven did not finish within {FETCH_TIMEOUT_S:.0f}s; check network access "
            "to Maven Central (or ~/.m2/settings.xml mirrors) and retry"
        ) from exc
    if res.returncode != 0:
        raise StackError(
            f"fetching the Kafka jars with Maven failed (exit {res.returncode}):\n"
            f"{_tail_text(res.stdout + res.stderr, 20)}\n"
            "Check network access to Maven Central (or ~/.m2/settings.xml mirrors) and retry."
        )


def _check_jars(lib: Path, version: str) -> None:
    names = {p.name for p in lib.glob("*.jar")}
    wanted = [f"kafka_2.13-{version}.jar"] + [
        f"kafka-{m}-{version}.jar" for m in ("server", "raft", "metadata", "storage", "clients")
    ]
    missing = [w for w in wanted if w not in names]
    if missing or not any(n.startswith("log4j-core-") for n in names):
        what = missing or "log4j-core"
        raise StackError(f"Maven finished but jars are missing from {lib}: {what}")


def _write_kafka_config(cfg: StackConfig) -> None:
    # Rendered on every start: ports come from the config and may change between runs.
    (cfg.kafka_dir / "logs").mkdir(parents=True, exist_ok=True)
    _server_properties(cfg).write_text(render_server_properties(cfg))
    (cfg.kafka_dir / "log4j2.properties").write_text(_resource_text("log4j2.properties"))


def new_cluster_id() -> str:
    """Same shape as Kafka's Uuid.randomUuid(): url-safe base64, no padding, never a leading
    '-' (Kafka avoids it too, it would look like a CLI option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _cluster_id(cfg: StackConfig) -> str:
    path = cfg.kafka_dir / "cluster.id"
    if not path.exists():
        path.write_text(new_cluster_id() + "\n")
    return path.read_text().strip()


def _format_storage(cfg: StackConfig, java: str, log: Log) -> None:
    if (cfg.kafka_dir / "data" / "meta.properties").exists():
        return  # formatted before; skip a JVM start (the format itself would be a no-op)
    log("kafka: formatting KRaft storage (first run only)")
    cmd = [
        java, *_log_opts(cfg), "-cp", _classpath(cfg), "kafka.tools.StorageTool", "format",
        "-t", _cluster_id(cfg), "-c", str(_server_properties(cfg)), "--ignore-formatted",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        tail = _tail_text(res.stdout + res.stderr, 20)
        raise StackError(f"formatting Kafka storage failed:\n{tail}")


def _classpath(cfg: StackConfig) -> str:
    return str(cfg.kafka_dir / "lib" / "*")  # expanded by java, not by a shell


def _log_opts(cfg: StackConfig) -> list[str]:
    return [
        f"-Dkafka.logs.dir={cfg.kafka_dir / 'logs'}",
        f"-Dlog4j2.configurationFile={cfg.kafka_dir / 'log4j2.properties'}",
    ]


def broker_command(cfg: StackConfig, java: str = "java") -> list[str]:
    heap = f"{cfg.kafka_heap_mb}m"
    return [
        java, f"-Xms{heap}", f"-Xmx{heap}", "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true", *_log_opts(cfg), "-cp", _classpath(cfg),
        "kafka.Kafka", str(_server_properties(cfg)),
    ]  # fmt: skip


def _spawn_broker(cfg: StackConfig, java: str, log: Log) -> subprocess.Popen[bytes]:
    out = _server_out(cfg)
    if out.exists():
        out.replace(out.with_name("server.out.1"))  # keep one previous run for post-mortems
    with out.open("wb") as sink:
        # New session: the broker outlives this process and ignores our terminal's Ctrl-C.
        proc = subprocess.Popen(
            broker_command(cfg, java), cwd=cfg.kafka_dir, stdin=subprocess.DEVNULL,
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    _write_pid_file(_kafka_pid_file(cfg), proc.pid)
    log(f"kafka: started broker pid {proc.pid} on {cfg.bootstrap} (log: {out})")
    return proc


def _wait_kafka_ready(
    cfg: StackConfig, proc: subprocess.Popen[bytes] | None, deadline: float, log: Log
) -> None:
    started = time.monotonic()

    def ready() -> bool:
        if proc is not None and proc.poll() is not None:
            what = f"the broker exited with code {proc.returncode}"
            raise _kafka_failure(cfg, what, "Fix the cause above and run `up` again.")
        return _port_open(cfg.kafka_port) and _run_async(_metadata_ok(cfg.bootstrap))

    if not _poll(ready, deadline):
        hint = "It may still be starting: `up` again keeps waiting, `down` stops it."
        raise _kafka_failure(cfg, "the broker did not become ready in time", hint)
    log(f"kafka: ready on {cfg.bootstrap} after {time.monotonic() - started:.1f}s")


def _kafka_failure(cfg: StackConfig, what: str, hint: str) -> StackError:
    out = _server_out(cfg)
    tail = _tail_file(out, 20)
    return StackError(f"Kafka failed to start: {what}. Last lines of {out}:\n{tail}\n{hint}")


async def _metadata_ok(bootstrap: str) -> bool:
    """A real request, not just an open port: the broker answers Metadata with itself in it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5.0)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 5.0)
        return bool(cluster.get("brokers"))
    except Exception:  # not ready yet: connection refused/reset, timeouts, coordinator loading
        return False
    finally:
        await admin.close()


# --------------------------------------------------------------------------- topics


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


# --------------------------------------------------------------------------- redis


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


# --------------------------------------------------------------------------- processes & ports


def _our_pid(pid_file: Path, port: int, is_ours: Callable[[int], bool]) -> int | None:
    pid = _read_pid(pid_file)
    if pid is not None and _pid_alive(pid) and is_ours(pid):
        return pid
    listener = _listener_pid(port)
    if listener is not None and is_ours(listener):
        return listener
    return None


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _write_pid_file(pid_file: Path, pid: int) -> None:
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def _pid_alive(pid: int) -> bool:
    """True for a live process. Reaps it if it is our exited child, and treats zombies as dead
    (the broker is our child when up() and down() run in one process, e.g. in tests)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in ("Z", "X", None)


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]  # the comm field may contain spaces and ')'


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _port_open(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _require_free_port(port: int, service: str, env_vars: str) -> None:
    if _port_open(port) or _listener_pid(port) is not None:
        raise StackError(
            f"port {port} is already in use by {_owner(port)}, not by this stack's {service}. "
            f"Stop that process or pick another port ({env_vars})."
        )


def _owner(port: int) -> str:
    pid = _listener_pid(port)
    if pid is None:
        return "another process"
    cmd = " ".join(_cmdline(pid))
    return f"pid {pid} ({cmd[:100]}{'...' if len(cmd) > 100 else ''})"


def _listener_pid(port: int) -> int | None:
    """Pid of the process listening on TCP `port` (Linux /proc), or None if unknown/none."""
    inodes = set(_listen_inodes(port))
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if not wanted.isdisjoint(_fd_links(fd_dir)):
            return int(fd_dir.parent.name)
    return None


def _fd_links(fd_dir: Path) -> Iterator[str]:
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return  # process gone or not ours to inspect
    for fd in fds:
        try:
            yield os.readlink(fd)
        except OSError:
            continue  # fd closed meanwhile (e.g. the one that listed this very directory)


def _listen_inodes(port: int) -> Iterator[str]:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                yield f[9]  # 0A = LISTEN; f[9] is the socket inode


# --------------------------------------------------------------------------- helpers


def _poll(condition: Callable[[], bool], deadline: float, interval_s: float = POLL_S) -> bool:
    """Re-check `condition` every `interval_s` until it holds (True) or `deadline` passes."""
    while True:
        if condition():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval_s, remaining))


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop
    (e.g. an async test or notebook): then it runs on a private loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _tail_text(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _tail_file(path: Path, n: int) -> str:
    try:
        return _tail_text(path.read_text(errors="replace"), n) or "(empty)"
    except OSError:
        return "(no log file)"

