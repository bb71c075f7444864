"""The Kafka broker: jars fetched with Maven, rendered config, KRaft storage format,
start and readiness. Files live under ``<root>/kafka``."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import time
import uuid
from importlib import resources
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from streams.stack.config import HOST, Log, StackConfig, StackError
from streams.stack.prereqs import _require_maven
from streams.stack.procs import (
    _cmdline,
    _our_pid,
    _poll,
    _port_open,
    _run_async,
    _tail_file,
    _tail_text,
    _write_pid_file,
)

MAVEN_DEP_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
FETCH_TIMEOUT_S = 900.0  # a cold ~/.m2 downloads ~45 jars (~40 MB)
VERSION_MARKER = ".kafka-version"


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
