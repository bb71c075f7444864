"""Noise control, the pure part: the labels an alarm event is matched on, inhibition
rules, and why an event is muted (sinks/notifier.py applies it per batch and receiver).

Labels: ``alarm_key, rule, kind, category, severity, sensor_id, site_id, district``;
``category`` is the rule's (streams/topology.py ``rule_categories``). Silences
(sinks/silences.py) and inhibition rules (Alertmanager's ``inhibit_rules``, from
topology.yaml ``notifications.inhibit``) both match on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sinks.base import Alert
from sinks.silences import Silence
from streams.topology_spec import AlarmMatch, InhibitRuleSpec, Severity

Labels = dict[str, str]


@dataclass(frozen=True, slots=True)
class InhibitRule:
    name: str
    source: Mapping[str, frozenset[str]]
    target: Mapping[str, frozenset[str]]
    equal: tuple[str, ...]

    @classmethod
    def from_spec(cls, spec: InhibitRuleSpec) -> InhibitRule:
        return cls(spec.name, _compile(spec.source), _compile(spec.target), tuple(spec.equal))

    def applies(self, source: Labels, target: Labels) -> bool:
        return (
            source["alarm_key"] != target["alarm_key"]
            and _matches(self.target, target)
            and _matches(self.source, source)
            and all(source.get(name, "") == target.get(name, "") for name in self.equal)
        )


def _compile(match: AlarmMatch) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for name, values in match.model_dump(exclude_none=True).items():
        out[name] = frozenset(v.value if isinstance(v, Severity) else str(v) for v in values)
    return out


def _matches(match: Mapping[str, frozenset[str]], labels: Labels) -> bool:
    return all(labels.get(name, "") in allowed for name, allowed in match.items())


def alert_labels(alert: Alert, categories: Mapping[str, str]) -> Labels:
    """The labels silences and inhibition rules match on."""
    return {
        "alarm_key": alert.alarm_key, "rule": alert.rule, "kind": alert.kind,
        "category": categories.get(alert.rule, "value"), "severity": alert.severity,
        "sensor_id": alert.sensor_id, "site_id": alert.site_id, "district": alert.district,
    }


def mute_reason(
    labels: Labels, live_at_site: Sequence[Labels], silences: Sequence[Silence], rules: Sequence[InhibitRule],
) -> str | None:
    """Why an event with ``labels`` is muted ("silence:<id>" / "inhibit:<rule>"), or None."""
    for silence in silences:
        if silence.matches(labels):
            return f"silence:{silence.id}"
    for rule in rules:
        if any(rule.applies(source, labels) for source in live_at_site):
            return f"inhibit:{rule.name}"
    return None
