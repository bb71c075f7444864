"""Every dashboard panel and every alert rule against a real Prometheus scraping a real
pipeline: a panel that would show "No data" during the demo is a failure.

The set-up is the demo's: a worker (real Kafka and Redis) with both receivers on (a local
HTTP receiver), the simulated city at 300 readings/s, and a real Prometheus (Debian
package, installed by `cityops stack up`) scraping the worker every second and loading
docker/prometheus/cityops-rules.yml. Each panel query must return at least one series;
each alert rule's query (its expression without the final threshold comparison) too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from streams.dashboards import build_all
from streams.stack import StackConfig
from streams.stack.prometheus import RULES, PrometheusProcess
from streams.topology import Topology
from tests.integration.conftest import REPO, WorkerProcess, free_port, wait_for
from tests.integration.receiver import NotificationReceiver
from tests.integration.test_notifications import configure, receiver  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

_COMPARISON = re.compile(r"\s+(==|!=|>=|<=|>|<)\s")


def queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every alert rule's query part."""
    for name, model in build_all().items():
        for panel in model["panels"]:
            for target in panel["targets"]:
                yield f"{name}: {panel['title']} [{target['refId']}]", target["expr"]
    for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]:
        yield f"rule {rule['alert']}", rule_query(rule["expr"])


def rule_query(expr: str) -> str:
    """The expression up to its first comparison outside parentheses: what the rule watches."""
    depth = 0
    for i, char in enumerate(expr):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and _COMPARISON.match(expr, i):
            return expr[:i].strip()
    return expr.strip()


def test_every_panel_and_rule_returns_data_from_a_running_pipeline(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig, receiver: NotificationReceiver,
    tmp_path: Path,
) -> None:
    configure(isolated_topology, worker, receiver)
    worker.start()
    prometheus = PrometheusProcess(tmp_path / "prometheus", [f"127.0.0.1:{worker.web_port}"], free_port())
    prometheus.wait_ready()
    cityops = str(Path(sys.executable).with_name("cityops"))
    log = (tmp_path / "simulate.log").open("ab")
    sim = subprocess.Popen([cityops, "simulate", "--rate", "300", "--duration", "90", "--seed", "7",
                            "--topology", str(isolated_topology.path)], stdout=log, stderr=subprocess.STDOUT,
                           env=worker.env, cwd=REPO)
    try:
        pending = dict(queries())
        assert len(pending) >= 50, "fewer queries than panels and rules: queries() lost some"
        empty: dict[str, str] = {}

        def all_return_data() -> bool:
            worker.assert_alive()
            empty.clear()
            for where, expr in pending.items():
                if not prometheus.query(expr):
                    empty[where] = expr
            return not empty

        try:
            wait_for(all_return_data, 80, "every panel and rule query to return data")
        except AssertionError as exc:
            missing = "\n".join(f"  {where}: {expr}" for where, expr in empty.items())
            raise AssertionError(f"{exc}; still no data:\n{missing}") from None
        assert prometheus.query('up{job="cityops"}')[0]["value"][1] == "1"
    finally:
        sim.terminate()
        sim.wait(30)
        log.close()
        prometheus.stop()
