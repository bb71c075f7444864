"""The alarm lifecycle store: one live alarm per ``alarm_key``, in Redis.

States are ThingsBoard's four (docs/domain-reference.md §1.2), not the issue's
three: acknowledgement and clearing are independent, so an alarm that cleared
on its own before anyone looked at it stays visible as ``CLEARED_UNACK`` until
an operator acknowledges it (``CLEARED_ACK``). The issue's ACTIVE_UNACK ->
ACTIVE_ACK -> CLEARED path is the special case "acknowledged, then cleared".

Lifecycle (:meth:`AlarmStore.apply`, events in order):

- ``firing`` or ``updated`` with no active occurrence for the key opens one
  (``ACTIVE_UNACK``); its ``id`` is :func:`alarm_id` of the opening alert_id.
  ``updated`` opens too: after an operator clear the detector is still in alarm
  and only reports level changes, which must not vanish.
- ``firing`` or ``updated`` on the active occurrence updates it in place:
  severity escalates or de-escalates, the latest fields are refreshed, ``count``
  and ``last_seen_ms`` advance, the peak is kept. An escalation above the
  severity an operator acknowledged re-arms it (``ACTIVE_ACK`` -> ``ACTIVE_UNACK``).
- ``resolved`` clears the active occurrence (``clear_reason="auto"``; the
  detector's hysteresis already decided it); with none active it is ignored.
- Operator :meth:`acknowledge` / :meth:`comment` / :meth:`clear` act on the
  key's newest occurrence; each appends one audit entry in the same script.

Peak: the most severe level reached by a firing/updated event; among events at
that level, the one furthest past its set point (``|value - threshold|``, or
the largest value without a threshold). ``resolved`` events never count: their
value is back across the set point.

Keys (``P = cityops:<ns>:alarmstore``; standalone Redis, as the scripts build
key names from ``P``):

- ``P:alarm:<id>``    hash   one occurrence, one field per :class:`Alarm` field
  (plus internal ``rank``, ``peak_rank``, ``peak_excess``, ``acked_rank``)
- ``P:comments:<id>`` list   JSON {who, at_ms, text}, oldest first
- ``P:key``           hash   alarm_key -> id of its newest kept occurrence
- ``P:active``        zset   id -> first_seen_ms, every active occurrence
- ``P:cleared``       zset   id -> cleared_at_ms; only the newest
  ``history_length`` are kept, older ones are deleted with their comments
- ``P:hwm``           hash   alarm_key -> event_time_ms of its newest applied event
- ``P:applied``       zset   alert_id -> wall-clock ms applied, trimmed after
  ``applied_retention_ms``
- ``cityops:<ns>:audit`` list  JSON {at_ms, who, what, alarm_key, alarm_id,
  state_before, state_after, text}, oldest first, never trimmed

A record is a hash, not a JSON blob, so the scripts change single fields and
never run Redis' cjson over records (it turns ``[]`` into ``{}`` and keeps 14
significant digits). :meth:`Alarm.to_json` is the API form.

Idempotency. An event changes nothing when its alert_id is in ``P:applied``
("duplicate") or its event_time_ms is not newer than ``P:hwm`` of its key
("stale"). The pipeline gives each key strictly increasing event times
(streams/alarms.py drops late readings), so redelivering any batch, any prefix,
or replaying the whole stream into the same namespace, at any later time,
changes no record; ``P:applied`` covers exact redeliveries within the
retention even without that ordering. Replaying into a fresh namespace rebuilds
the same records however the stream is batched (operator actions are not in
the stream, so they are not replayed).

Why one Lua script per batch rather than WATCH/MULTI: every event is a
read-modify-write of its key's occurrence, and the dedup check must be atomic
with the write. A script does that in one round trip with no retry loop;
WATCH would have to watch the shared indexes that every worker's batch and
every operator action touch, so concurrent writers would keep aborting each
other. Redis does not roll a script back when it fails halfway, so every input
is checked in Python before the call and the scripts only do field arithmetic.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal, cast, get_args

import msgspec
import redis.asyncio as aioredis

from sinks.base import Alert
from streams.errors import CityOpsError
from streams.topology_spec import Severity

State = Literal["ACTIVE_UNACK", "ACTIVE_ACK", "CLEARED_UNACK", "CLEARED_ACK"]
Change = Literal["opened", "escalated", "deescalated", "repeated", "cleared", "duplicate", "stale", "ignored"]
ACTIVE_STATES: frozenset[str] = frozenset({"ACTIVE_UNACK", "ACTIVE_ACK"})
DEFAULT_HISTORY_LENGTH = 10_000
DEFAULT_APPLIED_RETENTION_MS = 24 * 3600 * 1000
_READ_CHUNK = 200


class AlarmStoreError(CityOpsError):
    """An operator action that the alarm's state does not allow."""


