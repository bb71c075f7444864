"""`cityops archive query "SQL"`: DuckDB over the archive's Parquet files.

Three views: ``readings`` (every kind; a column per quantity, null where a kind does not
have it; ``kind``, ``date``, ``hour`` from the directory names), ``deadletters``, and
``alarms`` (the worker's JSONL alarm archive, when there is one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from streams.archive.store import DEADLETTERS, READINGS
from streams.errors import CityOpsError


class ArchiveQueryError(CityOpsError):
    """The SQL did not run: DuckDB's message, which names the column or the syntax."""


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def connect(root: Path, alarms_dir: Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the archive's views (a view only for what exists on disk)."""
    con = duckdb.connect(":memory:")
    for name in (READINGS, DEADLETTERS):
        if any((root / name).glob("**/*.parquet")):
            glob = _quoted(root / name / "**" / "*.parquet")
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({glob}, hive_partitioning = true, "
                        "union_by_name = true, hive_types = {'date': DATE, 'hour': INTEGER})")
    if alarms_dir is not None and any(alarms_dir.glob("alerts-*.jsonl")):
        con.execute(f"CREATE VIEW alarms AS SELECT * FROM read_json_auto({_quoted(alarms_dir / 'alerts-*.jsonl')}, "
                    "format = 'newline_delimited', union_by_name = true)")
    return con


def views(con: duckdb.DuckDBPyConnection) -> list[str]:
    return sorted(row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall())


def run_query(root: Path, sql: str, alarms_dir: Path | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql``; a clear error when it does not run."""
    con = connect(root, alarms_dir)
    try:
        try:
            result = con.execute(sql)
        except duckdb.Error as exc:
            have = views(con)
            hint = (f"views: {', '.join(have)}; `cityops archive query \"DESCRIBE readings\"` lists the columns"
                    if have else f"nothing is archived under {root} yet: is `cityops archive run` running?")
            msg = f"the query did not run: {exc}\n({hint})"
            raise ArchiveQueryError(msg) from None
        if result.description is None:
            return [], []
        return [d[0] for d in result.description], result.fetchall()
    finally:
        con.close()
