"""NAB, scored in-process: all files, per category, and leave-one-category-out.

    .venv/bin/python loadtest/nab_eval.py [--data DIR] [--windows JSON] [--json OUT]

Streams every ``<category>/<file>.csv`` under ``--data`` through the production
``ensemble`` (``streams.bench_nab.score_series``, the code ``cityops bench nab``
runs) and scores it with ``../shared/tools/nab_score.py``, the scorer that
reproduces NAB's published table. Three views of one run:

* **all files**: the threshold optimised over every file, as NAB's scoreboard does;
* **per category, own threshold**: each category scored alone, its threshold
  optimised on itself (how well the scores rank within a kind of data);
* **leave one category out (LOCO)**: the threshold is optimised on the other
  categories and applied, unchanged, to the held-out one. The threshold is the
  one thing NAB fits, so this is the honest "data nobody tuned for" figure:
  a detector whose scores mean the same thing on every kind of series loses
  little here.

The normalised score of a subset is NAB's: 100 (raw - null) / (perfect - null)
over that subset's windows. Benchmarks only: it reads ../shared, the product
never does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.bench_nab import Series, find_csvs, read_series, score_series  # noqa: E402

SHARED = ROOT.parent / "shared"
DEFAULT_DATA = SHARED / "datasets" / "nab" / "data"
DEFAULT_WINDOWS = SHARED / "datasets" / "nab" / "labels" / "combined_windows.json"
SCORER = SHARED / "tools" / "nab_score.py"


def load_scorer(path: Path = SCORER) -> ModuleType:
    """The shared scorer as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("nab_score", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: cannot load the NAB scorer from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_cases(scorer: ModuleType, series: list[Series], scores: list[np.ndarray],
                windows: dict[str, list[list[str]]]) -> list[Any]:
    cases = []
    for s, sc in zip(series, scores):
        key = s.key.as_posix()
        if key not in windows:
            raise SystemExit(f"error: {key} has no entry in the windows file")
        times = s.event_time_ms.astype("datetime64[ms]").astype("datetime64[us]")
        cases.append(scorer.FileCase(key, times, windows[key], sc))
    return cases


def at_threshold(scorer: ModuleType, cases: list[Any], profile: str, threshold: float) -> dict[str, float]:
    """Normalised score of ``cases`` at a fixed threshold (direct scoring, no sweep)."""
    weights = scorer.PROFILES[profile]
    parts = [c.score_at(threshold, weights) for c in cases]
    n_win = sum(len(c.windows) for c in cases)
    raw = sum(p[0] for p in parts)
    null, perfect = -weights["fnWeight"] * n_win, weights["tpWeight"] * n_win
    # a category without windows (artificialNoAnomaly) has no normalised score, only false positives
    normalized = 100.0 * (raw - null) / (perfect - null) if n_win else float("nan")
    return {"normalized": normalized, "threshold": threshold,
            "windows_detected": sum(p[1] for p in parts), "fp_rows": sum(p[2] for p in parts),
            "windows_missed": sum(p[3] for p in parts)}


def report(scorer: ModuleType, cases: list[Any]) -> dict[str, Any]:
    profiles = list(scorer.PROFILES)
    overall, _ = scorer.evaluate(cases, profiles)
    by_category: dict[str, list[Any]] = defaultdict(list)
    for case in cases:
        by_category[case.key.split("/")[0]].append(case)
    own, loco = {}, {}
    for category, held_out in sorted(by_category.items()):
        rest = [c for c in cases if c.key.split("/")[0] != category]
        if any(c.windows for c in held_out):
            own[category] = scorer.evaluate(held_out, profiles)[0]
        fitted = scorer.evaluate(rest, profiles)[0]
        loco[category] = {p: at_threshold(scorer, held_out, p, fitted[p]["threshold"]) for p in profiles}
    return {"all": overall, "own_threshold": own, "leave_one_category_out": loco}


def loco_total(scorer: ModuleType, cases: list[Any], loco: dict[str, Any], profile: str) -> float:
    """All files, each category scored at the threshold fitted without it."""
    weights = scorer.PROFILES[profile]
    raw, n_win = 0.0, 0
    for case in cases:
        threshold = loco[case.key.split("/")[0]][profile]["threshold"]
        raw += case.score_at(threshold, weights)[0]
        n_win += len(case.windows)
    null, perfect = -weights["fnWeight"] * n_win, weights["tpWeight"] * n_win
    return float(100.0 * (raw - null) / (perfect - null))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of <category>/<file>.csv")
    ap.add_argument("--windows", type=Path, default=DEFAULT_WINDOWS, help="NAB combined_windows.json")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    scorer = load_scorer()
    series = [read_series(key, path) for key, path in find_csvs(args.data)]
    windows = json.loads(args.windows.read_text(encoding="utf-8"))
    cases = build_cases(scorer, series, score_series(series), windows)
    figures = report(scorer, cases)
    figures["loco_all_files"] = {p: loco_total(scorer, cases, figures["leave_one_category_out"], p)
                                 for p in scorer.PROFILES}
    print(f"{len(cases)} files, {sum(len(c.windows) for c in cases)} windows")
    print(f"{'view':34} {'standard':>9} {'low_FP':>9} {'low_FN':>9}  windows/FP rows (standard)")
    def row(name: str, r: dict[str, Any]) -> None:
        std = r["standard"]
        print(f"{name:34} {std['normalized']:9.1f} {r['reward_low_FP_rate']['normalized']:9.1f} "
              f"{r['reward_low_FN_rate']['normalized']:9.1f}  "
              f"{std['windows_detected']}/{std['windows_detected'] + std['windows_missed']}, {std['fp_rows']}")
    row("all files", figures["all"])
    for category, r in figures["own_threshold"].items():
        row(f"{category} (own threshold)", r)
    for category, r in figures["leave_one_category_out"].items():
        row(f"{category} (LOCO threshold)", r)
    total = figures["loco_all_files"]
    print(f"{'all files, each at its LOCO thr.':34} {total['standard']:9.1f} "
          f"{total['reward_low_FP_rate']:9.1f} {total['reward_low_FN_rate']:9.1f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
