"""The command line: user mistakes and unreachable services are one clear line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CITYOPS = str(Path(sys.executable).with_name("cityops"))


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CITYOPS, *args], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, **env}, check=False)


@pytest.mark.parametrize(
    "args",
    [
        ("produce", "--topic", "city.air.readings", "README.md"),
        ("alerts", "tail", "--timeout", "1"),
        ("simulate", "--duration", "1", "--no-pace"),
    ],
)
def test_unreachable_kafka_is_a_clear_error(args: tuple[str, ...]) -> None:
    result = _run(*args, CITYOPS_BOOTSTRAP="127.0.0.1:1")
    assert result.returncode == 2
    assert "cannot reach Kafka at 127.0.0.1:1" in result.stderr and "cityops stack up" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_port_variable_names_the_variable() -> None:
    result = _run("alerts", "tail", "--timeout", "1", CITYOPS_KAFKA_PORT="ninety")
    assert result.returncode == 2
    assert "CITYOPS_KAFKA_PORT='ninety'" in result.stderr and "Traceback" not in result.stderr


def test_bad_option_value_is_rejected_by_the_parser() -> None:
    result = _run("simulate", "--rate", "-5")
    assert result.returncode == 2
    assert "--rate" in result.stderr and "Traceback" not in result.stderr
