"""sinks.archive: the JSONL alert archive (file per event date, exactly-once lines, fsync)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sinks.archive import JsonlArchive, read_archive
from sinks.base import Alert

EVENT_MS = int(datetime(2026, 11, 26, 0, 0, tzinfo=UTC).timestamp() * 1000)  # 08:00 +08:00
DAY = "2026-11-26"


def make_alert(n: int = 1, *, event_ts: str = "2026-11-26T08:00:00+08:00", sensor: str = "DG-GAS-0001",
               status: str = "firing", rule: str = "gas_lel_high") -> Alert:
    return Alert(
        alert_id=f"aid-{n}", alarm_key=f"{sensor}:{rule}", status=status,  # type: ignore[arg-type]
        severity="critical", level="red", rule=rule, kind="hazmat", sensor_id=sensor, site_id="SITE-A",
        district="Songshan Lake", lat=22.9, lon=113.9, quantity="gas_lel", value=31.5 + n, threshold=25.0,
        score=6.3, event_ts=event_ts, event_time_ms=EVENT_MS + n,
        detected_at="2026-11-26T08:00:00.050+08:00", departments=["work_safety", "fire"],
        summary=f"gas leak at {sensor} #{n}",
    )


def lines(path: Path) -> list[bytes]:
    """The raw lines on disk; every one must be complete and valid JSON."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), "file does not end with a newline"
    raw = data.split(b"\n")[:-1]
    for line in raw:
        json.loads(line)
    return raw


def ids(path: Path) -> list[str]:
    return [Alert.from_json(line).alert_id for line in lines(path)]


