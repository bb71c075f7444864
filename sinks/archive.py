"""A local JSONL archive of every alert: ``<directory>/alerts-YYYY-MM-DD.jsonl``.

One line per alert (``Alert.to_json()`` plus ``\\n``), in batch order. The day is
the alert's own local date, ``event_ts[:10]`` (event time in the city's offset),
not the wall clock, so replaying a topic rewrites into the same files.

Exactly-once lines. The worker retries ``write_batch`` on OSError and Kafka
redelivers a batch after a crash, so the same alert (same ``alert_id``) can
arrive again. Each file keeps an in-memory set of the alert_ids it holds; an
alert already in it is not written again. When this process first touches a
file, the set is seeded from the last ``seed_bytes`` of the file (the first,
possibly partial, line of that window is skipped). Redelivery only spans the
uncommitted batches, so a recent window is enough.

Torn writes. Lines are written with ``\\n`` last, so a final line without one is
what a crash mid-write leaves: on first touch the file is truncated back to its
last newline before anything is appended. A write or fsync that fails drops the
file's state (handle and set), so the worker's retry re-seeds from disk, which
truncates whatever part of the failed batch was torn and counts the lines that
did land.

Bounds. Two simple caps, both only narrowing the dedup window:

- at most ``max_files`` files are kept open with their sets, least recently
  written first out (a replay across many days, or yesterday's file after
  midnight); an evicted file is re-seeded from disk if touched again;
- each set keeps the newest ``max_ids`` alert_ids (FIFO), well above what
  ``seed_bytes`` yields (an alert line is ~0.5 KiB).

Durability. All new lines of a batch for one file go out in one write, then
``os.fsync``; a newly created file also fsyncs its directory. All disk work
runs in ``asyncio.to_thread``, and ``write_batch`` returns only after the fsync.
Files are opened unbuffered, so there is no user-space buffer to flush (and
none left to spill on close after a failed write).

One archive instance per directory: nothing guards against two writers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from io import FileIO
from pathlib import Path
from typing import BinaryIO

import msgspec

from sinks.base import Alert

log = logging.getLogger(__name__)

MAX_FILES = 4
MAX_IDS = 100_000
_SCAN_CHUNK = 64 << 10


class _AlertId(msgspec.Struct):
    alert_id: str  # other fields are ignored: seeding only needs the id


_ID_DECODER = msgspec.json.Decoder(_AlertId)


@dataclass(slots=True)
class _File:
    handle: FileIO
    seen: OrderedDict[str, None]  # alert_ids in the file, oldest first


def archive_day(alert: Alert) -> str:
    """The alert's local date (YYYY-MM-DD) from its event time; ValueError if malformed."""
    day = alert.event_ts[:10]
    date.fromisoformat(day)  # also keeps anything path-like out of the file name
    return day


