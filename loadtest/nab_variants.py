"""Prototype variants of the ``ensemble`` on NAB, scored like ``nab_eval.py``.

    .venv/bin/python loadtest/nab_variants.py [VARIANT ...]     # default: all of them

Each variant changes one thing of ``detectors.ensemble.Ensemble`` (by subclassing it
here, not in the product) or of its input, runs every NAB file through it (one detector
per file, batches of 256 rows) and prints the standard score over all files and the total
at leave-one-category-out thresholds (see nab_eval.py). ``default`` is the product's
ensemble and must print the figures of nab_eval.py: it checks the harness.

Variants (docs/benchmarks.md, "NAB variants tried"):

* ``log1p``, ``sqrt``: the series transformed first when it is non-negative (the variance
  stabilising transforms of counts; decided on the whole file, so optimistic);
* ``sum_nines``: the nines of the three calibrated members added instead of the largest;
* ``member_peaks``: a decayed peak per member, so a new peak of one member is reported
  even when another member set a higher peak;
* ``shift_x3``, ``shift_x9``: the level-shift term standardised more strictly, towards
  the EWMA control chart's sigma * sqrt(l / (2 - l)) (x9 is that factor for l = 0.2);
* ``medium_A_xF``: a fourth |z|, an EWMA of weight A against the slow mean/variance (a
  level raised for a day in a noisy series: CRM, GOOG), times F in z^2;
* ``knn_L_W``: a kNN-distance novelty member: the distance of the last L readings (scaled
  by the running min/max) to the nearest of the W windows before them, calibrated like
  the other members and added to their max (a slow per-reading loop: a prototype).

Benchmarks only: it reads ../shared, the product never does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import detectors.ensemble as ens  # noqa: E402
from detectors.base import DetectorContext, FloatArray  # noqa: E402
from detectors.columns import batch_from_columns  # noqa: E402
from detectors.stats import gaussian_nines  # noqa: E402
from loadtest import nab_eval  # noqa: E402
from streams.bench_nab import QUANTITY, Series, find_csvs, read_series  # noqa: E402

Transform = Callable[[FloatArray], FloatArray]


class SumNines(ens.Ensemble):
    def _calibrate(self, g: Any, t: Any, raw: FloatArray) -> FloatArray:
        w = np.maximum(t[0], self.likelihood_alpha, out=t[4])
        zs = [self._z_fold(x, g[m], g[v], w, t[k], t).copy() for x, m, v, k in
              ((raw, "raw_mean", "raw_var", 2), (g["novel"], "novel_mean", "novel_var", 6),
               (g["day_novel"], "day_mean", "day_var", 8))]
        zero = gaussian_nines(np.zeros_like(raw))
        t[2][:] = sum(gaussian_nines(z) - zero for z in zs)
        out: FloatArray = t[2]
        return out


class MemberPeaks(ens.Ensemble):
    """Reports a level when any member's nines pass that member's own decayed peak."""

    def _calibrate(self, g: Any, t: Any, raw: FloatArray) -> FloatArray:
        w = np.maximum(t[0], self.likelihood_alpha, out=t[4])
        zs = [self._z_fold(x, g[m], g[v], w, t[k], t).copy() for x, m, v, k in
              ((raw, "raw_mean", "raw_var", 2), (g["novel"], "novel_mean", "novel_var", 6),
               (g["day_novel"], "day_mean", "day_var", 8))]
        self.members = [gaussian_nines(z) for z in zs]
        t[2][:] = np.maximum.reduce(self.members)
        out: FloatArray = t[2]
        return out

    def step(self, sensor: Any, event_ms: Any, value: FloatArray) -> FloatArray:
        # the product's step with the peak test per member (one sensor per detector here)
        m = sensor.shape[0]
        g, t, b = self._scratch.views(m)
        s = self._scratch.index(sensor)
        rows = self._scratch.rows(m)
        np.take(self.state[ens.STATS], s, axis=0, out=rows, mode="clip")
        np.copyto(self._scratch.columns(m), rows.T)
        n = g["n"]
        n += 1.0
        np.divide(1.0, n, out=t[0])
        np.copyto(g["first_ms"], event_ms, where=n == 1.0)
        learned = (n > self.warmup) & (event_ms - g["first_ms"] >= self.warmup_ms)
        phase = ens.day_phase(event_ms, self.context.utc_offset_s, self.phases)
        self._novelty(g, t, b, s, phase, value)
        raw = self._raw_score(g, t, b, value)
        self._explain_by_season(t, b, s, phase, value, raw, learned)
        level = self._calibrate(g, t, raw).copy() * learned
        if not hasattr(self, "peaks"):
            self.peaks = np.zeros((3, 1 + int(sensor.max())))
        new, far = np.zeros(m, bool), np.zeros(m, bool)
        for k, member in enumerate(self.members):
            member = member * learned
            peak = self.peaks[k][s] * self.peak_decay
            new |= member > peak
            far |= member > peak * ens.REFRACTORY_BREAK
            self.peaks[k][s] = np.maximum(member, peak)
        new &= ((n > g["quiet_until"]) | far) & (level >= ens.REPORT_FLOOR_NINES)
        np.copyto(g["quiet_until"], n + self.refractory, where=new)
        np.copyto(rows.T, self._scratch.columns(m))
        self.state[ens.STATS][s] = rows
        out: FloatArray = level / (level + ens.TAIL_NINES) * new
        return out


def shift_scaled(factor: float) -> type[ens.Ensemble]:
    class ShiftScaled(ens.Ensemble):
        def _raw_score(self, g: Any, t: Any, b: Any, x: FloatArray) -> FloatArray:
            n, first = g["n"], t[0]
            prev, short, slow_mean, slow_var = g["prev"], g["short_mean"], g["slow_mean"], g["slow_var"]
            np.copyto(prev, x, where=n == 1.0)
            d_point, d_step = x - g["fast_mean"], x - prev
            short += np.maximum(first, self.short_alpha) * (x - short)
            floor = (x * ens.REL_FLOOR) ** 2 + ens.ABS_FLOOR**2
            z2 = np.maximum.reduce([d_point**2 / (g["fast_var"] + floor), d_step**2 / (g["step_var"] + floor),
                                    factor * (short - slow_mean) ** 2 / (slow_var + floor)])
            a = np.maximum(first, self.alpha)
            tmp = np.empty_like(x)
            ens._ewma_fold(g["fast_mean"], g["fast_var"], d_point, d_point**2, a, tmp)
            g["step_var"] += a * (d_step**2 - g["step_var"])
            d_slow = x - slow_mean
            ens._ewma_fold(slow_mean, slow_var, d_slow, d_slow**2, np.maximum(first, self.slow_alpha), tmp)
            np.copyto(prev, x)
            t[7][:] = np.log1p(np.sqrt(z2)) * (n > 2.0)
            out: FloatArray = t[7]
            return out
    return ShiftScaled


def medium_shift(alpha: float, factor: float) -> type[ens.Ensemble]:
    """A fourth |z|: an EWMA of weight ``alpha`` (between the short and the slow one) against
    the slow mean and variance, times ``factor`` in z^2."""
    class MediumShift(ens.Ensemble):
        def _raw_score(self, g: Any, t: Any, b: Any, x: FloatArray) -> FloatArray:
            sensor = self.sensor_now
            if not hasattr(self, "medium"):
                self.medium = np.zeros(1 + int(sensor.max()))
            slow_mean, slow_var, n = g["slow_mean"].copy(), g["slow_var"].copy(), g["n"]
            medium = self.medium[sensor]
            medium += np.maximum(1.0 / n, alpha) * (x - medium)
            self.medium[sensor] = medium
            floor = (x * ens.REL_FLOOR) ** 2 + ens.ABS_FLOOR**2
            z2 = factor * (medium - slow_mean) ** 2 / (slow_var + floor) * (n > 2.0)
            raw = super()._raw_score(g, t, b, x)
            raw[:] = np.log1p(np.sqrt(np.maximum(np.expm1(raw) ** 2, z2)))
            return raw

        def step(self, sensor: Any, event_ms: Any, value: FloatArray) -> FloatArray:
            self.sensor_now = sensor  # the readings' sensors, for _raw_score
            return super().step(sensor, event_ms, value)
    return MediumShift


def knn_distance(v: FloatArray, length: int, window: int) -> FloatArray:
    """Causal kNN distance of each reading's last ``length`` readings (see the docstring)."""
    out = np.zeros(v.shape[0])
    lo, hi = np.minimum.accumulate(v), np.maximum.accumulate(v)
    span = np.maximum(hi - lo, 1e-9)
    lags = np.arange(length)[::-1][None, :]
    for i in range(2 * length, v.shape[0]):
        x = (v[i - length + 1:i + 1] - lo[i]) / span[i]
        ends = np.arange(max(length - 1, i - length - window), i - length)[:, None]
        past = (v[ends - lags] - lo[i]) / span[i]
        out[i] = np.sqrt(((past - x) ** 2).mean(axis=1).min())
    return out


