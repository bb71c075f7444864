"""The operator API: alarms, silences and the audit trail over HTTP (aiohttp.web).

:func:`create_operator_app` builds a self-contained application, routes under
``prefix`` (``/api/v1``), to run alone or to mount on the worker's web server.

Routes (JSON in and out; errors are ``{"error": message, "field": name|null}``):

- ``GET    /alarms?state=&kind=&severity_at_least=&district=&limit=``
- ``GET    /alarms/{key}``              the key's newest occurrence
- ``POST   /alarms/{key}/ack``          body ``{}`` or empty
- ``POST   /alarms/{key}/comment``      body ``{"text": ...}``
- ``POST   /alarms/{key}/clear``        body ``{"reason": ...}``
- ``GET    /silences?state=pending|active|expired``
- ``POST   /silences``                  body ``{matchers, ends_at_ms, comment, starts_at_ms?}`` -> 201
- ``GET    /silences/{id}``, ``DELETE /silences/{id}`` (expire)
- ``GET    /audit?limit=``              the operator audit trail, oldest first

Alarms carry ``silenced_by``: the ids of the silences that match them now.

Auth: ``Authorization: Bearer <token>``; the token names the operator, and
that name (never one from the body) goes into the audit trail. No bearer token:
401 with ``WWW-Authenticate``; an unknown one: 403. The presented token is
hashed and compared with ``hmac.compare_digest`` against the hash of every
configured token, without stopping at a match, so the time taken says nothing
about which token, or how much of one, matched.

Statuses: 400 bad query parameter or unparsable body, 422 a body or value the
stores reject (field named), 404 unknown alarm or silence, 409 an action the
state does not allow (ack twice, clear a cleared alarm, expire an expired silence).
Operator actions are stamped with the server's clock (``clock_ms``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, get_args

import msgspec
from aiohttp import web

from sinks.alarm_store import Alarm, AlarmNotFound, AlarmStateError, AlarmStore, AlarmStoreError, State, wall_clock_ms
from sinks.silences import (
    Matcher,
    Silence,
    SilenceNotFound,
    SilenceState,
    SilenceStateError,
    SilenceStore,
    SilenceValidationError,
    alarm_labels,
    matches,
)
from streams.errors import ConfigError
from streams.topology_spec import Severity

log = logging.getLogger(__name__)

OPERATOR_TOKENS_ENV = "CITYOPS_OPERATOR_TOKENS"
MAX_LIMIT = 1000
MAX_TEXT = 4096
_T = TypeVar("_T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def parse_operator_tokens(text: str) -> dict[str, str]:
    """``"alice:tok1,bob:tok2"`` -> ``{"tok1": "alice", "tok2": "bob"}`` (token -> operator)."""
    tokens: dict[str, str] = {}
    for i, entry in enumerate(e.strip() for e in text.split(",")):
        name, sep, token = entry.partition(":")
        name, token = name.strip(), token.strip()
        if not (sep and name and token):
            msg = f"{OPERATOR_TOKENS_ENV}[{i}]: expected 'operator:token', got {'an empty entry' if not entry else name!r}"
            raise ConfigError(msg)
        if token in tokens:
            msg = f"{OPERATOR_TOKENS_ENV}[{i}]: {name}'s token is also {tokens[token]}'s; give each operator their own"
            raise ConfigError(msg)
        tokens[token] = name
    return tokens


def operator_tokens_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tokens of ``CITYOPS_OPERATOR_TOKENS``; empty when it is unset or blank."""
    text = (os.environ if environ is None else environ).get(OPERATOR_TOKENS_ENV, "")
    return parse_operator_tokens(text) if text.strip() else {}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class _Api:
    store: AlarmStore
    silences: SilenceStore
    tokens: tuple[tuple[bytes, str], ...]  # (sha256 of the token, operator)
    clock_ms: Callable[[], int]

    def operator(self, token: str) -> str | None:
        presented, found = _digest(token), None
        for known, name in self.tokens:  # every token, always: no early exit
            if hmac.compare_digest(presented, known) and found is None:
                found = name
        return found


_API = web.AppKey("cityops_operator_api", _Api)
_OPERATOR = web.RequestKey("cityops_operator", str)


