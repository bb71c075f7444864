"""`cityops alarms ...`: a thin client of the operator API (streams/operator_api.py).

The API is served by a worker (its web port, under /api/v1) when the worker has
CITYOPS_OPERATOR_TOKENS; this client sends the token of CITYOPS_OPERATOR_TOKEN.
Every HTTP or connection problem is a :class:`CityOpsError`: one line naming
the problem, exit 2, no traceback.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Annotated, Any, Optional

import typer

from streams.errors import CityOpsError, ConfigError
from streams.timeparse import parse_duration

TOKEN_ENV = "CITYOPS_OPERATOR_TOKEN"
API_PREFIX = "/api/v1"
TIMEOUT_S = 10.0
_MATCHER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(=~|!~|!=|=)(.*)$", re.DOTALL)
_OPS = {"=": (True, False), "!=": (False, False), "=~": (True, True), "!~": (False, True)}  # (is_equal, is_regex)

alarms_app = typer.Typer(no_args_is_help=True, help="Acknowledge, comment, clear and silence alarms (operator API).")

UrlOpt = Annotated[Optional[str], typer.Option(
    "--url", help="the worker's web server (default http://127.0.0.1:$CITYOPS_WEB_PORT)", show_default=False)]


class OperatorClient:
    """JSON over HTTP with ``Authorization: Bearer <token>`` (urllib: no event loop needed)."""

    def __init__(self, base_url: str, token: str, timeout_s: float = TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        url = f"{self.base_url}{API_PREFIX}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise CityOpsError(f"{method} {url}: {_http_problem(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            msg = (f"cannot reach the operator API at {self.base_url} ({reason}); is a worker running there "
                   f"with CITYOPS_OPERATOR_TOKENS set? (--url, CITYOPS_WEB_PORT)")
            raise CityOpsError(msg) from None
        except ValueError as exc:  # not JSON
            raise CityOpsError(f"{method} {url}: the answer is not JSON ({exc})") from None


def _http_problem(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read() or b"{}")
    except ValueError:
        payload = None
    message = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(message, str):  # not the API's error shape: something else answered
        if exc.code == 404:
            return ("HTTP 404: no operator API there; the worker serves it only when CITYOPS_OPERATOR_TOKENS "
                    "is set")
        return f"HTTP {exc.code} {exc.reason}"
    field = payload.get("field") if isinstance(payload, dict) else None
    hint = {401: f" (set {TOKEN_ENV})", 403: f" (check {TOKEN_ENV})"}.get(exc.code, "")
    where = f" [{field}]" if isinstance(field, str) and field else ""
    return f"HTTP {exc.code} {exc.reason}: {message}{where}{hint}"


def _client(url: str | None) -> OperatorClient:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        msg = f"{TOKEN_ENV} is not set: export your operator token (one of the worker's CITYOPS_OPERATOR_TOKENS)"
        raise ConfigError(msg)
    if url is None:
        from streams.settings import Settings

        url = f"http://127.0.0.1:{Settings.from_env().web_port}"
    if not re.match(r"^https?://[^/]+", url):
        raise ConfigError(f"--url {url!r}: expected http://host:port")
    return OperatorClient(url, token)


def _key(key: str) -> str:
    return urllib.parse.quote(key, safe="")


def parse_matcher(text: str) -> dict[str, Any]:
    """``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex`` -> an API matcher."""
    found = _MATCHER.match(text)
    if not found:
        raise ConfigError(f"--match {text!r}: expected name=value (or name!=value, name=~regex, name!~regex)")
    name, op, value = found.groups()
    is_equal, is_regex = _OPS[op]
    return {"name": name, "value": value, "is_regex": is_regex, "is_equal": is_equal}


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _alarm_line(alarm: dict[str, Any]) -> str:
    silenced = " (silenced)" if alarm.get("silenced_by") else ""
    return (f"{alarm['state']:<13} {alarm['severity']:<8} {alarm['alarm_key']:<36} {alarm['district']:<12} "
            f"{_time(alarm['last_seen_ms'])}  {alarm['summary']}{silenced}")


def _done(alarm: dict[str, Any], what: str) -> None:
    typer.echo(f"{alarm['alarm_key']}: {what}; now {alarm['state']} (occurrence {alarm['id']})")


@alarms_app.command("ls")
def alarms_ls(
    state: Annotated[Optional[str], typer.Option(help="ACTIVE_UNACK|ACTIVE_ACK|CLEARED_UNACK|CLEARED_ACK")] = None,
    kind: Annotated[Optional[str], typer.Option(help="sensor kind (air, hazmat, ...)")] = None,
    severity_at_least: Annotated[Optional[str], typer.Option("--severity-at-least", help="e.g. major")] = None,
    district: Annotated[Optional[str], typer.Option(help="district name")] = None,
    limit: Annotated[int, typer.Option(help="at most this many", min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON alarm per line")] = False,
    url: UrlOpt = None,
) -> None:
    """List alarms: active ones newest first, then cleared ones."""
    query = {k: v for k, v in {"state": state, "kind": kind, "severity_at_least": severity_at_least,
                                "district": district}.items() if v is not None}
    alarms = _client(url).call("GET", "/alarms", query={**query, "limit": str(limit)})["alarms"]
    for alarm in alarms:
        typer.echo(json.dumps(alarm, ensure_ascii=False) if as_json else _alarm_line(alarm))
    if not alarms and not as_json:
        typer.echo("no alarms")


@alarms_app.command("ack")
def alarms_ack(key: Annotated[str, typer.Argument(help="alarm_key, e.g. DG-GS-0001:gas_lel_alarm")],
               url: UrlOpt = None) -> None:
    """Acknowledge the key's newest alarm."""
    _done(_client(url).call("POST", f"/alarms/{_key(key)}/ack", body={}), "acknowledged")


