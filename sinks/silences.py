"""Silences: an operator's "don't notify me about these alarms until then", in Redis.

Modelled on Alertmanager's silences (docs/domain-reference.md): a silence has
matchers over alarm labels, a ``[starts_at_ms, ends_at_ms)`` window, who created
it and why. It is *pending* before its start, *active* inside the window and
*expired* from its end on. Expiring one sets its end (and, if still pending, its
start) to the moment of the expiry, so it stops matching at once; it is kept for
``retention_ms`` after its end (Alertmanager keeps expired silences 120 h), then
deleted.

Labels are an alarm's ``alarm_key, rule, kind, sensor_id, site_id, district,
severity`` (:func:`alarm_labels`). A matcher ``{name, value, is_regex, is_equal}``
compares one label, a missing label being ``""`` as in Alertmanager; regexes
are fully anchored (``re.fullmatch``). A silence matches an alarm when every
matcher does. At least one matcher must not match ``""``, so that a silence
cannot match every alarm by accident (Alertmanager's rule).

Matching (:func:`matches`) is pure: the caller lists the silences once
(:meth:`SilenceStore.list`) and matches any number of alarms against them.

Keys (``S = cityops:<ns>:silences``):

- ``S:silence:<id>``  string  the :class:`Silence` as JSON
- ``S:ends``          zset    id -> ends_at_ms, every kept silence
- ``S:version``       string  INCR'd by every create and expire (in the same
  MULTI), so a reader can cache the list and re-read it only when it changed
  (:class:`SilenceCache`)
- ``cityops:<ns>:audit`` list the alarm store's audit trail; every create and
  expire appends one entry in the same MULTI as its write, shaped like the
  alarm store's ``{at_ms, who, what, alarm_key, alarm_id, state_before,
  state_after, text}`` with ``what`` = ``silence_create``/``silence_expire``,
  ``alarm_key``/``alarm_id`` = ``""``, silence states, and an extra
  ``silence_id``. :func:`read_audit` reads both kinds of entry.

A silence is a JSON blob, not a hash: it changes only as a whole (create,
expire), and expire is a WATCH/MULTI on its own key, which nothing else writes.
"""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Annotated, Literal, cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from sinks.alarm_store import Alarm, wall_clock_ms
from streams.errors import CityOpsError

SilenceState = Literal["pending", "active", "expired"]
LABELS: tuple[str, ...] = ("alarm_key", "rule", "kind", "sensor_id", "site_id", "district", "severity")
DEFAULT_RETENTION_MS = 120 * 3600 * 1000
MAX_MATCHERS = 32
MAX_TEXT = 4096
_EXPIRE_RETRIES = 20


class SilenceError(CityOpsError):
    """A silence request that cannot be carried out."""


class SilenceValidationError(SilenceError):
    """Bad input; ``field`` names it (``matchers[1].value``, ``ends_at_ms``...)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class SilenceNotFound(SilenceError):
    pass


class SilenceStateError(SilenceError):
    pass


class Matcher(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    value: Annotated[str, msgspec.Meta(max_length=1024)]
    is_regex: bool = False
    is_equal: bool = True  # False: the label must NOT match (Alertmanager's != and !~)

    def matches_value(self, value: str) -> bool:
        hit = _pattern(self.value).fullmatch(value) is not None if self.is_regex else value == self.value
        return hit == self.is_equal

    def render(self) -> str:
        op = {(True, False): "=", (True, True): "=~", (False, False): "!=", (False, True): "!~"}[
            (self.is_equal, self.is_regex)]
        return f"{self.name}{op}{msgspec.json.encode(self.value).decode()}"


class Silence(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    matchers: tuple[Matcher, ...]
    starts_at_ms: int
    ends_at_ms: int
    created_by: str
    comment: str
    created_at_ms: int
    updated_at_ms: int
    expired_by: str | None = None

    def state(self, at_ms: int) -> SilenceState:
        if at_ms >= self.ends_at_ms:
            return "expired"
        return "pending" if at_ms < self.starts_at_ms else "active"

    def is_active(self, at_ms: int) -> bool:
        return self.starts_at_ms <= at_ms < self.ends_at_ms

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches_value(labels.get(m.name, "")) for m in self.matchers)


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the operator audit trail, alarm or silence action."""

    at_ms: int
    who: str
    what: str
    alarm_key: str
    alarm_id: str
    state_before: str
    state_after: str
    text: str
    silence_id: str | None = None


@lru_cache(maxsize=1024)
def _pattern(value: str) -> re.Pattern[str]:
    return re.compile(value)


