"""Live alarms against replayed ones: what a changed topology would have done.

Both sides are alarm events (``city.alerts``). They are compared twice:

- **events**: the set of (alert id, status, event time). The alert id is derived from
  the alarm, the event time and the levels (streams/pipeline.py), so equal sets mean
  the replay reproduced the live alarms exactly.
- **incidents**: per alarm (``sensor:rule``) the firing..resolved episodes. A replay
  incident overlapping a live one of the same alarm is the same incident, *shifted* by
  the difference of their starts; the lead time is how much earlier the replay
  raised it (negative: later). Unmatched ones were *gained* or *lost*.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from sinks.base import Alert
from streams.topology_spec import Severity

OPEN_END = 2**62


@dataclass(frozen=True, slots=True)
class Incident:
    alarm_key: str
    rule: str
    sensor_id: str
    site_id: str
    start_ms: int  # event time of the firing
    end_ms: int | None  # event time of the resolution; None: still firing at the window's end
    peak_severity: str
    opened_by: str  # alert id of the firing

    def overlaps(self, other: Incident) -> bool:
        return self.start_ms < (other.end_ms or OPEN_END) and other.start_ms < (self.end_ms or OPEN_END)


@dataclass(frozen=True, slots=True)
class Shift:
    live: Incident
    replay: Incident

    @property
    def lead_ms(self) -> int:
        """How much earlier the replay raised it (negative: later)."""
        return self.live.start_ms - self.replay.start_ms


@dataclass(slots=True)
class AlarmDiff:
    n_live_events: int
    n_replay_events: int
    events_only_live: list[tuple[str, str, int]] = field(default_factory=list)
    events_only_replay: list[tuple[str, str, int]] = field(default_factory=list)
    matched: list[Shift] = field(default_factory=list)  # same start
    shifted: list[Shift] = field(default_factory=list)
    gained: list[Incident] = field(default_factory=list)
    lost: list[Incident] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.events_only_live and not self.events_only_replay

    def to_dict(self) -> dict[str, object]:
        return {
            "identical": self.identical, "live_events": self.n_live_events, "replay_events": self.n_replay_events,
            "events_only_live": [list(e) for e in self.events_only_live],
            "events_only_replay": [list(e) for e in self.events_only_replay],
            "incidents_matched": len(self.matched),
            "shifted": [{"alarm_key": s.live.alarm_key, "live_start_ms": s.live.start_ms,
                         "replay_start_ms": s.replay.start_ms, "lead_ms": s.lead_ms} for s in self.shifted],
            "gained": [asdict(i) for i in self.gained],
            "lost": [asdict(i) for i in self.lost],
        }


def event_keys(alerts: Iterable[Alert]) -> set[tuple[str, str, int]]:
    return {(a.alert_id, a.status, a.event_time_ms) for a in alerts}


def incidents(alerts: Iterable[Alert]) -> list[Incident]:
    """Firing..resolved episodes per alarm, in event-time order of each alarm's events.
    An alarm whose first event is an update (it fired before the window) starts there."""
    by_key: dict[str, list[Alert]] = {}
    for alert in alerts:
        by_key.setdefault(alert.alarm_key, []).append(alert)
    found: list[Incident] = []
    for key, events in by_key.items():
        events.sort(key=lambda a: (a.event_time_ms, a.status != "firing"))
        opening: Alert | None = None
        peak = 0
        for alert in events:
            if opening is None:
                if alert.status == "resolved":
                    continue  # the end of an episode that began before the window
                opening, peak = alert, 0
            peak = max(peak, Severity.rank_of(alert.severity))
            if alert.status == "resolved":
                found.append(_incident(key, opening, alert.event_time_ms, peak))
                opening = None
        if opening is not None:
            found.append(_incident(key, opening, None, peak))
    found.sort(key=lambda i: (i.start_ms, i.alarm_key))
    return found


def _incident(key: str, opening: Alert, end_ms: int | None, peak_rank: int) -> Incident:
    peak = next((s.value for s in Severity if s.rank == peak_rank), opening.severity)
    return Incident(key, opening.rule, opening.sensor_id, opening.site_id, opening.event_time_ms, end_ms, peak,
                    opening.alert_id)


def diff(live: Sequence[Alert], replay: Sequence[Alert]) -> AlarmDiff:
    live_keys, replay_keys = event_keys(live), event_keys(replay)
    result = AlarmDiff(len(live_keys), len(replay_keys),
                       sorted(live_keys - replay_keys, key=lambda e: (e[2], e[0])),
                       sorted(replay_keys - live_keys, key=lambda e: (e[2], e[0])))
    unmatched = incidents(live)
    for incident in incidents(replay):
        partner = next((i for i in unmatched if i.alarm_key == incident.alarm_key and i.overlaps(incident)), None)
        if partner is None:
            result.gained.append(incident)
            continue
        unmatched.remove(partner)
        shift = Shift(partner, incident)
        (result.matched if shift.lead_ms == 0 else result.shifted).append(shift)
    result.lost = unmatched
    return result


def within(alerts: Iterable[Alert], from_ms: int, to_ms: int, sensors: frozenset[str] | None = None) -> list[Alert]:
    """The events of the window (by event time), of the given sensors (None: all)."""
    return [a for a in alerts
            if from_ms <= a.event_time_ms < to_ms and (sensors is None or a.sensor_id in sensors)]
