"""The Prometheus alert rules for the pipeline (docker/prometheus/cityops-rules.yml):
valid for promtool, behaving as their unit tests say, and naming only metrics the
worker exports (a renamed metric would silently turn a rule into one that never fires)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.loop_watchdog import LoopWatchdog
from streams.metrics import Metrics
from tests.unit.test_dashboards import COLLECTOR_METRICS
from tests.unit.test_topology import REPO

RULES = REPO / "docker" / "prometheus" / "cityops-rules.yml"
RULE_TESTS = REPO / "tests" / "prometheus" / "cityops-rules.test.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run `make test` (`cityops stack up` installs the prometheus package)")
    return found


def test_the_rules_pass_promtool_check() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=120, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_names_metrics_the_worker_exports() -> None:
    registry = CollectorRegistry()
    Metrics.create(registry)
    LoopWatchdog(registry)  # cityops_loop_stall_seconds
    exported: set[str] = set(COLLECTOR_METRICS)
    for family in registry.collect():
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
    exported.update(f"{family.name}_{suffix}" for family in registry.collect() if family.type == "histogram"
                    for suffix in ("bucket", "count", "sum"))
    exported.update(f"{family.name}_total" for family in registry.collect() if family.type == "counter")
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    used = {name for rule in rules for name in re.findall(r"\bcityops_[a-z_]+", rule["expr"])}
    assert used, "the rules name no cityops metric"
    assert used <= exported, f"not exported by the worker: {sorted(used - exported)}"


def test_every_rule_has_a_test() -> None:
    rules = {rule["alert"] for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    assert rules <= tested, f"untested: {sorted(rules - tested)}"