class KnnMember(ens.Ensemble):
    """The kNN distance (set per batch in ``external``) as a fourth calibrated member."""

    external: FloatArray = np.zeros(0)

    def _calibrate(self, g: Any, t: Any, raw: FloatArray) -> FloatArray:
        nines = super()._calibrate(g, t, raw)
        if not hasattr(self, "fold"):
            self.fold = [0.0, 0.0, 0]  # mean, variance, count
        z = np.empty(nines.shape[0])
        for k, d in enumerate(np.log1p(10.0 * self.external)):  # one sensor: fold reading by reading
            mean, var, count = self.fold
            count += 1
            w = max(1.0 / count, self.likelihood_alpha)
            z[k] = (d - mean) / (np.sqrt(var) + 1e-3)
            self.fold = [mean + w * (d - mean), (1 - w) * (var + w * (d - mean) ** 2), count]
        np.maximum(nines, gaussian_nines(z), out=nines)
        return nines


def nonnegative(fn: Callable[[FloatArray], FloatArray]) -> Transform:
    return lambda v: fn(v - v.min()) if v.min() >= 0 else v


def variants() -> dict[str, tuple[type[ens.Ensemble], Transform | None, tuple[int, int] | None]]:
    out: dict[str, tuple[type[ens.Ensemble], Transform | None, tuple[int, int] | None]] = {
        "default": (ens.Ensemble, None, None),
        "log1p": (ens.Ensemble, nonnegative(np.log1p), None),
        "sqrt": (ens.Ensemble, nonnegative(np.sqrt), None),
        "sum_nines": (SumNines, None, None),
        "member_peaks": (MemberPeaks, None, None),
        "shift_x3": (shift_scaled(3.0), None, None),
        "shift_x9": (shift_scaled(9.0), None, None),
    }
    for alpha, factor in ((0.02, 1.0), (0.02, 10.0), (0.05, 3.0)):
        out[f"medium_{alpha:g}_x{factor:g}"] = (medium_shift(alpha, factor), None, None)
    for length, window in ((8, 500), (4, 2000), (16, 1000)):
        out[f"knn_{length}_{window}"] = (KnnMember, None, (length, window))
    return out


