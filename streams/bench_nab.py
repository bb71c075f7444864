"""``cityops bench nab``: stream NAB-format CSVs through the production ensemble.

Every ``DATA/**/<category>/<file>.csv`` (columns ``timestamp,value``) becomes
one sensor of the ``ensemble`` detector, built with the defaults topology.yaml
uses. The files are fed interleaved, ``rows_per_batch`` rows of each file per
batch; the detector's scores do not depend on the batching, and a score uses
only its own row and the rows before it. ``OUT/<category>/<file>.csv`` gets
``timestamp,anomaly_score`` (0..1), one row per input row, timestamps copied
verbatim. No file name or label reaches the detector.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.base import DetectorContext, FloatArray, IntArray
from detectors.columns import batch_from_columns
from detectors.ensemble import Ensemble
from streams.errors import CityOpsError

QUANTITY = "value"
HEADER = ("timestamp", "value")


class BenchError(CityOpsError):
    """The NAB data given to ``cityops bench nab`` cannot be used."""


@dataclass(frozen=True, slots=True)
class Series:
    """One NAB data file: where its result goes, raw timestamps, parsed columns."""

    key: Path  # <category>/<file>.csv
    timestamps: list[str]
    event_time_ms: IntArray
    value: FloatArray


def find_csvs(data: Path) -> list[tuple[Path, Path]]:
    """(``<category>/<file>.csv``, path) of every CSV under ``data``, sorted by key."""
    if not data.is_dir():
        raise BenchError(f"--data: {data} is not a directory")
    found: dict[Path, Path] = {}
    for path in sorted(data.rglob("*.csv")):
        key = Path(path.parent.name) / path.name
        if path.parent == data:
            raise BenchError(f"--data: {path} is not inside a <category>/ folder")
        if key in found:
            raise BenchError(f"--data: {found[key]} and {path} would both write {key}")
        found[key] = path
    if not found:
        raise BenchError(f"--data: no <category>/<file>.csv under {data}")
    return sorted(found.items())


def read_series(key: Path, path: Path) -> Series:
    """Parse one ``timestamp,value`` CSV; BenchError names the file and line."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or tuple(h.strip() for h in rows[0]) != HEADER:
        raise BenchError(f"{path}: the first line must be the header 'timestamp,value'")
    body = [(i, r) for i, r in enumerate(rows[1:], start=2) if r]
    for line, row in body:
        if len(row) != 2:
            raise BenchError(f"{path}:{line}: expected 2 fields (timestamp,value), got {len(row)}")
    if not body:
        raise BenchError(f"{path}: no data rows")
    stamps = [r[0] for _, r in body]
    return Series(key, stamps, _parse_times(path, body), _parse_values(path, body))


def _parse_times(path: Path, body: list[tuple[int, list[str]]]) -> IntArray:
    """Naive timestamps as epoch milliseconds (read as UTC)."""
    try:
        times = np.array([r[0].strip() for _, r in body], dtype="datetime64[ms]")
    except ValueError:
        times = np.array([_parse_time(path, line, r[0]) for line, r in body], dtype="datetime64[ms]")
    if np.isnat(times).any():
        line = body[int(np.flatnonzero(np.isnat(times))[0])][0]
        raise BenchError(f"{path}:{line}: timestamp is empty or NaT")
    return times.astype(np.int64)


def _parse_time(path: Path, line: int, text: str) -> np.datetime64:
    try:
        return np.datetime64(text.strip(), "ms")
    except ValueError:
        raise BenchError(f"{path}:{line}: bad timestamp {text!r} (expected YYYY-MM-DD HH:MM:SS)") from None


def _parse_values(path: Path, body: list[tuple[int, list[str]]]) -> FloatArray:
    values = np.empty(len(body), np.float64)
    for k, (line, row) in enumerate(body):
        try:
            values[k] = float(row[1])
        except ValueError:
            raise BenchError(f"{path}:{line}: bad value {row[1]!r} (expected a number)") from None
        if not np.isfinite(values[k]):
            raise BenchError(f"{path}:{line}: value {row[1]!r} is not finite")
    return values


def score_series(series: list[Series], rows_per_batch: int = 256) -> list[FloatArray]:
    """Scores of every row of every series: sensor i = series i, files interleaved."""
    detector = Ensemble(DetectorContext(quantities=(QUANTITY,)), quantity=QUANTITY)
    out = [np.zeros(s.value.shape[0], np.float64) for s in series]
    longest = max(s.value.shape[0] for s in series)
    for start in range(0, longest, rows_per_batch):
        parts = [(i, np.arange(start, min(start + rows_per_batch, s.value.shape[0]))) for i, s in enumerate(series)]
        parts = [(i, r) for i, r in parts if r.size]
        sensor = np.concatenate([np.full(r.size, i, np.int32) for i, r in parts])
        time = np.concatenate([series[i].event_time_ms[r] for i, r in parts])
        value = np.concatenate([series[i].value[r] for i, r in parts])
        row = np.concatenate([r for _, r in parts])
        batch = batch_from_columns(sensor, time, value)
        scores = detector.score_and_update(batch)
        arrival = batch.reading_idx[scores.rows]
        for i, _ in parts:
            mine = sensor[arrival] == i
            out[i][row[arrival[mine]]] = scores.score[mine]
    return out


def write_result(out: Path, series: Series, scores: FloatArray) -> None:
    target = out / series.key
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8", newline="") as handle:
        handle.write("timestamp,anomaly_score\n")
        handle.writelines(f"{t},{s:.12g}\n" for t, s in zip(series.timestamps, scores.tolist()))


def run_bench(data: Path, out: Path) -> tuple[int, int]:
    """Score every CSV under ``data`` into ``out``; returns (files, rows)."""
    series = [read_series(key, path) for key, path in find_csvs(data)]
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out: {out} exists and is not a directory")
    for s, scores in zip(series, score_series(series)):
        write_result(out, s, scores)
    return len(series), sum(s.value.shape[0] for s in series)
