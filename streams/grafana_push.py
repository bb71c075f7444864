"""`cityops dashboards push`: provision the Prometheus data source and the dashboards
in a Grafana, through grafana-client (the maintained successor of grafana-api).

Idempotent: the data source is looked up by its uid and updated, or created when
Grafana answers 404; every dashboard is saved with ``overwrite`` under its fixed uid.
Running it twice changes nothing but the dashboards' version numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaException, GrafanaUnauthorizedError

from streams.dashboards import DATASOURCE_UID, build_all
from streams.errors import CityOpsError

TOKEN_ENV = "GRAFANA_TOKEN"


@dataclass(frozen=True, slots=True)
class PushResult:
    datasource: str  # "created" | "updated"
    dashboards: list[str]  # uids


def datasource_model(prometheus_url: str) -> dict[str, Any]:
    return {"uid": DATASOURCE_UID, "name": "cityops Prometheus", "type": "prometheus", "access": "proxy",
            "url": prometheus_url, "isDefault": False, "jsonData": {"timeInterval": "15s"}}


def push(url: str, token: str | None, prometheus_url: str, *, folder_uid: str | None = None,
         api_factory: Callable[..., GrafanaApi] = GrafanaApi.from_url, timeout_s: float = 10.0) -> PushResult:
    """Provision everything; CityOpsError with what to fix for a bad URL, token or answer."""
    if not url.startswith(("http://", "https://")):
        raise CityOpsError(f"--url {url!r}: give Grafana's base URL, e.g. http://grafana:3000")
    api: Any = api_factory(url, credential=token or None, timeout=timeout_s)  # grafana-client has no type hints
    try:
        status = _datasource(api, prometheus_url)
        uids = []
        for model in build_all().values():
            payload: dict[str, Any] = {"dashboard": {**model, "id": None}, "overwrite": True,
                                       "message": "cityops dashboards push"}
            if folder_uid:
                payload["folderUid"] = folder_uid
            api.dashboard.update_dashboard(payload)
            uids.append(str(model["uid"]))
    except GrafanaUnauthorizedError as exc:
        hint = f"set {TOKEN_ENV} (or --token) to a service-account token with the Editor role"
        raise CityOpsError(f"Grafana at {url} refused the credentials (HTTP 401): {hint}") from exc
    except GrafanaException as exc:
        code = f"HTTP {exc.status_code}" if exc.status_code else "no answer"
        raise CityOpsError(f"Grafana at {url} ({code}): {exc.message}") from exc
    except OSError as exc:  # connection refused, DNS, TLS (niquests' errors are OSErrors)
        raise CityOpsError(f"cannot reach Grafana at {url}: {exc}") from exc
    return PushResult(status, uids)


def _datasource(api: Any, prometheus_url: str) -> str:
    model = datasource_model(prometheus_url)
    try:
        api.datasource.get_datasource_by_uid(DATASOURCE_UID)
    except GrafanaException as exc:
        if exc.status_code != 404:
            raise
        api.datasource.create_datasource(model)
        return "created"
    api.datasource.update_datasource_by_uid(DATASOURCE_UID, model)
    return "updated"
