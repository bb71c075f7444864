"""Fast tests for streams.stack: no JVM, no Maven, no Redis, no network beyond loopback sockets."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams import stack
from streams.stack import StackConfig, StackError, health, kafka, prereqs, procs, topics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cfg(tmp_path: Path) -> StackConfig:
    return StackConfig(
        root=tmp_path / "stk", kafka_port=free_port(), controller_port=free_port(),
        redis_port=free_port(),
    )  # fmt: skip


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A foreign process-like listener on a loopback port (owned by this test process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CITYOPS_STACK_DIR", "CITYOPS_KAFKA_PORT", "CITYOPS_KAFKA_CONTROLLER_PORT",
                "CITYOPS_REDIS_PORT"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


# --------------------------------------------------------------------------- config


def test_from_env_defaults(no_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = StackConfig.from_env()
    assert c.root == tmp_path.resolve() / ".stack"
    assert (c.kafka_port, c.controller_port, c.redis_port) == (9092, 9093, 6379)
    assert c.kafka_version == stack.KAFKA_VERSION and c.kafka_heap_mb == 512
    assert c.bootstrap == "127.0.0.1:9092"
    assert c.redis_url == "redis://127.0.0.1:6379/0"


def test_from_env_overrides(no_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_STACK_DIR", str(tmp_path / "envdir"))
    monkeypatch.setenv("CITYOPS_KAFKA_PORT", "19192")
    monkeypatch.setenv("CITYOPS_KAFKA_CONTROLLER_PORT", " 19193 ")
    monkeypatch.setenv("CITYOPS_REDIS_PORT", "16380")
    c = StackConfig.from_env()
    assert c.root == tmp_path / "envdir"
    assert (c.kafka_port, c.controller_port, c.redis_port) == (19192, 19193, 16380)
    assert StackConfig.from_env(root=tmp_path / "explicit").root == tmp_path / "explicit"


@pytest.mark.parametrize("var", ["CITYOPS_KAFKA_PORT", "CITYOPS_KAFKA_CONTROLLER_PORT",
                                 "CITYOPS_REDIS_PORT"])  # fmt: skip
@pytest.mark.parametrize("value", ["abc", "9092.5", "0", "70000", "-1"])
def test_from_env_bad_port_names_the_variable(
    no_env: None, monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(StackError, match=var):
        StackConfig.from_env()


def test_ports_must_differ(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="must differ"):
        StackConfig(root=tmp_path, kafka_port=9092, controller_port=9092)


# --------------------------------------------------------------------------- rendered files


def test_server_properties_uses_ports_and_paths(cfg: StackConfig) -> None:
    text = stack.render_server_properties(cfg)
    props = dict(line.split("=", 1) for line in text.splitlines())
    k, c = cfg.kafka_port, cfg.controller_port
    assert props["controller.quorum.voters"] == f"1@127.0.0.1:{c}"
    listeners = f"PLAINTEXT://127.0.0.1:{k},CONTROLLER://127.0.0.1:{c}"
    assert props["listeners"] == props["advertised.listeners"] == listeners
    assert props["log.dirs"] == str(cfg.root / "kafka" / "data")
    assert Path(props["log.dirs"]).is_absolute()
    assert props["process.roles"] == "broker,controller"
    assert props["offsets.topic.replication.factor"] == "1"
    assert "controller.quorum.bootstrap.servers" not in props  # would need format --standalone
    assert "#" not in text  # .properties have no inline comments


def test_broker_command(cfg: StackConfig) -> None:
    cmd = stack.broker_command(cfg, "/usr/bin/java")
    assert cmd[0] == "/usr/bin/java"
    assert "-Xms512m" in cmd and "-Xmx512m" in cmd
    assert cmd[cmd.index("-cp") + 1] == str(cfg.root / "kafka" / "lib" / "*")
    assert f"-Dlog4j2.configurationFile={cfg.root / 'kafka' / 'log4j2.properties'}" in cmd
    assert cmd[-2:] == ["kafka.Kafka", str(cfg.root / "kafka" / "server.properties")]


def test_redis_command(cfg: StackConfig) -> None:
    cmd = stack.redis_command(cfg)
    opts = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert opts["--port"] == str(cfg.redis_port)
    assert opts["--bind"] == "127.0.0.1"
    assert opts["--dir"] == str(cfg.root / "redis")
    assert opts["--pidfile"] == str(cfg.root / "redis" / "redis.pid")
    assert opts["--daemonize"] == "yes" and opts["--appendonly"] == "yes" and opts["--save"] == ""


def test_pom_resource() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.fromstring(kafka._resource_text("pom.xml"))
    found = root.iterfind(".//m:dependency", ns)
    deps = {d.findtext("m:artifactId", namespaces=ns): d for d in found}
    assert set(deps) == {"kafka_2.13", "log4j-slf4j-impl", "log4j-api", "log4j-core"}
    assert deps["kafka_2.13"].findtext("m:version", namespaces=ns) == "${kafka.version}"
    assert root.findtext("m:properties/m:kafka.version", namespaces=ns) == stack.KAFKA_VERSION  # the pom and the code agree
    excluded = deps["kafka_2.13"].findtext("m:exclusions/m:exclusion/m:groupId", namespaces=ns)
    assert excluded == "ch.qos.logback"


def test_log4j2_resource() -> None:
    text = kafka._resource_text("log4j2.properties")
    assert "appender.out.type = Console" in text
    assert "shutdownHook = disable" in text


def test_cluster_id_shape() -> None:
    for _ in range(200):
        cid = stack.new_cluster_id()
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid) and not cid.startswith("-")


# --------------------------------------------------------------------------- prerequisites


@pytest.mark.parametrize(("text", "major"), [
    ('openjdk version "17.0.15" 2025-04-15', 17),
    ('openjdk version "21" 2023-09-19', 21),
    ('java version "1.8.0_392"', 8),
    ("something else", None),
])  # fmt: skip
def test_java_major(text: str, major: int | None) -> None:
    assert prereqs._java_major(text) == major


def test_missing_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(StackError, match=r"Java 17\+ is required.*apt-get install -y openjdk-17"):
        prereqs._require_java()


def test_old_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: "/opt/jdk11/bin/java")
    fake = SimpleNamespace(stdout="", stderr='openjdk version "11.0.2" 2019-01-15')
    monkeypatch.setattr("subprocess.run", lambda *a, **k: fake)
    with pytest.raises(StackError, match=r"Java 11.*openjdk-17"):
        prereqs._require_java()


def test_missing_maven_when_jars_needed(cfg: StackConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(StackError, match=r"Maven is required.*apt-get install -y maven"):
        kafka._fetch_jars(cfg, log=lambda _: None)


def test_no_maven_needed_when_jars_present(
    cfg: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = cfg.kafka_dir / "lib"
    lib.mkdir(parents=True)
    (lib / ".kafka-version").write_text(stack.KAFKA_VERSION + "\n")
    monkeypatch.setattr("shutil.which", lambda name: None)
    kafka._fetch_jars(cfg, log=lambda _: None)  # no error: nothing to fetch


def _fake_maven(version: str) -> Any:
    def run(mvn: str, cfg: StackConfig, out_dir: Path) -> None:
        out_dir.mkdir(parents=True)
        names = [f"kafka_2.13-{version}.jar", "log4j-core-2.24.3.jar"] + [
            f"kafka-{m}-{version}.jar" for m in ("server", "raft", "metadata", "storage", "clients")
        ]
        for name in names:
            (out_dir / name).write_bytes(b"")

    return run


def test_other_version_in_lib_is_replaced_not_mixed(
    cfg: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = cfg.kafka_dir / "lib"
    lib.mkdir(parents=True)
    (lib / ".kafka-version").write_text("3.9.1\n")
    (lib / "kafka_2.13-3.9.1.jar").write_bytes(b"")
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(kafka, "_run_maven", _fake_maven(stack.KAFKA_VERSION))
    kafka._fetch_jars(cfg, log=lambda _: None)
    assert (lib / ".kafka-version").read_text().strip() == stack.KAFKA_VERSION
    assert not list(lib.glob("*3.9.1*"))
    assert (lib / f"kafka_2.13-{stack.KAFKA_VERSION}.jar").exists()
    assert (cfg.kafka_dir / "pom.xml").exists()


def test_incomplete_maven_result_is_an_error(
    cfg: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(kafka, "_run_maven", _fake_maven("4.0.0"))  # wrong jars
    with pytest.raises(StackError, match="jars are missing"):
        kafka._fetch_jars(cfg, log=lambda _: None)
    assert not (cfg.kafka_dir / "lib").exists()


def test_redis_install_failure_tells_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    failed = subprocess.CompletedProcess(["apt-get"], 100, "", "E: Unable to locate package")
    monkeypatch.setattr("subprocess.run", lambda *a, **k: failed)
    with pytest.raises(StackError, match="apt-get install -y redis-server") as err:
        prereqs._require_redis_server(log=lambda _: None)
    assert "Unable to locate package" in str(err.value)


def test_promtool_install_failure_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    failed = subprocess.CompletedProcess(["apt-get"], 100, "", "E: Unable to locate package prometheus")
    monkeypatch.setattr("subprocess.run", lambda *a, **k: failed)
    with pytest.raises(StackError, match="apt-get install -y --no-install-recommends prometheus"):
        prereqs._require_promtool(log=lambda _: None)


# --------------------------------------------------------------------------- status / up / down


def test_status_of_empty_dir_is_stopped(cfg: StackConfig) -> None:
    st = stack.status(cfg)
    assert not st.all_running
    assert (st.kafka.detail, st.redis.detail) == ("stopped", "stopped")
    assert st.kafka.address == cfg.bootstrap and st.kafka.pid is None


def test_status_ignores_garbage_and_recycled_pid_files(cfg: StackConfig) -> None:
    (cfg.root / "kafka").mkdir(parents=True)
    (cfg.root / "redis").mkdir(parents=True)
    (cfg.root / "kafka" / "kafka.pid").write_text("not a pid")
    (cfg.root / "redis" / "redis.pid").write_text(str(os.getpid()))  # alive, but not Redis
    st = stack.status(cfg)
    assert (st.kafka.running, st.redis.running) == (False, False)
    assert st.redis.pid is None


def test_status_names_a_foreign_port_owner(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    c = StackConfig(root=tmp_path, kafka_port=port, controller_port=free_port())
    st = stack.status(c)
    assert not st.kafka.running
    assert f"pid {os.getpid()}" in st.kafka.detail


def test_status_never_raises(cfg: StackConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_: Any) -> None:
        raise RuntimeError("proc unreadable")

    monkeypatch.setattr(health, "_kafka_pid", boom)  # where status() looks it up
    st = stack.status(cfg)
    assert not st.kafka.running and "proc unreadable" in st.kafka.detail


def test_up_refuses_a_foreign_port(
    tmp_path: Path, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # up() lives in streams/stack/__init__.py and looks these up in the package namespace
    monkeypatch.setattr(stack, "_require_java", lambda: "/usr/bin/java")
    monkeypatch.setattr(stack, "_require_redis_server", lambda log: "/usr/bin/redis-server")
    monkeypatch.setattr(stack, "_require_promtool", lambda log: "/usr/bin/promtool")
    port = listener.getsockname()[1]
    c = StackConfig(root=tmp_path / "s", kafka_port=free_port(), controller_port=free_port(),
                    redis_port=port)  # fmt: skip
    with pytest.raises(StackError, match=rf"port {port} is already in use.*CITYOPS_REDIS_PORT"):
        stack.up(c, log=lambda _: None)
    assert not (tmp_path / "s" / "kafka").exists()  # nothing half-started


def test_up_rejects_bad_topics(cfg: StackConfig) -> None:
    with pytest.raises(StackError, match="partition"):
        stack.up(cfg, [("t", 0)], log=lambda _: None)


def test_down_on_stopped_stack_is_fine(cfg: StackConfig) -> None:
    st = stack.down(cfg, log=lambda _: None)
    assert not st.kafka.running and not st.redis.running
    assert not cfg.root.exists()  # down never creates the state dir
    (cfg.root / "kafka").mkdir(parents=True)
    (cfg.root / "kafka" / "kafka.pid").write_text("999999999\n")  # stale
    lines: list[str] = []
    st = stack.down(cfg, log=lines.append)
    assert not st.all_running
    assert lines == ["kafka: not running", "redis: not running"]
    assert not (cfg.root / "kafka" / "kafka.pid").exists()


def test_kafka_failure_shows_last_20_lines(cfg: StackConfig) -> None:
    out = cfg.root / "kafka" / "logs" / "server.out"
    out.parent.mkdir(parents=True)
    out.write_text("".join(f"line {i}\n" for i in range(50)))
    msg = str(kafka._kafka_failure(cfg, "the broker exited with code 1", "Fix it."))
    assert "line 30" in msg and "line 49" in msg and "line 29" not in msg


# --------------------------------------------------------------------------- helpers


def test_poll_respects_deadline() -> None:
    start = time.monotonic()
    assert not procs._poll(lambda: False, start + 0.3, interval_s=0.05)
    assert 0.3 <= time.monotonic() - start < 1.0
    assert procs._poll(lambda: True, start - 10)


def test_pid_alive_treats_exited_child_as_dead() -> None:
    assert procs._pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    assert procs._poll(lambda: not procs._pid_alive(proc.pid), time.monotonic() + 10)


def test_listener_pid_finds_us(listener: socket.socket) -> None:
    assert procs._listener_pid(listener.getsockname()[1]) == os.getpid()
    assert procs._listener_pid(free_port()) is None


async def test_run_async_inside_a_running_loop() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert procs._run_async(answer()) == 42


def test_topic_errors() -> None:
    ok = SimpleNamespace(topic_errors=[("a", 0, None), ("b", 36, "exists")])
    topics._raise_topic_errors(ok)
    bad = SimpleNamespace(topic_errors=[("c", 37, "Number of partitions is invalid.")])
    with pytest.raises(StackError, match="'c'.*partitions is invalid"):
        topics._raise_topic_errors(bad)


def test_topics_ready() -> None:
    led = {"error_code": 0, "partitions": [{"leader": 1}, {"leader": 1}]}
    assert topics._topics_ready([led])
    assert not topics._topics_ready([{"error_code": 0, "partitions": [{"leader": -1}]}])
    assert not topics._topics_ready([{"error_code": 3, "partitions": []}])