def score_variant(series: list[Series], cls: type[ens.Ensemble], transform: Transform | None,
                  knn: tuple[int, int] | None) -> list[FloatArray]:
    scores = []
    for s in series:
        detector = cls(DetectorContext(quantities=(QUANTITY,)), quantity=QUANTITY)
        values = s.value if transform is None else transform(s.value)
        extra = knn_distance(values, *knn) if knn else None
        out = np.zeros(values.shape[0])
        for lo in range(0, values.shape[0], 256):
            hi = min(values.shape[0], lo + 256)
            if extra is not None:
                detector.external = extra[lo:hi]  # type: ignore[attr-defined]
            result = detector.score_and_update(batch_from_columns(np.zeros(hi - lo), s.event_time_ms[lo:hi],
                                                                  values[lo:hi]))
            out[lo + result.rows] = result.score
        scores.append(out)
    return scores


def main(argv: list[str]) -> int:
    table = variants()
    unknown = [name for name in argv if name not in table]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {unknown}; valid: {list(table)}")
    scorer = nab_eval.load_scorer()
    series = [read_series(key, path) for key, path in find_csvs(nab_eval.DEFAULT_DATA)]
    windows = json.loads(nab_eval.DEFAULT_WINDOWS.read_text(encoding="utf-8"))
    print(f"{'variant':16} {'all':>6} {'LOCO':>6}  windows, FP rows (all, standard)")
    for name in argv or list(table):
        cases = nab_eval.build_cases(scorer, series, score_variant(series, *table[name]), windows)
        figures = nab_eval.report(scorer, cases)
        loco = nab_eval.loco_total(scorer, cases, figures["leave_one_category_out"], "standard")
        std = figures["all"]["standard"]
        print(f"{name:16} {std['normalized']:6.1f} {loco:6.1f}  "
              f"{std['windows_detected']}/{std['windows_detected'] + std['windows_missed']}, {std['fp_rows']}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
