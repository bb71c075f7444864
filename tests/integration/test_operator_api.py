"""The operator API on a real worker's web port, driven by the `cityops alarms` CLI.

A gas reading at 30 %LEL opens an alarm in the alarm store (the worker applies
every batch to it); an operator acknowledges it (ACTIVE_ACK, audited under the
token's operator name); a wrong token is a one-line 403 error, exit 2; a
reading below the deadband (25 - 2 %LEL) clears it: CLEARED_ACK.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.stack import StackConfig
from streams.topology import Topology
from tests.integration.conftest import REPO, WorkerProcess, produce, wait_for

pytestmark = pytest.mark.integration

CITYOPS = str(Path(sys.executable).with_name("cityops"))
TOKEN = "s3cret-alice"


def _cli(worker: WorkerProcess, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CITYOPS_WEB_PORT": str(worker.web_port), "CITYOPS_OPERATOR_TOKEN": token}
    return subprocess.run([CITYOPS, "alarms", *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=60, check=False)


def _alarm(worker: WorkerProcess, key: str) -> dict[str, Any] | None:
    worker.assert_alive()
    result = _cli(worker, "ls", "--json", "--kind", "hazmat")
    assert result.returncode == 0, result.stderr
    found = [a for a in map(json.loads, result.stdout.splitlines()) if a["alarm_key"] == key]
    return found[0] if found else None


def _in_state(worker: WorkerProcess, key: str, state: str) -> bool:
    alarm = _alarm(worker, key)
    return alarm is not None and alarm["state"] == state


def _audit(worker: WorkerProcess) -> list[dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{worker.web_port}/api/v1/audit",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return list(json.loads(resp.read())["entries"])


def _gas(sensor: str, ts: int, lel: float) -> tuple[bytes, bytes]:
    return sensor.encode(), json.dumps({"sensor_id": sensor, "ts": ts, "values": {"gas_lel": lel}}).encode()


async def test_ack_then_auto_clear_through_the_cli(
    worker: WorkerProcess, isolated_topology: Topology, stack_cfg: StackConfig
) -> None:
    worker.env["CITYOPS_OPERATOR_TOKENS"] = f"alice:{TOKEN},bob:other-token"
    topic = isolated_topology.kind("hazmat").topic
    sensor = next(s.sensor_id for s in isolated_topology.catalog.by_kind("hazmat") if s.sensor_id.startswith("DG-GS"))
    key = f"{sensor}:gas_lel_alarm"
    t0 = time.time_ns() // 1_000_000 - 10_000

    worker.start()
    await produce(stack_cfg.bootstrap, topic, [_gas(sensor, t0, 30.0)])
    wait_for(lambda: _in_state(worker, key, "ACTIVE_UNACK"), 60, f"{key} ACTIVE_UNACK in `cityops alarms ls`")
    alarm = _alarm(worker, key)
    assert alarm is not None and alarm["severity"] == "major" and alarm["value"] == 30.0

    ack = _cli(worker, "ack", key)
    assert ack.returncode == 0, ack.stderr
    assert "ACTIVE_ACK" in ack.stdout
    alarm = _alarm(worker, key)
    assert alarm is not None and alarm["state"] == "ACTIVE_ACK" and alarm["acked_by"] == "alice"
    entries = [e for e in _audit(worker) if e["alarm_key"] == key]
    assert [(e["who"], e["what"], e["state_before"], e["state_after"]) for e in entries] == [
        ("alice", "acknowledge", "ACTIVE_UNACK", "ACTIVE_ACK")
    ]

    denied = _cli(worker, "ls", "--json", token="not-a-token")
    assert denied.returncode == 2 and denied.stdout == ""
    assert "403" in denied.stderr and "not an operator token" in denied.stderr, denied.stderr
    assert "Traceback" not in denied.stderr and len(denied.stderr.strip().splitlines()) == 1

    twice = _cli(worker, "ack", key)  # the API's 409, one line
    assert twice.returncode == 2 and "409" in twice.stderr and "Traceback" not in twice.stderr

    silence = _cli(worker, "silence", "--match", f"sensor_id={sensor}", "--duration", "2h", "--comment", "maintenance")
    assert silence.returncode == 0 and " active " in silence.stdout, silence.stderr
    silence_id = silence.stdout.split()[1]
    assert _alarm(worker, key)["silenced_by"] == [silence_id]  # type: ignore[index]
    listed = _cli(worker, "silences", "--json")
    assert [s["id"] for s in map(json.loads, listed.stdout.splitlines())] == [silence_id]
    expired = _cli(worker, "expire", silence_id)
    assert expired.returncode == 0 and "expired" in expired.stdout, expired.stderr

    await produce(stack_cfg.bootstrap, topic, [_gas(sensor, t0 + 5_000, 10.0)])
    wait_for(lambda: _in_state(worker, key, "CLEARED_ACK"), 60, f"{key} CLEARED_ACK after the gas fell")
    alarm = _alarm(worker, key)
    assert alarm is not None and alarm["clear_reason"] == "auto" and alarm["acked_by"] == "alice"
    worker.assert_alive()


def test_without_tokens_the_api_is_not_mounted(worker: WorkerProcess) -> None:
    worker.env.pop("CITYOPS_OPERATOR_TOKENS", None)
    worker.start()
    result = _cli(worker, "ls")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "404" in result.stderr and "CITYOPS_OPERATOR_TOKENS" in result.stderr, result.stderr
    wait_for(lambda: "operator API not mounted" in worker.log_path.read_text(), 30, "the 'not mounted' log line")
