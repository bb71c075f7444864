"""`cityops bench nab` on a tiny NAB-like tree: layout, rows, scores, errors."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streams.bench_nab import Series, read_series, score_series

CITYOPS = str(Path(sys.executable).with_name("cityops"))


def _cityops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CITYOPS, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ), check=False)


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in rows))


def _series(n: int, seed: int, spike_at: int | None = None) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    start = np.datetime64("2014-07-01T00:00:00")
    values = 50 + rng.normal(0, 1, n)
    if spike_at is not None:
        values[spike_at] += 40
    return [(str(start + np.timedelta64(5 * i, "m")).replace("T", " "), repr(float(v))) for i, v in enumerate(values)]


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    _write(data / "catA" / "one.csv", _series(700, 1, spike_at=600))
    _write(data / "catA" / "two.csv", _series(300, 2))
    rows = _series(400, 3)
    rows[200] = (rows[199][0], rows[200][1])  # a repeated timestamp: late, scores 0
    _write(data / "nested" / "catB" / "three.csv", rows)
    return data


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_writes_one_result_per_input_row(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _cityops("bench", "nab", "--data", str(tree), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "1400 rows in 3 files" in result.stdout
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.csv"))
    assert written == ["catA/one.csv", "catA/two.csv", "catB/three.csv"]
    for key, source in [("catA/one.csv", tree / "catA/one.csv"), ("catB/three.csv", tree / "nested/catB/three.csv")]:
        got, data = _read(out / key), _read(source)
        assert got[0] == ["timestamp", "anomaly_score"]
        assert [r[0] for r in got[1:]] == [r[0] for r in data[1:]]  # verbatim, same order
        scores = np.array([float(r[1]) for r in got[1:]])
        assert ((scores >= 0) & (scores <= 1)).all()
    one = np.array([float(r[1]) for r in _read(out / "catA/one.csv")[1:]])
    assert int(np.argmax(one)) == 600  # the injected spike is the top score
    three = np.array([float(r[1]) for r in _read(out / "catB/three.csv")[1:]])
    assert three[200] == 0.0  # the repeated timestamp


def test_scores_do_not_depend_on_batching_or_on_the_other_files(tree: Path) -> None:
    one = read_series(Path("catA/one.csv"), tree / "catA/one.csv")
    two = read_series(Path("catA/two.csv"), tree / "catA/two.csv")
    together = score_series([one, two], rows_per_batch=7)
    alone = score_series([one], rows_per_batch=1000)
    np.testing.assert_array_equal(together[0], alone[0])
    assert isinstance(one, Series) and together[1].shape == (300,)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "is not a directory"),
        ("empty", "no <category>/<file>.csv under"),
        ("bad_value", "one.csv:3: bad value 'abc'"),
        ("bad_time", "one.csv:2: bad timestamp 'yesterday'"),
        ("bad_header", "the first line must be the header 'timestamp,value'"),
        ("extra_field", "one.csv:2: expected 2 fields"),
    ],
)
def test_bad_input_is_one_clear_line_exit_2(tmp_path: Path, setup: str, message: str) -> None:
    data = tmp_path / "data"
    csv_path = data / "cat" / "one.csv"
    if setup == "empty":
        data.mkdir()
    elif setup != "missing":
        csv_path.parent.mkdir(parents=True)
        body = {
            "bad_value": "timestamp,value\n2014-07-01 00:00:00,1\n2014-07-01 00:05:00,abc\n",
            "bad_time": "timestamp,value\nyesterday,1\n",
            "bad_header": "time,value\n2014-07-01 00:00:00,1\n",
            "extra_field": "timestamp,value\n2014-07-01 00:00:00,1,2\n",
        }[setup]
        csv_path.write_text(body)
    result = _cityops("bench", "nab", "--data", str(data), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
