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
        ("replay", "--from", "2026-12-07T10:00", "--to", "2026-12-07T11:00"),
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


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--from", "yesterday", "--to", "2026-12-07T11:00"), "--from 'yesterday'"),
        (("--from", "2026-12-07T11:00", "--to", "2026-12-07T10:00"), "--from must be before --to"),
        (("--from", "2026-12-07T10:00", "--to", "2026-12-07T11:00", "--speed", "fast"), "--speed 'fast'"),
        (("--from", "2026-12-07T10:00", "--to", "2026-12-07T11:00", "--kinds", "air,weather"), "--kinds weather"),
        (("--from", "2026-12-07T10:00", "--to", "2026-12-07T11:00", "--sensors", "DG-XX-1"), "--sensors DG-XX-1"),
        (("--from", "2026-12-07T10:00", "--to", "2026-12-07T11:00", "--source", "s3"), "--source 's3'"),
        (("--from", "2026-12-07T10:00", "--to", "2026-12-07T11:00", "--report", "README.md"), "--report README.md"),
        (("--from", "2026-12-07T10:00", "--to", "2026-12-07T11:00", "--report", "/proc/cityops-report"),
         "--report /proc/cityops-report: cannot create it"),
        (("--from", "2026-12-07T10:00", "--to", "2026-12-07T11:00", "--warmup", "an hour"), "--warmup 'an hour'"),
    ],
)
def test_replay_mistakes_name_the_option(args: tuple[str, ...], named: str) -> None:
    result = _run("replay", *args, CITYOPS_BOOTSTRAP="127.0.0.1:1")  # rejected before any connection
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("worker", "--kinds", "hazmt"), {}, "--kinds names 'hazmt'"),
        (("worker",), {"CITYOPS_KINDS": "air,gas"}, "CITYOPS_KINDS / --kinds names 'gas'"),
        (("worker", "--isolate", "hazmat,fire"), {}, "--isolate names 'fire'"),
        (("worker", "--kinds", "air", "--isolate", "hazmat"), {}, "--isolate names 'hazmat', not a kind this worker consumes"),
    ],
)
def test_worker_kind_mistakes_name_the_option_and_the_kinds(args: tuple[str, ...], env: dict[str, str],
                                                            named: str) -> None:
    result = _run(*args, **env)
    assert result.returncode == 2
    assert named in result.stderr and "use some of:" in result.stderr and "Traceback" not in result.stderr