def create_operator_app(store: AlarmStore, silences: SilenceStore, tokens: Mapping[str, str], *,
                        clock_ms: Callable[[], int] | None = None, prefix: str = "/api/v1") -> web.Application:
    """``tokens``: token -> operator name (:func:`operator_tokens_from_env`). Mount it
    with ``parent.add_subapp("/api/v1", create_operator_app(..., prefix=""))``."""
    if not tokens:
        msg = f"the operator API needs at least one token: set {OPERATOR_TOKENS_ENV}='name:token,...'"
        raise ConfigError(msg)
    app = web.Application(middlewares=[_errors, _auth])
    app[_API] = _Api(store, silences, tuple((_digest(t), n) for t, n in tokens.items()), clock_ms or wall_clock_ms)
    app.router.add_get(f"{prefix}/alarms", _list_alarms)
    app.router.add_get(f"{prefix}/alarms/{{key}}", _get_alarm)
    app.router.add_post(f"{prefix}/alarms/{{key}}/ack", _ack)
    app.router.add_post(f"{prefix}/alarms/{{key}}/comment", _comment)
    app.router.add_post(f"{prefix}/alarms/{{key}}/clear", _clear)
    app.router.add_get(f"{prefix}/silences", _list_silences)
    app.router.add_post(f"{prefix}/silences", _create_silence)
    app.router.add_get(f"{prefix}/silences/{{id}}", _get_silence)
    app.router.add_delete(f"{prefix}/silences/{{id}}", _expire_silence)
    app.router.add_get(f"{prefix}/audit", _audit)
    return app


# ---- middlewares -------------------------------------------------------------------------------------------------

_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (AlarmNotFound, 404), (SilenceNotFound, 404), (AlarmStateError, 409), (SilenceStateError, 409),
    (SilenceValidationError, 422), (AlarmStoreError, 422),
)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.message, exc.field)
    except web.HTTPException as exc:  # no route, wrong method: JSON like every other error
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason, None)
    except (AlarmStoreError, SilenceNotFound, SilenceStateError, SilenceValidationError) as exc:
        status = next(code for kind, code in _STATUS if isinstance(exc, kind))
        return _error(status, str(exc), getattr(exc, "field", None))


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = _bearer(request.headers.get("Authorization"))
    if token is None:
        response = _error(401, "an operator token is needed: send 'Authorization: Bearer <token>'", None)
        response.headers["WWW-Authenticate"] = 'Bearer realm="cityops"'
        return response
    operator = request.app[_API].operator(token)
    if operator is None:
        log.warning("operator API: unknown token from %s for %s %s", request.remote, request.method, request.path)
        return _error(403, "this token is not an operator token", None)
    request[_OPERATOR] = operator
    return await handler(request)


def _bearer(header: str | None) -> str | None:
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _error(status: int, message: str, field: str | None) -> web.Response:
    return _json({"error": message, "field": field}, status)


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(payload), status=status, content_type="application/json")


# ---- request parsing ---------------------------------------------------------------------------------------------

