"""`cityops alarms`: argument parsing of the operator API client."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.operator_cli import parse_duration, parse_matcher


@pytest.mark.parametrize(("text", "ms"), [("90s", 90_000), ("30m", 1_800_000), ("2h", 7_200_000),
                                          ("1d", 86_400_000), ("1h30m", 5_400_000)])
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "2", "2x", "h", "0m", "1h 30m", "-1h"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--duration"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("district=Humen", ("district", "Humen", False, True)),
    ("severity!=minor", ("severity", "minor", False, False)),
    ("sensor_id=~DG-GS-.*", ("sensor_id", "DG-GS-.*", True, True)),
    ("rule!~no_signal_.*", ("rule", "no_signal_.*", True, False)),
    ("summary=a=b", ("summary", "a=b", False, True)),
])
def test_matchers(text: str, expected: tuple[str, str, bool, bool]) -> None:
    m = parse_matcher(text)
    assert (m["name"], m["value"], m["is_regex"], m["is_equal"]) == expected


@pytest.mark.parametrize("text", ["district", "=Humen", "1x=y"])
def test_bad_matchers_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--match"):
        parse_matcher(text)