@alarms_app.command("comment")
def alarms_comment(key: Annotated[str, typer.Argument(help="alarm_key")],
                   text: Annotated[str, typer.Argument(help="the comment")], url: UrlOpt = None) -> None:
    """Add a comment to the key's newest alarm (active or cleared)."""
    _done(_client(url).call("POST", f"/alarms/{_key(key)}/comment", body={"text": text}), "commented")


@alarms_app.command("clear")
def alarms_clear(key: Annotated[str, typer.Argument(help="alarm_key")],
                 reason: Annotated[str, typer.Option("--reason", help="why it is cleared by hand")],
                 url: UrlOpt = None) -> None:
    """Clear the key's active alarm by hand (its next firing opens a new one)."""
    _done(_client(url).call("POST", f"/alarms/{_key(key)}/clear", body={"reason": reason}), "cleared")


@alarms_app.command("silence")
def alarms_silence(
    match: Annotated[list[str], typer.Option("--match", help="label matcher: name=value, name!=value, name=~re, name!~re (repeat)")],
    duration: Annotated[str, typer.Option("--duration", help="how long, e.g. 30m, 2h, 1d")],
    comment: Annotated[str, typer.Option("--comment", help="why")],
    url: UrlOpt = None,
) -> None:
    """Silence matching alarms from now for --duration."""
    matchers = [parse_matcher(m) for m in match]
    ends_at_ms = time.time_ns() // 1_000_000 + parse_duration(duration)
    silence = _client(url).call("POST", "/silences",
                                body={"matchers": matchers, "ends_at_ms": ends_at_ms, "comment": comment})
    typer.echo(f"silence {silence['id']} {silence['state']} until {_time(silence['ends_at_ms'])}")


@alarms_app.command("silences")
def alarms_silences(
    state: Annotated[Optional[str], typer.Option(help="pending|active|expired")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON silence per line")] = False,
    url: UrlOpt = None,
) -> None:
    """List silences."""
    silences = _client(url).call("GET", "/silences", query={"state": state} if state else None)["silences"]
    for s in silences:
        if as_json:
            typer.echo(json.dumps(s, ensure_ascii=False))
            continue
        matchers = ", ".join(_render(m) for m in s["matchers"])
        typer.echo(f"{s['id']}  {s['state']:<8} {_time(s['starts_at_ms'])} -> {_time(s['ends_at_ms'])}  "
                   f"by {s['created_by']}  {{{matchers}}}  {s['comment']}")
    if not silences and not as_json:
        typer.echo("no silences")


def _render(matcher: dict[str, Any]) -> str:
    op = next(o for o, flags in _OPS.items() if flags == (matcher["is_equal"], matcher["is_regex"]))
    return f"{matcher['name']}{op}{json.dumps(matcher['value'], ensure_ascii=False)}"


@alarms_app.command("expire")
def alarms_expire(silence_id: Annotated[str, typer.Argument(metavar="ID", help="silence id")],
                  url: UrlOpt = None) -> None:
    """Expire a silence now."""
    silence = _client(url).call("DELETE", f"/silences/{_key(silence_id)}")
    typer.echo(f"silence {silence['id']} {silence['state']}")
