"""`cityops produce` and `cityops alerts tail` against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from sinks.base import Alert
from streams import stack
from streams.stack import StackConfig
from tests.integration.conftest import produce

pytestmark = pytest.mark.integration

CITYOPS = str(Path(sys.executable).with_name("cityops"))


def _run(args: list[str], stack_cfg: StackConfig, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CITYOPS_BOOTSTRAP": stack_cfg.bootstrap}
    return subprocess.run([CITYOPS, *args], capture_output=True, text=True, env=env, timeout=120, check=False, **kwargs)


async def _read_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records: list[Any] = []
        for _ in range(100):
            batch = await consumer.getmany(timeout_ms=200)
            records += [r for recs in batch.values() for r in recs]
            if len(records) >= expected:
                break
        return records
    finally:
        await consumer.stop()


async def test_produce_sends_each_line_unchanged_keyed_by_sensor(tmp_path: Path, stack_cfg: StackConfig) -> None:
    topic = f"city.produce.{uuid.uuid4().hex[:8]}"
    stack.ensure_topics(stack_cfg.bootstrap, [(topic, 1)])
    lines = [
        b'{"sensor_id": "DG-AQ-0001", "ts": 1, "values": {"pm25": 3}}',
        b'{"sensor_id": "DG-AQ-0002", "ts": 2, "values": {"pm25": NaN}}',
        b"not json at all \xff",
        b'[{"sensor_id": "DG-GW-7", "ts": 3, "values": {}}, {"sensor_id": "DG-GW-8", "ts": 3, "values": {}}]',
    ]
    path = tmp_path / "recorded.jsonl"
    path.write_bytes(b"\n".join(lines[:2]) + b"\r\n\n" + b"\n".join(lines[2:]) + b"\n")
    result = _run(["produce", "--topic", topic, str(path)], stack_cfg)
    assert result.returncode == 0, result.stderr
    records = await _read_all(stack_cfg.bootstrap, topic, len(lines))
    assert [r.value for r in records] == lines
    assert [r.key for r in records] == [b"DG-AQ-0001", b"DG-AQ-0002", None, b"DG-GW-7"]


async def test_produce_reports_lines_the_broker_refused_and_exits_non_zero(tmp_path: Path,
                                                                         stack_cfg: StackConfig) -> None:
    topic = f"city.produce.{uuid.uuid4().hex[:8]}"
    stack.ensure_topics(stack_cfg.bootstrap, [(topic, 1)])
    small = [f'{{"sensor_id": "DG-AQ-{i:04d}", "ts": {i}, "values": {{"pm25": 3}}}}'.encode() for i in range(4)]
    # larger than the broker's message.max.bytes (1 MiB by default), smaller than the client's request limit
    huge = b'{"sensor_id": "DG-AQ-9999", "ts": 9, "values": {"pm25": 3}, "pad": "' + b"x" * 1_500_000 + b'"}'
    path = tmp_path / "recorded.jsonl"
    path.write_bytes(b"\n".join([small[0], small[1], huge, small[2], small[3]]) + b"\n")
    result = _run(["produce", "--topic", topic, str(path)], stack_cfg)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "published 4 messages" in result.stdout
    assert f"{path}:3: refused: MessageSizeTooLargeError" in result.stderr
    assert "1 lines were not published" in result.stderr and "Traceback" not in result.stderr
    records = await _read_all(stack_cfg.bootstrap, topic, len(small))
    assert [r.value for r in records] == small


def test_produce_missing_file_is_a_clear_error(stack_cfg: StackConfig, tmp_path: Path) -> None:
    result = _run(["produce", "--topic", "x", str(tmp_path / "nope.jsonl")], stack_cfg)
    assert result.returncode == 2
    assert "nope.jsonl does not exist" in result.stderr and "Traceback" not in result.stderr


async def test_alerts_tail_prints_json_and_table(tmp_path: Path, stack_cfg: StackConfig) -> None:
    import yaml

    topic = f"city.alerts.{uuid.uuid4().hex[:8]}"
    stack.ensure_topics(stack_cfg.bootstrap, [(topic, 1)])
    repo = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((repo / "topology.yaml").read_text())
    data["catalog"] = str(repo / "catalog" / "dongguan_sensors.csv")
    data["topics"]["alerts"] = topic
    topo_path = tmp_path / "topology.yaml"
    topo_path.write_text(yaml.safe_dump(data, allow_unicode=True))
    alert = Alert(
        alert_id="abc", alarm_key="DG-GS-0001:gas_lel_alarm", status="firing", severity="critical", level="red",
        rule="gas_lel_alarm", kind="hazmat", sensor_id="DG-GS-0001", site_id="HZ-1", district="Shatian", lat=22.9,
        lon=113.6, quantity="gas_lel", value=55.0, threshold=50.0, score=55.0, event_ts="2026-11-26T08:00:00.000+08:00",
        event_time_ms=1, detected_at="2026-11-26T08:00:00.050+08:00", departments=["emergency"], summary="[critical] gas",
    )
    await produce(stack_cfg.bootstrap, topic, [(b"k", alert.to_json())])
    as_json = _run(["alerts", "tail", "--json", "--from-beginning", "--max", "1", "--timeout", "20", "-t", str(topo_path)], stack_cfg)
    assert as_json.returncode == 0, as_json.stderr
    assert Alert.from_json(as_json.stdout.strip()) == alert
    table = _run(["alerts", "tail", "--from-beginning", "--max", "1", "--timeout", "20", "-t", str(topo_path)], stack_cfg)
    assert table.returncode == 0, table.stderr
    row = table.stdout.splitlines()[-1]
    for text in ("RED", "FIRING", "hazmat", "gas_lel_alarm", "Shatian", "DG-GS-0001", "55.0"):
        assert text in row