def alarm_labels(alarm: Alarm) -> dict[str, str]:
    return {"alarm_key": alarm.alarm_key, "rule": alarm.rule, "kind": alarm.kind, "sensor_id": alarm.sensor_id,
            "site_id": alarm.site_id, "district": alarm.district, "severity": alarm.severity}


def matches(silences: Sequence[Silence], labels: Mapping[str, str], at_ms: int) -> list[Silence]:
    """The silences active at ``at_ms`` whose matchers all match ``labels``."""
    return [s for s in silences if s.is_active(at_ms) and s.matches(labels)]


def validate_matchers(matchers: Sequence[Matcher]) -> None:
    if not matchers:
        raise SilenceValidationError("matchers", "at least one matcher is needed")
    if len(matchers) > MAX_MATCHERS:
        raise SilenceValidationError("matchers", f"at most {MAX_MATCHERS} matchers, got {len(matchers)}")
    for i, m in enumerate(matchers):
        if m.name not in LABELS:
            raise SilenceValidationError(f"matchers[{i}].name", f"unknown label {m.name!r}; valid: {list(LABELS)}")
        if m.is_regex:
            try:
                _pattern(m.value)
            except re.error as exc:
                raise SilenceValidationError(f"matchers[{i}].value", f"invalid regex {m.value!r}: {exc}") from None
    if all(m.matches_value("") for m in matchers):
        raise SilenceValidationError("matchers", "every matcher matches an empty label, so the silence would "
                                     "match every alarm; add a matcher that needs a value")


def _validate(created_by: str, comment: str, starts_at_ms: int, ends_at_ms: int, at_ms: int) -> None:
    if not created_by.strip():
        raise SilenceValidationError("created_by", "the operator's name is needed")
    if not comment.strip():
        raise SilenceValidationError("comment", "say why the alarms are silenced")
    if len(comment) > MAX_TEXT:
        raise SilenceValidationError("comment", f"at most {MAX_TEXT} characters")
    if ends_at_ms <= starts_at_ms:
        raise SilenceValidationError("ends_at_ms", f"must be after starts_at_ms ({ends_at_ms} <= {starts_at_ms})")
    if ends_at_ms <= at_ms:
        raise SilenceValidationError("ends_at_ms", f"is not in the future ({ends_at_ms} <= now {at_ms})")