class AlarmNotFound(AlarmStoreError):
    pass


class AlarmStateError(AlarmStoreError):
    pass


class Comment(msgspec.Struct, frozen=True, kw_only=True):
    who: str
    at_ms: int
    text: str


class Alarm(msgspec.Struct, frozen=True, kw_only=True):
    """One occurrence of an alarm (see the module docstring for the rules)."""

    id: str
    alarm_key: str
    state: State
    severity: str  # current
    level: str
    peak_severity: str
    peak_value: float
    first_seen_ms: int  # event time
    last_seen_ms: int
    count: int  # events applied to this occurrence
    rule: str
    kind: str
    sensor_id: str
    site_id: str
    district: str
    departments: tuple[str, ...]
    summary: str
    value: float  # latest
    threshold: float | None
    opened_by: str  # the alert_id that opened it
    last_alert_id: str
    acked_by: str | None = None
    acked_at_ms: int | None = None
    acked_severity: str | None = None
    cleared_at_ms: int | None = None
    clear_reason: str | None = None  # "auto" | "operator: <who>"
    clear_note: str | None = None  # the operator's reason
    comments: tuple[Comment, ...] = ()

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)


class AlarmChange(msgspec.Struct, frozen=True, kw_only=True):
    """What one event did. ``alarm_id``/``state``: the key's newest occurrence
    after the event (None when there is none)."""

    alert_id: str
    alarm_key: str
    change: Change
    alarm_id: str | None
    state: State | None


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One operator action. The trail is shared with the silence store, so ``what`` is
    also "silence_create"/"silence_expire" (then ``silence_id`` is set, the alarm fields
    are empty and the states are the silence's pending/active/expired)."""

    at_ms: int
    who: str
    what: str  # acknowledge | comment | clear | silence_create | silence_expire
    alarm_key: str
    alarm_id: str
    state_before: str
    state_after: str
    text: str
    silence_id: str = ""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def alarm_id(opening_alert_id: str) -> str:
    """The occurrence id: deterministic from the alert that opened it."""
    return hashlib.blake2b(f"alarm|{opening_alert_id}".encode(), digest_size=12).hexdigest()


_COMMON = """
local P = ARGV[1]
local LATEST, ACTIVE, CLEARED = P .. ':key', P .. ':active', P .. ':cleared'
local function trim_history(keep)
  local n = redis.call('ZCARD', CLEARED) - keep
  if n <= 0 then return end
  for _, old in ipairs(redis.call('ZRANGE', CLEARED, 0, n - 1)) do
    local rec = P .. ':alarm:' .. old
    local key = redis.call('HGET', rec, 'alarm_key')
    if key and redis.call('HGET', LATEST, key) == old then redis.call('HDEL', LATEST, key) end
    redis.call('DEL', rec, P .. ':comments:' .. old)
  end
  redis.call('ZREMRANGEBYRANK', CLEARED, 0, n - 1)
end
local function close(id, at, reason, note)  -- the caller trims the history afterwards
  local rec = P .. ':alarm:' .. id
  local after = redis.call('HGET', rec, 'state') == 'ACTIVE_ACK' and 'CLEARED_ACK' or 'CLEARED_UNACK'
  redis.call('HSET', rec, 'state', after, 'cleared_at_ms', at, 'clear_reason', reason, 'clear_note', note)
  redis.call('ZREM', ACTIVE, id)
  redis.call('ZADD', CLEARED, at, id)
  return after
end
"""

# ARGV: prefix now cutoff history_length, then _FIELDS values per event
_APPLY = _COMMON + """
local now, keep = ARGV[2], tonumber(ARGV[4])
local APPLIED, HWM = P .. ':applied', P .. ':hwm'
redis.call('ZREMRANGEBYSCORE', APPLIED, '-inf', '(' .. ARGV[3])
local function latest(rec, i)
  redis.call('HSET', rec, 'level', ARGV[i + 6], 'rule', ARGV[i + 7], 'kind', ARGV[i + 8], 'sensor_id', ARGV[i + 9],
    'site_id', ARGV[i + 10], 'district', ARGV[i + 11], 'departments', ARGV[i + 12], 'summary', ARGV[i + 13],
    'value', ARGV[i + 14], 'threshold', ARGV[i + 15], 'last_seen_ms', ARGV[i + 16], 'last_alert_id', ARGV[i])
  redis.call('HINCRBY', rec, 'count', 1)
end
local function open(i)
  local id = ARGV[i + 3]
  local rec = P .. ':alarm:' .. id
  redis.call('DEL', rec, P .. ':comments:' .. id)
  redis.call('HSET', rec, 'id', id, 'alarm_key', ARGV[i + 1], 'state', 'ACTIVE_UNACK', 'opened_by', ARGV[i],
    'first_seen_ms', ARGV[i + 16], 'count', 0, 'severity', ARGV[i + 4], 'rank', ARGV[i + 5],
    'peak_severity', ARGV[i + 4], 'peak_rank', ARGV[i + 5], 'peak_value', ARGV[i + 14], 'peak_excess', ARGV[i + 17])
  latest(rec, i)
  redis.call('ZADD', ACTIVE, ARGV[i + 16], id)
  redis.call('HSET', LATEST, ARGV[i + 1], id)
  return {'opened', id, 'ACTIVE_UNACK'}
end
local function update(id, i)
  local rec = P .. ':alarm:' .. id
  local old, new = tonumber(redis.call('HGET', rec, 'rank')), tonumber(ARGV[i + 5])
  local change = new > old and 'escalated' or (new < old and 'deescalated' or 'repeated')
  local peak = tonumber(redis.call('HGET', rec, 'peak_rank'))
  if new > peak or (new == peak and tonumber(ARGV[i + 17]) > tonumber(redis.call('HGET', rec, 'peak_excess'))) then
    redis.call('HSET', rec, 'peak_severity', ARGV[i + 4], 'peak_rank', ARGV[i + 5], 'peak_value', ARGV[i + 14],
      'peak_excess', ARGV[i + 17])
  end
  redis.call('HSET', rec, 'severity', ARGV[i + 4], 'rank', ARGV[i + 5])
  latest(rec, i)
  local state = redis.call('HGET', rec, 'state')
  if state == 'ACTIVE_ACK' and new > tonumber(redis.call('HGET', rec, 'acked_rank')) then
    state = 'ACTIVE_UNACK'
    redis.call('HSET', rec, 'state', state)
  end
  return {change, id, state}
end
local function apply_one(i)
  local key, t = ARGV[i + 1], ARGV[i + 16]
  local id = redis.call('HGET', LATEST, key)
  if redis.call('ZSCORE', APPLIED, ARGV[i]) then return {'duplicate', id} end
  local hwm = redis.call('HGET', HWM, key)
  if hwm and tonumber(t) <= tonumber(hwm) then return {'stale', id} end
  redis.call('HSET', HWM, key, t)
  redis.call('ZADD', APPLIED, now, ARGV[i])
  local active = id and redis.call('ZSCORE', ACTIVE, id)
  if ARGV[i + 2] ~= 'resolved' then
    if active then return update(id, i) end
    return open(i)
  end
  if not active then return {'ignored', id} end
  latest(P .. ':alarm:' .. id, i)
  local after = close(id, t, 'auto', '')
  trim_history(keep)
  return {'cleared', id, after}
end
local out = {}
for i = 5, #ARGV, 18 do
  local r = apply_one(i)
  local id = r[2] or ''
  local state = r[3] or (id ~= '' and redis.call('HGET', P .. ':alarm:' .. id, 'state')) or ''
  table.insert(out, r[1]); table.insert(out, id); table.insert(out, state)
end
return out
"""

# ARGV: prefix action alarm_key who at_ms text comment_json audit_key history_length
_OPERATE = _COMMON + """
local action, key, who, at, text = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local id = redis.call('HGET', LATEST, key)
if not id then return {'unknown'} end
local rec = P .. ':alarm:' .. id
local state = redis.call('HGET', rec, 'state')
local after = state
if action == 'acknowledge' then
  if state == 'ACTIVE_ACK' or state == 'CLEARED_ACK' then return {'state', state, id} end
  after = state == 'ACTIVE_UNACK' and 'ACTIVE_ACK' or 'CLEARED_ACK'
  redis.call('HSET', rec, 'state', after, 'acked_by', who, 'acked_at_ms', at,
    'acked_severity', redis.call('HGET', rec, 'severity'), 'acked_rank', redis.call('HGET', rec, 'rank'))
elseif action == 'comment' then
  redis.call('RPUSH', P .. ':comments:' .. id, ARGV[7])
else
  if state ~= 'ACTIVE_UNACK' and state ~= 'ACTIVE_ACK' then return {'state', state, id} end
  after = close(id, at, 'operator: ' .. who, text)
end
redis.call('RPUSH', ARGV[8], cjson.encode({at_ms = tonumber(at), who = who, what = action, alarm_key = key,
  alarm_id = id, state_before = state, state_after = after, text = text}))
local reply = {'ok', id, after, redis.call('HGETALL', rec), redis.call('LRANGE', P .. ':comments:' .. id, 0, -1)}
trim_history(tonumber(ARGV[9]))  -- after the read: the caller gets the record even if this trims it
return reply
"""

# ARGV: prefix mode(key|id) names...; per name {hash fields flat, comments} or {} if missing
_READ = """
local P, out = ARGV[1], {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if ARGV[2] == 'key' then id = redis.call('HGET', P .. ':key', ARGV[i]) end
  local flat = id and redis.call('HGETALL', P .. ':alarm:' .. id) or {}
  if #flat == 0 then table.insert(out, {}) else
    table.insert(out, {flat, redis.call('LRANGE', P .. ':comments:' .. id, 0, -1)})
  end
end
return out
"""


class AlarmStore:
    """Alarm occurrences of one namespace; see the module docstring."""

    def __init__(
        self, client: aioredis.Redis, namespace: str, *, history_length: int = DEFAULT_HISTORY_LENGTH,
        applied_retention_ms: int = DEFAULT_APPLIED_RETENTION_MS, clock_ms: Callable[[], int] | None = None,
    ) -> None:
        if history_length < 1 or applied_retention_ms < 0:
            msg = f"alarm store {namespace}: history_length must be >= 1 and applied_retention_ms >= 0"
            raise ValueError(msg)
        self._redis = client
        self.prefix = f"cityops:{namespace}:alarmstore"
        self.audit_key = f"cityops:{namespace}:audit"
        self.history_length, self.applied_retention_ms = history_length, applied_retention_ms
        self.clock_ms = clock_ms or wall_clock_ms
        self._apply = client.register_script(_APPLY)
        self._operate = client.register_script(_OPERATE)
        self._read = client.register_script(_READ)

    @classmethod
    def from_url(cls, url: str, namespace: str, **options: Any) -> AlarmStore:
        return cls(aioredis.Redis.from_url(url), namespace, **options)

    async def apply(self, alerts: Sequence[Alert]) -> list[AlarmChange]:
        """Apply the events in order, in one atomic script; see "Idempotency"."""
        if not alerts:
            return []
        now = int(self.clock_ms())
        args: list[str | int] = [self.prefix, now, now - self.applied_retention_ms, self.history_length]
        for alert in alerts:
            args += _event_args(alert)
        flat = [item.decode() for item in await self._apply(args=args)]
        return [
            AlarmChange(alert_id=alert.alert_id, alarm_key=alert.alarm_key, change=cast(Change, flat[3 * i]),
                        alarm_id=flat[3 * i + 1] or None, state=cast(State, flat[3 * i + 2]) or None)
            for i, alert in enumerate(alerts)
        ]

    async def acknowledge(self, alarm_key: str, who: str, at_ms: int) -> Alarm:
        """ACTIVE_UNACK -> ACTIVE_ACK, CLEARED_UNACK -> CLEARED_ACK."""
        return await self._act("acknowledge", alarm_key, who, at_ms, "")

    async def comment(self, alarm_key: str, who: str, text: str, at_ms: int) -> Alarm:
        """Add to the key's newest occurrence, active or cleared (post-incident notes)."""
        if not text.strip():
            msg = f"alarm {alarm_key}: a comment needs text"
            raise AlarmStoreError(msg)
        return await self._act("comment", alarm_key, who, at_ms, text)

    async def clear(self, alarm_key: str, who: str, reason: str, at_ms: int) -> Alarm:
        """Clear the active occurrence by hand; the key's next firing opens a new one."""
        return await self._act("clear", alarm_key, who, at_ms, reason)

    async def _act(self, what: str, alarm_key: str, who: str, at_ms: int, text: str) -> Alarm:
        if not who.strip():
            msg = f"alarm {alarm_key}: {what} needs the operator's name"
            raise AlarmStoreError(msg)
        note = msgspec.json.encode(Comment(who=who, at_ms=at_ms, text=text)) if what == "comment" else b""
        args: builtins.list[str | bytes | int] = [self.prefix, what, alarm_key, who, int(at_ms), text, note,
                                                  self.audit_key, self.history_length]
        reply = await self._operate(args=args)
        outcome = reply[0].decode()
        if outcome == "unknown":
            msg = f"alarm {alarm_key}: cannot {what}, no such alarm"
            raise AlarmNotFound(msg)
        if outcome == "state":
            msg = f"alarm {alarm_key}: cannot {what}, occurrence {reply[2].decode()} is {reply[1].decode()}"
            raise AlarmStateError(msg)
        return _alarm(reply[3], reply[4])

    async def get(self, alarm_key: str) -> Alarm | None:
        """The key's newest occurrence (active, or cleared while still kept)."""
        return (await self._fetch("key", [alarm_key]))[0]

    async def get_many(self, alarm_keys: Sequence[str]) -> builtins.list[Alarm | None]:
        """:meth:`get` of each key, in one round trip."""
        return await self._fetch("key", alarm_keys) if alarm_keys else []

    async def get_by_id(self, alarm_id: str) -> Alarm | None:
        return (await self._fetch("id", [alarm_id]))[0]

    async def list(
        self, state: State | None = None, kind: str | None = None, severity_at_least: str | None = None,
        district: str | None = None, limit: int = 100,
    ) -> list[Alarm]:
        """Active alarms newest first (by first_seen_ms), then cleared ones newest
        first (by cleared_at_ms), filtered, at most ``limit``."""
        floor = Severity(severity_at_least).rank if severity_at_least is not None else 0
        out: list[Alarm] = []
        async for alarm in self._scan(state):
            if ((state is None or alarm.state == state) and (kind is None or alarm.kind == kind)
                    and (district is None or alarm.district == district) and Severity.rank_of(alarm.severity) >= floor):
                out.append(alarm)
                if len(out) >= limit:
                    break
        return out

    async def _scan(self, state: State | None) -> AsyncIterator[Alarm]:
        sources = [f"{self.prefix}:active", f"{self.prefix}:cleared"]
        if state is not None:
            sources = sources[:1] if state in ACTIVE_STATES else sources[1:]
        for source in sources:
            start = 0
            while raw := await self._redis.zrevrange(source, start, start + _READ_CHUNK - 1):
                for alarm in await self._fetch("id", [cast(bytes, i).decode() for i in raw]):
                    if alarm is not None:  # trimmed since the ZREVRANGE
                        yield alarm
                start += _READ_CHUNK

    async def audit(self, limit: int = 100) -> builtins.list[AuditEntry]:
        """The last ``limit`` operator actions, oldest first."""
        raw = await self._redis.lrange(self.audit_key, -limit, -1)
        return [_AUDIT.decode(item) for item in raw]

    async def _fetch(self, mode: str, names: Sequence[str]) -> builtins.list[Alarm | None]:
        reply = await self._read(args=[self.prefix, mode, *names])
        return [_alarm(item[0], item[1]) if item else None for item in reply]

    async def close(self) -> None:
        await self._redis.aclose()


_AUDIT = msgspec.json.Decoder(AuditEntry)
_COMMENT = msgspec.json.Decoder(Comment)
_STATES: frozenset[str] = frozenset(get_args(State))


def _event_args(alert: Alert) -> list[str | int]:
    """The 18 values per event that _APPLY reads (ARGV[i] .. ARGV[i + 17])."""
    rank = Severity.rank_of(alert.severity)
    if rank == 0 or alert.status not in ("firing", "updated", "resolved"):
        msg = f"alert {alert.alert_id} ({alert.alarm_key}): bad severity {alert.severity!r} or status {alert.status!r}"
        raise AlarmStoreError(msg)
    if not (math.isfinite(alert.value) and (alert.threshold is None or math.isfinite(alert.threshold))):
        msg = f"alert {alert.alert_id} ({alert.alarm_key}): value and threshold must be finite"
        raise AlarmStoreError(msg)
    excess = alert.value if alert.threshold is None else abs(alert.value - alert.threshold)
    return [
        alert.alert_id, alert.alarm_key, alert.status, alarm_id(alert.alert_id), alert.severity, rank, alert.level,
        alert.rule, alert.kind, alert.sensor_id, alert.site_id, alert.district,
        msgspec.json.encode(alert.departments).decode(), alert.summary, repr(float(alert.value)),
        "" if alert.threshold is None else repr(float(alert.threshold)), alert.event_time_ms, repr(float(excess)),
    ]


def _alarm(flat: Sequence[bytes], comments: Sequence[bytes]) -> Alarm:
    fields = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
    if fields.get("state") not in _STATES:
        msg = f"alarm record {fields.get('id')}: bad state {fields.get('state')!r}"
        raise AlarmStoreError(msg)

    def opt(name: str) -> str | None:
        return fields.get(name) or None

    def opt_int(name: str) -> int | None:
        text = opt(name)
        return None if text is None else int(text)

    return Alarm(
        id=fields["id"], alarm_key=fields["alarm_key"], state=cast(State, fields["state"]),
        severity=fields["severity"], level=fields["level"], peak_severity=fields["peak_severity"],
        peak_value=float(fields["peak_value"]), first_seen_ms=int(fields["first_seen_ms"]),
        last_seen_ms=int(fields["last_seen_ms"]), count=int(fields["count"]), rule=fields["rule"],
        kind=fields["kind"], sensor_id=fields["sensor_id"], site_id=fields["site_id"], district=fields["district"],
        departments=tuple(msgspec.json.decode(fields["departments"], type=list[str])), summary=fields["summary"],
        value=float(fields["value"]), threshold=None if not fields["threshold"] else float(fields["threshold"]),
        opened_by=fields["opened_by"], last_alert_id=fields["last_alert_id"], acked_by=opt("acked_by"),
        acked_at_ms=opt_int("acked_at_ms"), acked_severity=opt("acked_severity"),
        cleared_at_ms=opt_int("cleared_at_ms"), clear_reason=opt("clear_reason"), clear_note=opt("clear_note"),
        comments=tuple(_COMMENT.decode(c) for c in comments),
    )
