"""docker/: the compose stack, the worker's Dockerfile, Prometheus and Grafana provisioning.

No Docker engine runs here, so what can be checked is checked: the compose file against
the compose specification's JSON schema (check-jsonschema's vendored copy), the
Prometheus config with promtool, the provisioning against the dashboards, and the
Dockerfile against the rules a linter would apply (hadolint is not packaged here).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streams.dashboards import DATASOURCE_UID
from streams.stack.config import KAFKA_VERSION
from tests.unit.test_topology import REPO

DOCKER = REPO / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_the_compose_file_follows_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(DOCKER / "compose.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_stack_runs_what_the_tests_ran() -> None:
    services = COMPOSE["services"]
    assert {"kafka", "redis", "worker", "deliver", "simulator", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    worker_env = services["worker"]["environment"]
    assert worker_env["CITYOPS_BOOTSTRAP"] == "kafka:9092" and worker_env["CITYOPS_REDIS_URL"].startswith("redis://redis:")
    assert worker_env["CITYOPS_DELIVERY"] == "separate" and services["deliver"]["command"][0] == "deliver"
    assert worker_env["CITYOPS_WEB_HOST"] == "0.0.0.0"  # else Prometheus, in its own container, cannot scrape it
    for name, service in services.items():  # every image pinned to a version
        image = service.get("image", "")
        assert image == "cityops:latest" or re.fullmatch(r"[\w./-]+:v?\d[\w.-]*", image), f"{name}: {image!r}"


def test_prometheus_config_is_valid_and_scrapes_the_worker_as_the_rules_expect() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make test` (`cityops stack up` installs the prometheus package)")
    config = DOCKER / "prometheus" / "prometheus.yml"
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    # CityopsWorkerDown uses job="cityops"; the worker runs --isolate hazmat: one target per process
    assert "--isolate" in COMPOSE["services"]["worker"]["command"]
    assert jobs["cityops"]["static_configs"][0]["targets"] == ["worker:6066", "worker:6067"]


def test_grafana_provisioning_serves_the_dashboards_with_their_data_source() -> None:
    source = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/cityops.yaml").read_text())["datasources"][0]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/cityops.yaml").read_text())["providers"][0]
    mounts = COMPOSE["services"]["grafana"]["volumes"]
    assert f"../dashboards:{provider['options']['path']}:ro" in mounts


def test_the_dockerfile_follows_the_usual_lint_rules() -> None:
    lines = [line.strip() for line in (DOCKER / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    base = next(line for line in lines if line.startswith("FROM "))
    assert re.fullmatch(r"FROM python:3\.11\.\d+-slim-bookworm", base), "pin the base image (DL3006/DL3007)"
    assert not any(line.startswith("ADD ") for line in lines), "COPY, not ADD (DL3020)"
    assert any(line.startswith("USER ") and "root" not in line for line in lines), "run as a non-root user (DL3002)"
    assert 'ENTRYPOINT ["cityops"]' in lines and any(line.startswith("HEALTHCHECK") for line in lines)
    copied = " ".join(line for line in lines if line.startswith("COPY "))
    for needed in ("pyproject.toml", "streams", "detectors", "sinks", "topology.yaml", "catalog"):
        assert needed in copied, f"the image lacks {needed}"