class JsonlArchive:
    """AlertSink: ``write_batch`` returns once the new lines are fsynced."""

    def __init__(self, directory: Path, *, seed_bytes: int = 4 << 20, max_files: int = MAX_FILES,
                 max_ids: int = MAX_IDS) -> None:
        if seed_bytes < 0 or max_files < 1 or max_ids < 1:
            raise ValueError("seed_bytes must be >= 0, max_files and max_ids >= 1")
        self.directory = directory
        self.seed_bytes, self.max_files, self.max_ids = seed_bytes, max_files, max_ids
        self._files: OrderedDict[str, _File] = OrderedDict()  # day -> state, least recently written first
        # A thread lock, not an asyncio one: a cancelled write_batch leaves its thread running.
        self._lock = threading.Lock()

    def path_for(self, day: str) -> Path:
        return self.directory / f"alerts-{day}.jsonl"

    async def write_batch(self, alerts: Sequence[Alert]) -> None:
        if alerts:
            await asyncio.to_thread(self._write, list(alerts))

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _write(self, alerts: list[Alert]) -> None:
        by_day: dict[str, list[Alert]] = {}
        for alert in alerts:  # validate every date before writing anything
            by_day.setdefault(archive_day(alert), []).append(alert)
        with self._lock:
            for day, group in by_day.items():
                self._append(day, group)

    def _append(self, day: str, group: list[Alert]) -> None:
        state = self._state(day)
        new: dict[str, Alert] = {}
        for alert in group:
            if alert.alert_id not in state.seen and alert.alert_id not in new:
                new[alert.alert_id] = alert
        if not new:
            return
        data = memoryview(b"".join(alert.to_json() + b"\n" for alert in new.values()))
        try:
            while data:  # one write() unless the kernel takes less
                data = data[state.handle.write(data):]
            os.fsync(state.handle.fileno())
        except BaseException:
            self._forget(day)  # the retry re-seeds from disk (and truncates a torn tail)
            raise
        for alert_id in new:
            _remember(state.seen, alert_id, self.max_ids)

    def _state(self, day: str) -> _File:
        state = self._files.get(day)
        if state is not None:
            self._files.move_to_end(day)
            return state
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(day)
        created = not path.exists()
        seen = _seed(path, self.seed_bytes, self.max_ids)
        handle = FileIO(path, "ab")
        if created:
            _fsync_dir(self.directory)
        state = self._files[day] = _File(handle, seen)
        while len(self._files) > self.max_files:
            self._forget(next(iter(self._files)))
        return state

    def _forget(self, day: str) -> None:
        state = self._files.pop(day, None)
        if state is None:
            return
        try:
            state.handle.close()  # unbuffered: nothing left to write, so no data rides on this
        except OSError as exc:
            log.warning("archive %s: close failed: %s", state.handle.name, exc)

    def _close(self) -> None:
        with self._lock:
            while self._files:
                self._forget(next(iter(self._files)))


def read_archive(path: Path) -> Iterator[Alert]:
    """The alerts of one archive file, in order; a torn final line (no newline) is
    skipped. A corrupt complete line raises msgspec.DecodeError."""
    with path.open("rb") as f:
        for line in f:
            if line.endswith(b"\n"):
                yield Alert.from_json(line)


def _remember(seen: OrderedDict[str, None], alert_id: str, max_ids: int) -> None:
    seen[alert_id] = None
    if len(seen) > max_ids:
        seen.popitem(last=False)


def _seed(path: Path, seed_bytes: int, max_ids: int) -> OrderedDict[str, None]:
    """The alert_ids in the last ``seed_bytes`` of ``path``, after truncating a torn final line."""
    seen: OrderedDict[str, None] = OrderedDict()
    try:
        f = path.open("r+b")
    except FileNotFoundError:
        return seen
    with f:
        size = f.seek(0, os.SEEK_END)
        end = _complete_end(f, size)
        if end < size:
            log.warning("archive %s: truncating a torn final line (%d bytes)", path, size - end)
            f.truncate(end)  # made durable by the next batch's fsync
        start = max(0, end - seed_bytes)
        # Read from one byte earlier: if that byte is a newline the window starts
        # on a whole line, otherwise the partial first line is dropped.
        f.seek(max(0, start - 1))
        window = f.read(end - max(0, start - 1))
    if start > 0:
        window = window[window.index(b"\n") + 1:]
    for line in window.split(b"\n")[:-1]:
        try:
            alert_id = _ID_DECODER.decode(line).alert_id
        except msgspec.DecodeError:  # includes ValidationError
            log.warning("archive %s: skipping an unreadable line while seeding", path)
            continue
        _remember(seen, alert_id, max_ids)
    return seen


def _complete_end(f: BinaryIO, size: int) -> int:
    """The offset just past the last newline of the file (0 if it has none)."""
    pos = size
    while pos > 0:
        step = min(_SCAN_CHUNK, pos)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        at = chunk.rfind(b"\n")
        if at >= 0:
            return pos + at + 1
    return 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
