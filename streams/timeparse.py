"""Times and durations as people type them (CLI options) and as topology.yaml gives the
city's offset. A mistake is a ConfigError naming the option and an example."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from streams.errors import ConfigError

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_offset(text: str) -> timezone:
    """``+08:00`` (topology.yaml ``timezone``) -> a fixed-offset tzinfo."""
    sign = -1 if text.startswith("-") else 1
    hours, _, minutes = text.lstrip("+-").partition(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))


def parse_duration(text: str, option: str = "--duration", *, allow_zero: bool = False) -> int:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1h30m`` (and ``0`` if allowed) -> milliseconds."""
    if allow_zero and text.strip() == "0":
        return 0
    parts = re.findall(r"(\d+)([smhdw])", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        zero = "0, " if allow_zero else ""
        raise ConfigError(f"{option} {text!r}: expected e.g. {zero}30m, 2h, 1d or 1h30m")
    ms = sum(int(n) * _DURATION_UNITS[u] for n, u in parts) * 1000
    if ms <= 0 and not allow_zero:
        raise ConfigError(f"{option} {text!r}: must be longer than zero")
    return ms


def parse_time(text: str, option: str, offset: str) -> int:
    """ISO 8601 -> epoch ms; a time without an offset is in ``offset`` (the city's)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{option} {text!r}: not an ISO 8601 time; e.g. 2026-12-07T14:00 or "
                          "2026-12-07T06:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=parse_offset(offset))
    return int(moment.timestamp() * 1000)