def _query(request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in request.query.items():
        if name not in allowed:
            raise ApiError(400, f"unknown query parameter {name!r}; valid: {sorted(allowed)}", name)
        if name in out:
            raise ApiError(400, f"query parameter {name!r} given more than once", name)
        if not value.strip() or len(value) > 200:
            raise ApiError(400, f"query parameter {name!r} must be 1 to 200 characters", name)
        out[name] = value
    return out


def _choice(query: Mapping[str, str], name: str, valid: tuple[str, ...]) -> str | None:
    value = query.get(name)
    if value is not None and value not in valid:
        raise ApiError(400, f"{name}: {value!r} is not one of {list(valid)}", name)
    return value


def _limit(query: Mapping[str, str], default: int) -> int:
    text = query.get("limit", str(default))
    if not re.fullmatch(r"[0-9]{1,7}", text) or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiError(400, f"limit: {text!r} is not a whole number from 1 to {MAX_LIMIT}", "limit")
    return int(text)


async def _body(request: web.Request, kind: type[_T]) -> _T:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw if raw.strip() else b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(422, f"body: {exc}", _field(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}", "body") from None


def _field(problem: str) -> str:
    """msgspec's ``... field `x` - at `$.a[0]``` -> ``a[0].x``."""
    path = re.search(r"at `\$\.?([^`]*)`", problem)
    name = re.search(r"field `([^`]+)`", problem)
    parts = [p for p in (path.group(1) if path else "", name.group(1) if name else "") if p]
    return ".".join(parts) or "body"


_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]


class _Ack(msgspec.Struct, forbid_unknown_fields=True):
    pass


class _Comment(msgspec.Struct, forbid_unknown_fields=True):
    text: _Text


class _Clear(msgspec.Struct, forbid_unknown_fields=True):
    reason: _Text


class _NewSilence(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    matchers: list[Matcher]
    ends_at_ms: Annotated[int, msgspec.Meta(ge=0)]
    comment: _Text
    starts_at_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None  # default: now


# ---- handlers ----------------------------------------------------------------------------------------------------

_ALARM_PARAMS = frozenset({"state", "kind", "severity_at_least", "district", "limit"})
_SEVERITIES = tuple(s.value for s in Severity)


async def _list_alarms(request: web.Request) -> web.Response:
    api, query = request.app[_API], _query(request, _ALARM_PARAMS)
    alarms = await api.store.list(
        state=_choice(query, "state", get_args(State)),  # type: ignore[arg-type]  # checked against State
        kind=query.get("kind"), severity_at_least=_choice(query, "severity_at_least", _SEVERITIES),
        district=query.get("district"), limit=_limit(query, 100))
    return _json({"alarms": await _with_silences(api, alarms)})


async def _get_alarm(request: web.Request) -> web.Response:
    api, key = request.app[_API], request.match_info["key"]
    alarm = await api.store.get(key)
    if alarm is None:
        raise ApiError(404, f"alarm {key}: no such alarm", None)
    return _json((await _with_silences(api, [alarm]))[0])


async def _with_silences(api: _Api, alarms: list[Alarm]) -> list[dict[str, Any]]:
    now = api.clock_ms()
    active = await api.silences.list(active_at_ms=now) if alarms else []
    return [{**msgspec.to_builtins(a), "silenced_by": [s.id for s in matches(active, alarm_labels(a), now)]}
            for a in alarms]


async def _ack(request: web.Request) -> web.Response:
    api, key, who = request.app[_API], request.match_info["key"], request[_OPERATOR]
    await _body(request, _Ack)
    return _json(msgspec.to_builtins(await api.store.acknowledge(key, who, api.clock_ms())))


async def _comment(request: web.Request) -> web.Response:
    api, key, who = request.app[_API], request.match_info["key"], request[_OPERATOR]
    body = await _body(request, _Comment)
    return _json(msgspec.to_builtins(await api.store.comment(key, who, body.text, api.clock_ms())))


async def _clear(request: web.Request) -> web.Response:
    api, key, who = request.app[_API], request.match_info["key"], request[_OPERATOR]
    body = await _body(request, _Clear)
    return _json(msgspec.to_builtins(await api.store.clear(key, who, body.reason, api.clock_ms())))


def _silence_json(silence: Silence, now: int) -> dict[str, Any]:
    return {**msgspec.to_builtins(silence), "state": silence.state(now)}


async def _list_silences(request: web.Request) -> web.Response:
    api, query = request.app[_API], _query(request, frozenset({"state"}))
    state = _choice(query, "state", get_args(SilenceState))
    now = api.clock_ms()
    found = [s for s in await api.silences.list() if state is None or s.state(now) == state]
    return _json({"silences": [_silence_json(s, now) for s in found]})


async def _create_silence(request: web.Request) -> web.Response:
    api, who = request.app[_API], request[_OPERATOR]
    body = await _body(request, _NewSilence)
    now = api.clock_ms()
    silence = await api.silences.create(
        body.matchers, starts_at_ms=now if body.starts_at_ms is None else body.starts_at_ms,
        ends_at_ms=body.ends_at_ms, created_by=who, comment=body.comment, at_ms=now)
    return _json(_silence_json(silence, now), 201)


async def _get_silence(request: web.Request) -> web.Response:
    api, silence_id = request.app[_API], request.match_info["id"]
    silence = await api.silences.get(silence_id)
    if silence is None:
        raise ApiError(404, f"silence {silence_id}: no such silence", None)
    return _json(_silence_json(silence, api.clock_ms()))


async def _expire_silence(request: web.Request) -> web.Response:
    api, who = request.app[_API], request[_OPERATOR]
    now = api.clock_ms()
    return _json(_silence_json(await api.silences.expire(request.match_info["id"], who, now), now))


async def _audit(request: web.Request) -> web.Response:
    api = request.app[_API]
    limit = _limit(_query(request, frozenset({"limit"})), 100)
    return _json({"entries": msgspec.to_builtins(await api.silences.audit(limit))})
