"""Which kinds a worker consumes (`--kinds`, CITYOPS_KINDS) and how `--isolate` groups them."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.processes import kind_groups
from streams.settings import Settings, owned_kinds, parse_kinds

KINDS = ["air", "hazmat", "traffic", "energy"]


@pytest.mark.parametrize(("text", "kinds"), [("", ()), (" hazmat , air,", ("hazmat", "air")), ("air,air", ("air",))])
def test_parse_kinds(text: str, kinds: tuple[str, ...]) -> None:
    assert parse_kinds(text) == kinds


def test_from_env_reads_cityops_kinds() -> None:
    assert Settings.from_env({"CITYOPS_KINDS": "hazmat"}).kinds == ("hazmat",)
    assert Settings.from_env({}).kinds == ()


def test_owned_kinds_keep_the_topology_order() -> None:
    assert owned_kinds(Settings(kinds=()), KINDS) == KINDS
    assert owned_kinds(Settings(kinds=("energy", "air")), KINDS) == ["air", "energy"]


def test_an_unknown_kind_names_the_topology_and_the_known_kinds() -> None:
    with pytest.raises(ConfigError, match=r"'fire', not a kind of city\.yaml; use some of: air, hazmat, traffic, energy"):
        owned_kinds(Settings(kinds=("air", "fire"), topology=Path("city.yaml")), KINDS)


@pytest.mark.parametrize(
    ("isolate", "groups"),
    [
        ([], [KINDS]),
        (["hazmat"], [["hazmat"], ["air", "traffic", "energy"]]),
        (["energy", "hazmat"], [["hazmat"], ["energy"], ["air", "traffic"]]),
        (KINDS, [[k] for k in KINDS]),
    ],
)
def test_kind_groups_isolate_each_kind_and_keep_the_rest_together(isolate: list[str], groups: list[list[str]]) -> None:
    assert kind_groups(KINDS, isolate) == groups
