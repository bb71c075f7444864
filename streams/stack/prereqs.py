"""Prerequisites on PATH: Java 17+ and Maven (checked, with an install hint),
redis-server and promtool (Debian packages, installed with apt-get when missing)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from streams.stack.config import Log, StackError
from streams.stack.procs import _tail_text

MIN_JAVA = 17

JAVA_HINT = "install it with `apt-get install -y openjdk-17-jre-headless`"
MAVEN_HINT = "install it with `apt-get install -y maven`"
REDIS_INSTALL = "apt-get update && apt-get install -y redis-server"
PROMETHEUS_INSTALL = "apt-get update && apt-get install -y --no-install-recommends prometheus"


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
    return _require_debian_binary(log, "redis-server", "redis-server", REDIS_INSTALL)


def _require_promtool(log: Log) -> str:
    """promtool checks and unit-tests the Prometheus alert rules (docker/prometheus/)."""
    return _require_debian_binary(log, "promtool", "prometheus", PROMETHEUS_INSTALL)


def _require_debian_binary(log: Log, binary: str, package: str, hint: str) -> str:
    found = shutil.which(binary)
    if found:
        return found
    log(f"{binary} not found, installing it with apt-get (Debian package {package})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", package]):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"could not install {package} ({exc}); run: {hint}") from exc
        if res.returncode != 0:
            tail = _tail_text(res.stdout + res.stderr, 10)
            raise StackError(f"`{' '.join(cmd)}` failed:\n{tail}\nInstall it: {hint}")
    found = shutil.which(binary)
    if found is None:
        raise StackError(f"{binary} still not on PATH after apt-get; run: {hint}")
    return found
