"""`cityops archive run` on the real broker, next to a real worker: every reading
(of any age) and every dead letter ends up in Parquet, once, across a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.archive.query import ArchiveQueryError, run_query
from streams.stack import StackConfig
from tests.integration.conftest import REPO, WorkerProcess, produce, wait_for

pytestmark = pytest.mark.integration

YEAR_MS = 365 * 86_400_000


class ArchiverProcess:
    def __init__(self, worker: WorkerProcess, log_path: Path) -> None:
        self.worker, self.log_path = worker, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cityops = str(Path(sys.executable).with_name("cityops"))
        self.proc = subprocess.Popen([cityops, "archive", "run", "--topology", str(self.worker.topology.path)],
                                     stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT, env=self.worker.env,
                                     cwd=REPO, start_new_session=True)

    def terminate(self) -> int:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _count(root: Path, sql: str) -> int:
    try:
        return int(run_query(root, sql)[1][0][0])
    except ArchiveQueryError:  # nothing archived yet
        return 0


def _air(sensor: str, ts_ms: int, pm25: float) -> tuple[bytes, bytes]:
    return sensor.encode(), json.dumps({"sensor_id": sensor, "ts": ts_ms, "values": {"pm25": pm25}}).encode()


async def test_archive_keeps_every_reading_and_dead_letter_once_across_a_restart(
        worker: WorkerProcess, stack_cfg: StackConfig, tmp_path: Path) -> None:
    path = worker.topology.path
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    data["readings_archive"] = {"flush_s": 0.5}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    root = Path(worker.env["CITYOPS_DATA_DIR"]) / "readings-archive"
    air_topic = data["kinds"]["air"]["topic"]
    worker.start()
    archiver = ArchiverProcess(worker, tmp_path / "archive.log")
    archiver.start()
    try:
        now_ms = int(time.time() * 1000)
        live = [_air(f"DG-AQ-{1 + i % 5:04d}", now_ms - 600_000 + i * 10_000, 20.0 + i) for i in range(30)]
        await produce(stack_cfg.bootstrap, air_topic, [*live, (None, b"not json")])
        wait_for(lambda: _count(root, "SELECT count(*) FROM readings") == 30
                 and _count(root, "SELECT count(*) FROM deadletters") == 1, 60, "30 readings and 1 dead letter archived")

        # a year-old recording on the live topic: the worker dead-letters it (and says so), the archive keeps it
        old = [_air("DG-AQ-0001", now_ms - YEAR_MS + i * 60_000, 30.0) for i in range(20)]
        await produce(stack_cfg.bootstrap, air_topic, old)
        wait_for(lambda: _count(root, "SELECT count(*) FROM deadletters WHERE reason = 'ts_past'") == 20, 60,
                 "20 ts_past dead letters archived")
        assert _count(root, "SELECT count(*) FROM readings WHERE event_time < now() - INTERVAL 300 DAY") == 20
        wait_for(lambda: "dead-lettered as ts_past" in worker.log_path.read_text(), 30, "the worker's ts_past warning")
        warning = next(line for line in worker.log_path.read_text().splitlines() if "dead-lettered as ts_past" in line)
        assert f"{air_topic}: 20 of 20 air readings" in warning and "input.max_age_s" in warning

        assert archiver.terminate() == 0, archiver.log_path.read_text()[-2000:]
        archiver.start()
        more = [_air("DG-AQ-0002", now_ms + i * 1000, 5.0) for i in range(3)]
        await produce(stack_cfg.bootstrap, air_topic, more)
        wait_for(lambda: _count(root, "SELECT count(*) FROM readings") == 53, 60, "53 readings archived")
        distinct = _count(root, "SELECT count(DISTINCT (topic, kafka_partition, kafka_offset)) FROM readings")
        assert distinct == 53  # the restart re-archived nothing: offsets were committed after the files
        _, rows = run_query(root, "SELECT sensor_id, epoch_ms(event_time), pm25 FROM readings "
                                  "WHERE event_time >= now() - INTERVAL 1 DAY ORDER BY event_time")
        expected = sorted([*live, *more], key=lambda kv: json.loads(kv[1])["ts"])
        assert rows == [(json.loads(v)["sensor_id"], json.loads(v)["ts"], json.loads(v)["values"]["pm25"])
                        for _, v in expected]
    finally:
        archiver.stop()