class SilenceStore:
    """The silences of one namespace; see the module docstring."""

    def __init__(self, client: aioredis.Redis, namespace: str, *, retention_ms: int = DEFAULT_RETENTION_MS,
                 clock_ms: Callable[[], int] | None = None, new_id: Callable[[], str] | None = None) -> None:
        if retention_ms < 0:
            msg = f"silence store {namespace}: retention_ms must be >= 0"
            raise ValueError(msg)
        self._redis = client
        self.prefix = f"cityops:{namespace}:silences"
        self.audit_key = f"cityops:{namespace}:audit"
        self.version_key = f"{self.prefix}:version"
        self.retention_ms = retention_ms
        self.clock_ms = clock_ms or wall_clock_ms
        self._new_id = new_id or (lambda: uuid.uuid4().hex)

    def _key(self, silence_id: str) -> str:
        return f"{self.prefix}:silence:{silence_id}"

    async def create(self, matchers: Sequence[Matcher], *, starts_at_ms: int, ends_at_ms: int, created_by: str,
                     comment: str, at_ms: int) -> Silence:
        """Store a new silence. A start in the past becomes ``at_ms`` (a silence
        cannot have muted what happened before it existed)."""
        validate_matchers(matchers)
        _validate(created_by, comment, starts_at_ms, ends_at_ms, at_ms)
        silence = Silence(id=self._new_id(), matchers=tuple(matchers), starts_at_ms=max(starts_at_ms, at_ms),
                          ends_at_ms=ends_at_ms, created_by=created_by, comment=comment, created_at_ms=at_ms,
                          updated_at_ms=at_ms)
        entry = _entry(silence, at_ms, created_by, "silence_create", "", silence.state(at_ms), comment)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(silence.id), msgspec.json.encode(silence), nx=True)
            pipe.zadd(f"{self.prefix}:ends", {silence.id: ends_at_ms})
            pipe.rpush(self.audit_key, entry)
            pipe.incr(self.version_key)
            created, *_ = await pipe.execute()
        if not created:  # only with a colliding injected id; the audit entry went in, so say so loudly
            msg = f"silence {silence.id}: id already in use"
            raise SilenceStateError(msg)
        return silence

    async def expire(self, silence_id: str, who: str, at_ms: int) -> Silence:
        """End a pending or active silence now."""
        if not who.strip():
            raise SilenceValidationError("who", "the operator's name is needed")
        key = self._key(silence_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(_EXPIRE_RETRIES):
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        msg = f"silence {silence_id}: no such silence"
                        raise SilenceNotFound(msg)
                    old = _SILENCE.decode(raw)
                    before = old.state(at_ms)
                    if before == "expired":
                        msg = f"silence {silence_id}: already expired at {old.ends_at_ms}"
                        raise SilenceStateError(msg)
                    new = msgspec.structs.replace(old, starts_at_ms=min(old.starts_at_ms, at_ms), ends_at_ms=at_ms,
                                                  updated_at_ms=at_ms, expired_by=who)
                    pipe.multi()  # type: ignore[no-untyped-call]  # untyped in redis-py
                    pipe.set(key, msgspec.json.encode(new))
                    pipe.zadd(f"{self.prefix}:ends", {silence_id: at_ms})
                    pipe.rpush(self.audit_key, _entry(new, at_ms, who, "silence_expire", before, "expired", ""))
                    pipe.incr(self.version_key)
                    await pipe.execute()
                    return new
                except WatchError:
                    continue
        msg = f"silence {silence_id}: expire kept racing with other writers"
        raise SilenceError(msg)

    async def get(self, silence_id: str) -> Silence | None:
        raw = await self._redis.get(self._key(silence_id))
        return None if raw is None else _SILENCE.decode(raw)

    async def list(self, active_at_ms: int | None = None) -> builtins.list[Silence]:
        """Every kept silence (or those active at ``active_at_ms``), newest created first."""
        await self._prune()
        low = "-inf" if active_at_ms is None else f"({active_at_ms}"
        ids = _names(await self._redis.zrangebyscore(f"{self.prefix}:ends", low, "+inf"))
        if not ids:
            return []
        raws = await self._redis.mget([self._key(i) for i in ids])
        found = [_SILENCE.decode(r) for r in raws if r is not None]
        if active_at_ms is not None:
            found = [s for s in found if s.is_active(active_at_ms)]
        return sorted(found, key=lambda s: (s.created_at_ms, s.id), reverse=True)

    async def version(self) -> int:
        return int(await self._redis.get(self.version_key) or 0)

    async def _prune(self) -> None:
        cutoff = int(self.clock_ms()) - self.retention_ms
        old = _names(await self._redis.zrangebyscore(f"{self.prefix}:ends", "-inf", f"({cutoff}"))
        if old:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(*[self._key(i) for i in old])
                pipe.zrem(f"{self.prefix}:ends", *old)
                await pipe.execute()

    async def audit(self, limit: int = 100) -> builtins.list[AuditRecord]:
        return await read_audit(self._redis, self.audit_key, limit)


async def read_audit(client: aioredis.Redis, audit_key: str, limit: int = 100) -> list[AuditRecord]:
    """The last ``limit`` entries of the operator audit trail (alarm and silence actions), oldest first."""
    raw = await client.lrange(audit_key, -limit, -1)
    return [_AUDIT.decode(item) for item in raw]


def _names(raw: Sequence[object]) -> list[str]:
    return [cast(bytes, item).decode() for item in raw]


def _entry(silence: Silence, at_ms: int, who: str, what: str, before: str, after: str, text: str) -> bytes:
    return msgspec.json.encode(AuditRecord(
        at_ms=at_ms, who=who, what=what, alarm_key="", alarm_id="", state_before=before, state_after=after,
        text="{" + ",".join(m.render() for m in silence.matchers) + "}" + (f" {text}" if text else ""),
        silence_id=silence.id,
    ))


_SILENCE = msgspec.json.Decoder(Silence)
_AUDIT = msgspec.json.Decoder(AuditRecord)


class SilenceCache:
    """The silences not yet expired, re-read only when ``S:version`` moved: one
    GET per call on the hot path (the notifier asks once per batch)."""

    def __init__(self, store: SilenceStore) -> None:
        self.store = store
        self._version = -1
        self._silences: builtins.list[Silence] = []

    async def current(self, at_ms: int) -> builtins.list[Silence]:
        """The silences active at ``at_ms`` (pending ones start matching on time, no re-read needed)."""
        return await self.at_version(await self.store.version(), at_ms)

    async def at_version(self, version: int, at_ms: int) -> builtins.list[Silence]:
        """:meth:`current`, given the version the caller read (in its own pipeline)."""
        if version != self._version:
            self._silences = await self.store.list(active_at_ms=None)
            self._version = version
        return [s for s in self._silences if s.is_active(at_ms)]
