"""Parquet files under ``<root>/<dataset>/[kind=K/]date=YYYY-MM-DD/hour=HH/part-*.parquet``.

Hive-style directory names, so DuckDB (``hive_partitioning``) and pyarrow.dataset see
``kind``, ``date`` and ``hour`` as columns and skip the directories a filter rules out.
Day and hour are UTC, of the reading's event time (of a dead letter's arrival). A file
is written under a temporary name, fsynced, then renamed: a reader never sees half a
file, and a crash leaves at most a ``.tmp`` that the next start removes.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HOUR_MS = 3_600_000
READINGS = "readings"
DEADLETTERS = "deadletters"


class ArchiveStore:
    def __init__(self, root: Path, zstd_level: int = 3, retention_days: int = 90,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.root = root
        self.clock = clock  # the write time in file names, which retention goes by
        self.zstd_level = zstd_level
        self.retention_days = retention_days

    def write(self, dataset: str, table: pa.Table, time_column: str, kind: str | None = None,
              sort_by: tuple[str, ...] = ()) -> list[Path]:
        """One file per hour present in ``table``; the files written."""
        if table.num_rows == 0:
            return []
        hours = pc.cast(table[time_column], pa.int64()).to_numpy(zero_copy_only=False) // HOUR_MS
        written = []
        for hour in np.unique(hours):
            part = table.filter(pa.array(hours == hour))
            if sort_by:
                part = part.sort_by([(c, "ascending") for c in sort_by])
            written.append(self._write_file(self._directory(dataset, kind, int(hour)), part))
        return written

    def _directory(self, dataset: str, kind: str | None, hour: int) -> Path:
        start = datetime.fromtimestamp(hour * 3600, UTC)
        base = self.root / dataset / (f"kind={kind}" if kind is not None else "")
        return base / f"date={start:%Y-%m-%d}" / f"hour={start:%H}"

    def _write_file(self, directory: Path, table: pa.Table) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"part-{self.clock():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}.parquet"
        final, tmp = directory / name, directory / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd", compression_level=self.zstd_level)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.rename(final)
        _fsync_dir(directory)
        return final

    def remove_partial(self) -> int:
        """Temporary files a crash left behind."""
        stale = list(self.root.glob("**/.part-*.tmp")) if self.root.exists() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def expire(self, now: datetime) -> list[Path]:
        """Remove the files written more than ``retention_days`` ago (the write time is in
        the name), then the directories left empty; the files removed.

        By write time, not event time: a backlog of old readings uploaded today is kept
        as long as today's readings."""
        cutoff = f"part-{now - timedelta(days=self.retention_days):%Y%m%dT%H%M%S}"
        removed = [path for path in self.root.glob("**/part-*.parquet") if path.name < cutoff] \
            if self.root.exists() else []
        for path in removed:
            path.unlink()
        for directory in sorted({p.parent for p in removed}, key=lambda d: len(d.parts), reverse=True):
            while directory != self.root and directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
                directory = directory.parent
        return removed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
