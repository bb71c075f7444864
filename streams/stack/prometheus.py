"""A real Prometheus (Debian package ``prometheus``) scraping cityops processes, for the
demo and the tests: a generated config (1 s scrapes, the pipeline's alert rules), its own
TSDB directory, a port of its own."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from streams.stack.config import StackError

RULES = Path(__file__).resolve().parents[2] / "docker" / "prometheus" / "cityops-rules.yml"


def scrape_config(targets: Sequence[str], rules: Path | None = RULES, interval: str = "1s") -> dict[str, Any]:
    """Prometheus config: job ``cityops`` (the name the alert rules expect) over ``targets`` (host:port)."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)] if rules is not None and rules.exists() else [],
        "scrape_configs": [{"job_name": "cityops", "static_configs": [{"targets": list(targets)}]}],
    }


class PrometheusProcess:
    def __init__(self, workdir: Path, targets: Sequence[str], port: int) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise StackError("prometheus is not installed: run `cityops stack up` (it installs the Debian package)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.workdir = port, workdir
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(scrape_config(targets)))
        self._log = (workdir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise StackError(f"prometheus exited {self.proc.returncode}; see {self.workdir / 'prometheus.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise StackError(f"prometheus not ready within {timeout_s:.0f} s; see {self.workdir / 'prometheus.log'}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (empty: no data)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}),
                                    timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise StackError(f"prometheus query {expr!r} failed: {body}")
        return list(body["data"]["result"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
