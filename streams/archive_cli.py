"""`cityops archive run | query`: write the readings archive, ask it questions in SQL."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from streams.settings import Settings
from streams.topology import load_topology

archive_app = typer.Typer(no_args_is_help=True, help="The readings archive (Parquet): write it, query it with SQL.")
TopologyOpt = Annotated[Path, typer.Option("--topology", "-t", help="topology.yaml to use", envvar="CITYOPS_TOPOLOGY")]


@archive_app.command("run")
def run(
    topology: TopologyOpt = Path("topology.yaml"),
    loglevel: Annotated[str, typer.Option(help="error|warning|info|debug")] = "info",
) -> None:
    """Archive every reading and dead letter into Parquet until stopped (SIGTERM / Ctrl-C)."""
    from streams.archive.consumer import run_archiver

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env(topology=topology)
    asyncio.run(run_archiver(settings, load_topology(settings.topology)))


@archive_app.command("query")
def query(
    sql: Annotated[str, typer.Argument(help='SQL over the views readings, deadletters, alarms, e.g. '
                                            '"SELECT kind, count(*) FROM readings GROUP BY kind"')],
    topology: TopologyOpt = Path("topology.yaml"),
    output: Annotated[str, typer.Option("--format", help="table | json (one object per line) | csv")] = "table",
) -> None:
    """Run SQL (DuckDB) over the archive under CITYOPS_DATA_DIR."""
    from streams.archive.consumer import archive_root
    from streams.archive.query import run_query
    from streams.errors import CityOpsError

    if output not in ("table", "json", "csv"):
        raise CityOpsError(f"--format {output!r}: use table, json or csv")
    settings = Settings.from_env(topology=topology)
    topo = load_topology(settings.topology)
    alarms = topo.spec.notifications.archive
    columns, rows = run_query(archive_root(settings, topo), sql,
                              settings.data_dir / alarms.directory if alarms.enabled else None)
    if output == "json":
        for row in rows:
            typer.echo(json.dumps(dict(zip(columns, row, strict=True)), default=_plain, ensure_ascii=False))
    elif output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([_plain(v) if isinstance(v, (bytes, date)) else v for v in row] for row in rows)
    else:
        table = Table(*columns)
        for row in rows:
            table.add_row(*("" if v is None else str(_plain(v)) for v in row))
        Console().print(table)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
