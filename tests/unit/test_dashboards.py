"""The Grafana dashboards (streams/dashboards.py -> dashboards/*.json) and `dashboards push`.

No Grafana server is available here, so `push` runs against a local HTTP server that
answers like Grafana's HTTP API (GET/POST/PUT /api/datasources..., POST /api/dashboards/db)
and records what it was sent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.dashboards import DATASOURCE_UID, SCHEMA_VERSION, build_all, render
from streams.errors import CityOpsError
from streams.grafana_push import push
from streams.metrics import Metrics
from tests.unit.test_topology import REPO

MODELS = build_all()
# custom collectors (streams/latest.py, live_alarms.py, lag.py), registered by the Runtime
COLLECTOR_METRICS = {"cityops_latest_value", "cityops_latest_score", "cityops_live_alarm", "cityops_consumer_lag"}


def panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, model in MODELS.items():
        for panel in model["panels"]:
            yield name, panel


def test_the_committed_json_is_what_the_code_builds() -> None:
    for name, model in MODELS.items():
        committed = (REPO / "dashboards" / name).read_text(encoding="utf-8")
        assert committed == render(model), f"dashboards/{name} is stale: run `cityops dashboards build`"
    assert sorted(p.name for p in (REPO / "dashboards").glob("*.json")) == sorted(MODELS)


def test_the_dashboards_are_valid_grafana_models() -> None:
    assert len({m["uid"] for m in MODELS.values()}) == len(MODELS)
    for name, model in MODELS.items():
        assert model["schemaVersion"] == SCHEMA_VERSION and model["title"] and " / " in model["title"], name
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in model["panels"]:
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, (name, panel["title"])
            assert panel["datasource"]["uid"] == DATASOURCE_UID, (name, panel["title"])
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), (name, panel["title"])
            assert all(t["datasource"]["uid"] == DATASOURCE_UID and t["expr"].strip() for t in panel["targets"])


def test_every_query_names_only_metrics_the_worker_exports() -> None:
    registry = CollectorRegistry()
    Metrics.create(registry)
    exported = set(COLLECTOR_METRICS)
    for family in registry.collect():
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
        suffixes = {"histogram": ("bucket", "count", "sum"), "counter": ("total",)}.get(family.type, ())
        exported.update(f"{family.name}_{suffix}" for suffix in suffixes)
    for name, panel in panels():
        for target in panel["targets"]:
            used = set(re.findall(r"\bcityops_[a-z_]+", target["expr"]))
            assert used and used <= exported, (name, panel["title"], sorted(used - exported))


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make test` (`cityops stack up` installs the prometheus package)")
    rules = [{"record": f"cityops_panel_{i}", "expr": target["expr"]}
             for i, (_, panel) in enumerate(panels()) for target in panel["targets"]]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


class FakeGrafana:
    """Answers like Grafana's HTTP API and records (method, path, headers, body)."""

    def __init__(self, *, unauthorized: bool = False) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.datasources: dict[str, dict[str, Any]] = {}
        self.unauthorized = unauthorized
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((self.command, self.path, dict(self.headers), body))
                if fake.unauthorized:
                    return self._answer(401, {"message": "invalid API key"})
                uid_path = f"/api/datasources/uid/{DATASOURCE_UID}"
                if self.command == "GET" and self.path == uid_path:
                    found = fake.datasources.get(DATASOURCE_UID)
                    return self._answer(200, found) if found else self._answer(404, {"message": "not found"})
                if self.command == "POST" and self.path == "/api/datasources":
                    fake.datasources[body["uid"]] = body
                    return self._answer(200, {"id": 1, "message": "Datasource added"})
                if self.command == "PUT" and self.path == uid_path:
                    fake.datasources[DATASOURCE_UID] = body
                    return self._answer(200, {"message": "Datasource updated"})
                if self.command == "POST" and self.path == "/api/dashboards/db":
                    return self._answer(200, {"status": "success", "uid": body["dashboard"]["uid"], "version": 1})
                return self._answer(404, {"message": "no such endpoint"})

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    yield fake
    fake.close()


def test_push_creates_the_data_source_then_saves_every_dashboard(grafana: FakeGrafana) -> None:
    result = push(grafana.url, "tok-123", "http://prometheus:9090", folder_uid="city")
    assert result.datasource == "created" and sorted(result.dashboards) == sorted(m["uid"] for m in MODELS.values())
    methods = [(m, p) for m, p, _, _ in grafana.requests]
    assert methods[:2] == [("GET", f"/api/datasources/uid/{DATASOURCE_UID}"), ("POST", "/api/datasources")]
    assert methods[2:] == [("POST", "/api/dashboards/db")] * len(MODELS)
    assert all(h.get("Authorization") == "Bearer tok-123" for _, _, h, _ in grafana.requests)
    source = grafana.requests[1][3]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for _, _, _, body in grafana.requests[2:]:
        assert body["overwrite"] is True and body["folderUid"] == "city" and body["dashboard"]["id"] is None
        assert body["dashboard"] == {**MODELS[f"{body['dashboard']['uid'].removeprefix('cityops-')}.json"], "id": None}


def test_a_second_push_updates_the_data_source_in_place(grafana: FakeGrafana) -> None:
    push(grafana.url, "tok", "http://prometheus:9090")
    grafana.requests.clear()
    result = push(grafana.url, "tok", "http://prom2:9090")
    assert result.datasource == "updated"
    assert [(m, p) for m, p, _, _ in grafana.requests[:2]] == [
        ("GET", f"/api/datasources/uid/{DATASOURCE_UID}"), ("PUT", f"/api/datasources/uid/{DATASOURCE_UID}")]
    assert grafana.datasources[DATASOURCE_UID]["url"] == "http://prom2:9090"


def test_a_refused_token_and_a_dead_url_are_clear_errors() -> None:
    refusing = FakeGrafana(unauthorized=True)
    try:
        with pytest.raises(CityOpsError, match="refused the credentials \\(HTTP 401\\): set GRAFANA_TOKEN"):
            push(refusing.url, "bad", "http://prometheus:9090")
    finally:
        refusing.close()
    with pytest.raises(CityOpsError, match="cannot reach Grafana at http://127.0.0.1:1"):
        push("http://127.0.0.1:1", None, "http://prometheus:9090", timeout_s=2)
    with pytest.raises(CityOpsError, match="give Grafana's base URL"):
        push("grafana:3000", None, "http://prometheus:9090")