def open_fds(path: Path) -> int:
    """How many of this process's descriptors point at ``path`` (Linux /proc)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            pass
    return count


async def test_lines_round_trip_in_batch_order(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"  # parents are created
    archive = JsonlArchive(directory)
    batch = [make_alert(3), make_alert(1, status="updated"), make_alert(2)]
    await archive.write_batch(batch)
    await archive.close()
    path = directory / f"alerts-{DAY}.jsonl"
    assert [Alert.from_json(line) for line in lines(path)] == batch
    assert list(read_archive(path)) == batch
    assert os.listdir(directory) == [path.name]


async def test_empty_batch_touches_nothing(tmp_path: Path) -> None:
    archive = JsonlArchive(tmp_path / "archive")
    await archive.write_batch([])
    await archive.close()
    assert not (tmp_path / "archive").exists()


async def test_file_is_chosen_by_local_event_date(tmp_path: Path) -> None:
    archive = JsonlArchive(tmp_path)
    late = make_alert(1, event_ts="2026-11-26T23:59:59+08:00")
    early = make_alert(2, event_ts="2026-11-27T00:30:00+08:00")  # still 2026-11-26 in UTC
    later = make_alert(3, event_ts="2026-11-26T23:59:59.500+08:00")
    await archive.write_batch([late, early, later])
    await archive.close()
    assert sorted(os.listdir(tmp_path)) == ["alerts-2026-11-26.jsonl", "alerts-2026-11-27.jsonl"]
    assert list(read_archive(tmp_path / "alerts-2026-11-26.jsonl")) == [late, later]
    assert list(read_archive(tmp_path / "alerts-2026-11-27.jsonl")) == [early]


async def test_malformed_event_date_raises_before_writing(tmp_path: Path) -> None:
    archive = JsonlArchive(tmp_path)
    with pytest.raises(ValueError):
        await archive.write_batch([make_alert(1), make_alert(2, event_ts="../../etc/passwd")])
    await archive.close()
    assert os.listdir(tmp_path) == []


async def test_redelivered_batch_adds_nothing_even_after_restart(tmp_path: Path) -> None:
    path = tmp_path / f"alerts-{DAY}.jsonl"
    archive = JsonlArchive(tmp_path)
    await archive.write_batch([make_alert(1), make_alert(2)])
    await archive.write_batch([make_alert(1), make_alert(2), make_alert(3)])  # redelivered + one new
    await archive.write_batch([make_alert(4), make_alert(4)])  # a duplicate inside one batch
    assert ids(path) == ["aid-1", "aid-2", "aid-3", "aid-4"]
    await archive.close()
    before = path.read_bytes()

    restarted = JsonlArchive(tmp_path)  # seeds its seen set from the file
    await restarted.write_batch([make_alert(2), make_alert(3), make_alert(4)])
    assert path.read_bytes() == before
    await restarted.write_batch([make_alert(4), make_alert(5)])
    await restarted.close()
    assert ids(path) == ["aid-1", "aid-2", "aid-3", "aid-4", "aid-5"]


async def test_torn_last_line_is_truncated_before_appending(tmp_path: Path) -> None:
    path = tmp_path / f"alerts-{DAY}.jsonl"
    archive = JsonlArchive(tmp_path)
    await archive.write_batch([make_alert(1), make_alert(2)])
    await archive.close()
    with path.open("ab") as f:
        f.write(b'{"alert_id": "x')  # a crash mid-write

    assert [a.alert_id for a in read_archive(path)] == ["aid-1", "aid-2"]  # the reader skips it
    restarted = JsonlArchive(tmp_path)
    await restarted.write_batch([make_alert(2), make_alert(3)])
    await restarted.close()
    assert ids(path) == ["aid-1", "aid-2", "aid-3"]  # lines() also checks every line is valid JSON
    assert b'"x' not in path.read_bytes()


async def test_file_holding_only_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / f"alerts-{DAY}.jsonl"
    path.write_bytes(b'{"alert_id": "aid-1", "alarm')
    archive = JsonlArchive(tmp_path)
    await archive.write_batch([make_alert(1)])  # the torn aid-1 does not count as archived
    await archive.close()
    assert ids(path) == ["aid-1"]


@pytest.mark.parametrize("extra", [0, 1, 25])
async def test_seed_window_skips_only_a_partial_first_line(tmp_path: Path, extra: int) -> None:
    path = tmp_path / f"alerts-{DAY}.jsonl"
    archive = JsonlArchive(tmp_path)
    await archive.write_batch([make_alert(1), make_alert(2), make_alert(3)])
    await archive.close()
    last = len(lines(path)[-1]) + 1
    # The window holds the whole last line (plus `extra` bytes of the one before when
    # extra > 0, which is then partial unless it is all of it).
    restarted = JsonlArchive(tmp_path, seed_bytes=last + extra)
    await restarted.write_batch([make_alert(3)])
    assert ids(path) == ["aid-1", "aid-2", "aid-3"]
    await restarted.write_batch([make_alert(2)])  # outside the window: the documented limit
    await restarted.close()
    assert ids(path) == ["aid-1", "aid-2", "aid-3", "aid-2"]


async def test_seen_set_is_capped(tmp_path: Path) -> None:
    path = tmp_path / f"alerts-{DAY}.jsonl"
    archive = JsonlArchive(tmp_path, max_ids=2)
    await archive.write_batch([make_alert(1), make_alert(2), make_alert(3)])
    await archive.write_batch([make_alert(2), make_alert(3)])
    await archive.write_batch([make_alert(1)])  # forgotten: the oldest id fell out
    await archive.close()
    assert ids(path) == ["aid-1", "aid-2", "aid-3", "aid-1"]


async def test_evicted_file_is_reseeded_from_disk(tmp_path: Path) -> None:
    first = make_alert(1, event_ts="2026-11-25T10:00:00+08:00")
    second = make_alert(2, event_ts="2026-11-26T10:00:00+08:00")
    archive = JsonlArchive(tmp_path, max_files=1)
    await archive.write_batch([first])
    await archive.write_batch([second])  # evicts (and closes) 2026-11-25
    assert open_fds(tmp_path / "alerts-2026-11-25.jsonl") == 0
    await archive.write_batch([first, second])  # redelivered across both days
    await archive.close()
    assert ids(tmp_path / "alerts-2026-11-25.jsonl") == ["aid-1"]
    assert ids(tmp_path / "alerts-2026-11-26.jsonl") == ["aid-2"]


async def test_fsync_runs_off_the_loop_after_the_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync: Callable[[int], None] = os.fsync
    synced: list[tuple[int, int, int]] = []  # (inode, size at fsync, thread)

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((st.st_ino, st.st_size, threading.get_ident()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    archive = JsonlArchive(tmp_path / "archive")
    await archive.write_batch([make_alert(1), make_alert(2)])
    path = tmp_path / "archive" / f"alerts-{DAY}.jsonl"
    size = path.stat().st_size
    assert (path.stat().st_ino, size) in [(ino, sz) for ino, sz, _ in synced]  # fsynced with both lines in
    assert (tmp_path / "archive").stat().st_ino in [ino for ino, _, _ in synced]  # new file: its directory too
    assert all(thread != threading.get_ident() for _, _, thread in synced)

    synced.clear()
    await archive.write_batch([make_alert(1)])  # nothing new: nothing to sync
    assert synced == []
    await archive.write_batch([make_alert(3)])
    assert [(ino, sz) for ino, sz, _ in synced] == [(path.stat().st_ino, path.stat().st_size)]
    await archive.close()


async def test_failed_fsync_raises_and_the_retry_writes_each_line_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_fsync: Callable[[int], None] = os.fsync
    failures = [OSError(5, "Input/output error")]

    def flaky_fsync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(fd)

    path = tmp_path / f"alerts-{DAY}.jsonl"
    archive = JsonlArchive(tmp_path)
    await archive.write_batch([make_alert(1)])
    monkeypatch.setattr(os, "fsync", flaky_fsync)
    with pytest.raises(OSError):
        await archive.write_batch([make_alert(2), make_alert(3)])
    with path.open("ab") as f:
        f.write(b'{"alert_id": "aid-4", "ala')  # as if part of a later line had landed too
    await archive.write_batch([make_alert(2), make_alert(3), make_alert(4)])  # the worker's retry
    await archive.close()
    assert ids(path) == ["aid-1", "aid-2", "aid-3", "aid-4"]


async def test_close_releases_handles_and_a_later_write_reopens(tmp_path: Path) -> None:
    path = tmp_path / f"alerts-{DAY}.jsonl"
    archive = JsonlArchive(tmp_path)
    await archive.write_batch([make_alert(1)])
    assert open_fds(path) == 1
    await archive.close()
    assert open_fds(path) == 0
    await archive.close()  # idempotent
    await archive.write_batch([make_alert(1), make_alert(2)])  # re-seeded: aid-1 is not repeated
    await archive.close()
    assert open_fds(path) == 0
    assert ids(path) == ["aid-1", "aid-2"]


def test_read_archive_skips_only_a_torn_final_line(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(make_alert(1).to_json() + b"\n" + make_alert(2).to_json())
    assert list(read_archive(path)) == [make_alert(1)]
    path.write_bytes(make_alert(1).to_json() + b"\n" + make_alert(2).to_json() + b"\n")
    assert list(read_archive(path)) == [make_alert(1), make_alert(2)]
