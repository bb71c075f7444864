"""China AQI per HJ 633-2012, vectorized, and the ``aqi_hj633`` detector.

IAQI = (IAQI_hi - IAQI_lo) / (BP_hi - BP_lo) * (C - BP_lo) + IAQI_lo, rounded up
to an integer; AQI = max IAQI over the six pollutants of one reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from detectors.arrays import firsts
from detectors.base import (
    FLAG_NORMAL,
    DetectorContext,
    FloatArray,
    IntArray,
    ReadingBatch,
    Scores,
    Stateless,
)
from detectors.views import views

STANDARD: Final = "HJ 633-2012"  # published 2012-02-29, in force nationally 2016-01-01
MEASURE: Final = "aqi"
POLLUTANTS: Final = ("pm25", "pm10", "no2", "so2", "o3", "co")

# HJ 633-2012 Table 1, transcribed 2026-11-26 from docs/domain-reference.md §3.1
# (MEE original: mee.gov.cn ... t20120302_224166). µg/m³ except CO in mg/m³.
# A later revision may move PM breakpoints (drafts use PM2.5 35, 60, ...): add a
# new dated table then, do not edit these.
IAQI_STEPS: Final = (0.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0)
BREAKPOINTS_1H: Final[Mapping[str, tuple[float, ...]]] = {
    "so2": (0, 150, 500, 650, 800),  # no 1h sub-index above 800: see _FALLBACK
    "no2": (0, 100, 200, 700, 1200, 2340, 3090, 3840),
    "co": (0, 5, 10, 35, 60, 90, 120, 150),
    "o3": (0, 160, 200, 300, 400, 800, 1000, 1200),
}
BREAKPOINTS_24H: Final[Mapping[str, tuple[float, ...]]] = {
    "so2": (0, 50, 150, 475, 800, 1600, 2100, 2620),
    "no2": (0, 40, 80, 180, 280, 565, 750, 940),
    "pm10": (0, 50, 150, 250, 350, 420, 500, 600),
    "co": (0, 2, 4, 14, 24, 36, 48, 60),
    "pm25": (0, 35, 75, 115, 150, 250, 350, 500),
}
BREAKPOINTS_8H: Final[Mapping[str, tuple[float, ...]]] = {
    "o3": (0, 100, 160, 215, 265, 800),  # no 8h sub-index above 800: see _FALLBACK
}
BREAKPOINTS: Final[Mapping[str, Mapping[str, tuple[float, ...]]]] = {
    "1h": BREAKPOINTS_1H,
    "24h": BREAKPOINTS_24H,
    "8h": BREAKPOINTS_8H,
}
# Table notes (2) and (3): above its top breakpoint the sub-index comes from this table.
_FALLBACK: Final[Mapping[tuple[str, str], str]] = {("so2", "1h"): "24h", ("o3", "8h"): "1h"}

# Which table each pollutant uses per detector mode. HJ 633 has no 1h PM table, so
# the real-time (hourly) report applies the 24h PM table to hourly values.
TABLE_FOR_MODE: Final[Mapping[str, Mapping[str, str]]] = {
    "1h": {"so2": "1h", "no2": "1h", "co": "1h", "o3": "1h", "pm10": "24h", "pm25": "24h"},
    "24h": {"so2": "24h", "no2": "24h", "co": "24h", "o3": "8h", "pm10": "24h", "pm25": "24h"},
}

# IAQI results are whole numbers; a computed 150.0000000000001 must stay 150, so
# floating-point noise below this is ignored before rounding up.
_CEIL_TOLERANCE: Final = 1e-9


@dataclass(frozen=True, slots=True)
class AqiLevel:
    """One row of HJ 633-2012 Table 2 (colours from Annex A)."""

    level: int
    aqi_min: int
    aqi_max: int | None  # None: open-ended (> 300)
    name_zh: str
    name_en: str
    colour_zh: str
    colour_en: str
    rgb: tuple[int, int, int]


# RGB as commonly reproduced from Annex A (go-aqi uses (0, 255, 0) for green).
AQI_LEVELS: Final = (
    AqiLevel(1, 0, 50, "优", "excellent", "绿色", "green", (0, 228, 0)),
    AqiLevel(2, 51, 100, "良", "good", "黄色", "yellow", (255, 255, 0)),
    AqiLevel(3, 101, 150, "轻度污染", "light", "橙色", "orange", (255, 126, 0)),
    AqiLevel(4, 151, 200, "中度污染", "moderate", "红色", "red", (255, 0, 0)),
    AqiLevel(5, 201, 300, "重度污染", "heavy", "紫色", "purple", (153, 0, 76)),
    AqiLevel(6, 301, None, "严重污染", "severe", "褐红色", "maroon", (126, 0, 35)),
)
_LEVEL_UPPER: Final = np.array([lv.aqi_max for lv in AQI_LEVELS[:-1]], np.float64)


def iaqi(pollutant: str, concentration: FloatArray, averaging: str) -> FloatArray:
    """IAQI of each concentration with the ``averaging`` table ("1h", "24h", "8h").

    Whole numbers, rounded up; 500 above the top breakpoint. SO2 1h above 800
    uses the 24h table and O3 8h above 800 the 1h table (HJ 633 Table 1 notes).
    """
    bp = _table(pollutant, averaging)
    c = np.asarray(concentration, np.float64)
    if not np.isfinite(c).all():
        msg = f"iaqi({pollutant!r}): concentrations must be finite"
        raise ValueError(msg)
    c = np.maximum(c, 0.0)  # a negative reading carries no pollution
    out = _interpolate(bp, c)
    fallback = _FALLBACK.get((pollutant, averaging))
    if fallback is not None:
        over = c > bp[-1]
        out[over] = _interpolate(_table(pollutant, fallback), c[over])
    return out


def aqi_level(aqi: FloatArray) -> IntArray:
    """HJ 633 level 1..6 of each AQI (0-50 -> 1, 51-100 -> 2, ..., > 300 -> 6)."""
    a = np.asarray(aqi, np.float64)
    if np.isnan(a).any():
        msg = "aqi_level: AQI must not be NaN"
        raise ValueError(msg)
    # side="left": an AQI equal to a level's upper bound stays in that level.
    return np.searchsorted(_LEVEL_UPPER, a, side="left").astype(np.int64) + 1


def _table(pollutant: str, averaging: str) -> FloatArray:
    tables = BREAKPOINTS.get(averaging)
    if tables is None:
        msg = f"averaging: {averaging!r} is not an HJ 633 table; valid: {sorted(BREAKPOINTS)}"
        raise ValueError(msg)
    if pollutant not in tables:
        msg = f"pollutant: {pollutant!r} has no {averaging} table; valid: {sorted(tables)}"
        raise ValueError(msg)
    return np.asarray(tables[pollutant], np.float64)


def _interpolate(bp: FloatArray, c: FloatArray) -> FloatArray:
    """Piecewise-linear IAQI on breakpoints ``bp``, rounded up, capped at 500."""
    steps = np.asarray(IAQI_STEPS[: bp.size], np.float64)
    hi = np.clip(np.searchsorted(bp, c, side="right"), 1, bp.size - 1)
    lo = hi - 1
    # Multiply before dividing so whole-number results come out exact.
    raw = (c - bp[lo]) * (steps[hi] - steps[lo]) / (bp[hi] - bp[lo]) + steps[lo]
    out: FloatArray = np.minimum(np.ceil(raw - _CEIL_TOLERANCE), IAQI_STEPS[-1])
    return out


class AqiHj633(Stateless):
    """AQI per reading from its normal-flag pollutant rows; row = primary pollutant."""

    def __init__(self, context: DetectorContext, *, averaging: str = "1h") -> None:
        if averaging not in TABLE_FOR_MODE:
            msg = f"averaging: {averaging!r} is not supported; valid: {sorted(TABLE_FOR_MODE)}"
            raise ValueError(msg)
        self.averaging = averaging
        self._table_of = TABLE_FOR_MODE[averaging]
        # quantity_idx -> index into POLLUTANTS, -1 for other quantities
        self._pollutant_of = np.array(
            [POLLUTANTS.index(q) if q in POLLUTANTS else -1 for q in context.quantities],
            np.int64,
        )
        self._tables()
        if not (self._pollutant_of >= 0).any():
            msg = (
                f"quantities: none of {list(POLLUTANTS)} is in this kind's catalog "
                f"{list(context.quantities)}"
            )
            raise ValueError(msg)

    def score_and_update(self, batch: ReadingBatch) -> Scores:
        # HJ 212: only N (normal) data may raise pollution alarms.
        pollutant = self._pollutant_of[batch.quantity_idx]
        rows = np.flatnonzero((pollutant >= 0) & (batch.flag == FLAG_NORMAL))
        if rows.size == 0:
            return Scores.none(MEASURE)
        sub = self._sub_indices(pollutant[rows], batch.value[rows])
        group = batch.reading_idx[rows]
        if views(batch).reading_starts() is not None:  # each reading's rows together: no sort
            primary = _first_max_per_run(group, sub)
        else:
            primary = _first_max_per_group(group, sub, rows)
        picked = rows[primary].astype(np.int64)
        return Scores(rows=picked, score=sub[primary], measure=MEASURE)

    def _sub_indices(self, pollutant: IntArray, value: FloatArray) -> FloatArray:
        """``iaqi`` of every row with its pollutant's table, all pollutants at once: each row
        looks up its own breakpoints (a padded table per pollutant and fallback), then the
        same interpolation arithmetic as ``iaqi``."""
        if not np.isfinite(value).all():
            msg = "aqi: concentrations must be finite"
            raise ValueError(msg)
        c = np.maximum(value, 0.0)  # a negative reading carries no pollution
        table = self._primary[pollutant]
        over = c > self._top[table]
        if over.any():  # SO2 1h above 800 and O3 8h above 800 use another table
            table = np.where(over & (self._fallback[table] >= 0), self._fallback[table], table)
        hi = np.empty(c.shape[0], np.int64)
        for k in range(self._sizes.shape[0]):  # a searchsorted per table (eight at most), not per row
            rows = np.flatnonzero(table == k)
            if rows.shape[0]:
                hi[rows] = np.searchsorted(self._breakpoints[k, : self._sizes[k]], c[rows], side="right")
        hi = np.clip(hi, 1, self._sizes[table] - 1)
        lo = hi - 1
        flat = self._breakpoints.reshape(-1)
        at = table * self._breakpoints.shape[1]
        bp_lo, bp_hi = flat[at + lo], flat[at + hi]
        step_lo, step_hi = _STEPS[lo], _STEPS[hi]
        raw = (c - bp_lo) * (step_hi - step_lo) / (bp_hi - bp_lo) + step_lo
        out: FloatArray = np.minimum(np.ceil(raw - _CEIL_TOLERANCE), IAQI_STEPS[-1])
        return out

    def _tables(self) -> None:
        """Per pollutant its table's row in a padded (+inf) breakpoint array, and per table
        the row of its fallback table (-1: none)."""
        tables: list[tuple[str, str]] = []
        for name in POLLUTANTS:
            averaging = self._table_of[name]
            tables.append((name, averaging))
        for name in POLLUTANTS:
            fallback = _FALLBACK.get((name, self._table_of[name]))
            if fallback is not None:
                tables.append((name, fallback))
        width = max(len(BREAKPOINTS[a][n]) for n, a in tables)
        self._breakpoints = np.full((len(tables), width), np.inf)
        self._sizes = np.zeros(len(tables), np.int64)
        for i, (name, averaging) in enumerate(tables):
            bp = _table(name, averaging)
            self._breakpoints[i, : bp.size] = bp
            self._sizes[i] = bp.size
        self._primary = np.arange(len(POLLUTANTS), dtype=np.int64)
        self._top = self._breakpoints[np.arange(len(tables)), self._sizes - 1]
        self._fallback = np.full(len(tables), -1, np.int64)
        for p, name in enumerate(POLLUTANTS):
            fallback = _FALLBACK.get((name, self._table_of[name]))
            if fallback is not None:
                self._fallback[p] = tables.index((name, fallback))


_STEPS: Final = np.asarray(IAQI_STEPS, np.float64)


def _first_max_per_run(group: npt.NDArray[np.integer[Any]], value: FloatArray) -> IntArray:
    """``_first_max_per_group`` when each group's positions are contiguous (runs, in
    position order): the first position of each run's maximum."""
    first = firsts(group)
    starts = np.flatnonzero(first)
    run = np.cumsum(first) - 1
    at_max = value == np.maximum.reduceat(value, starts)[run]
    out: IntArray = np.minimum.reduceat(np.where(at_max, np.arange(value.shape[0]), value.shape[0]), starts)
    return out


def _first_max_per_group(
    group: npt.NDArray[np.integer[Any]], value: FloatArray, rows: IntArray
) -> IntArray:
    """Positions of each group's max ``value`` (lowest row on ties), in row order."""
    order = np.lexsort((rows, -value, group))  # last key sorts first
    g = group[order]
    first = np.ones(g.size, bool)
    first[1:] = g[1:] != g[:-1]
    picked = order[first]
    out: IntArray = picked[np.argsort(rows[picked], kind="stable")]
    return out
