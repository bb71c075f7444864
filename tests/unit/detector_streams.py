"""Hand-made multi-sensor, multi-quantity streams for detector tests, fed in any cut."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from detectors.base import FLAG_CODE, Detector, DetectorContext, ReadingBatch


@dataclass(frozen=True)
class R:
    """One reading: sensor, event time (s), values by quantity, HJ 212 flag."""

    sensor: int
    t_s: float
    values: Mapping[str, float]
    flag: str = "N"


def stream(context: DetectorContext, readings: Sequence[R]) -> ReadingBatch:
    """The readings in arrival order (list order), long format, reading_idx = arrival position."""
    index = {q: i for i, q in enumerate(context.quantities)}
    sensor, reading, t, q, v, f = [], [], [], [], [], []
    for i, r in enumerate(readings):
        for name, value in r.values.items():
            sensor.append(r.sensor)
            reading.append(i)
            t.append(round(r.t_s * 1000))
            q.append(index[name])
            v.append(value)
            f.append(FLAG_CODE[r.flag])
    return ReadingBatch(np.array(sensor, np.int32), np.array(reading, np.int32), np.array(t, np.int64),
                        np.array(q, np.int16), np.array(v, np.float64), np.array(f, np.uint8))


@dataclass(frozen=True)
class Fed:
    row_score: dict[tuple[int, int], float]  # (reading, quantity) -> score
    silent: list[tuple[int, int, float]]  # (sensor, event ms, score), in emission order per sensor


def feed(detector: Detector, whole: ReadingBatch, cuts: Sequence[int] = ()) -> Fed:
    """Feed ``whole`` (arrival order) cut before the given *readings*; each piece is
    ordered the way the decoder orders a batch (by sensor, then arrival)."""
    n_readings = int(whole.reading_idx.max()) + 1 if len(whole) else 0
    bounds = [0, *sorted(c for c in cuts if 0 < c < n_readings), n_readings]
    row_score: dict[tuple[int, int], float] = {}
    silent: list[tuple[int, int, float]] = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        piece = whole.take(np.flatnonzero((whole.reading_idx >= lo) & (whole.reading_idx < hi)))
        batch = piece.take(np.argsort(piece.sensor_idx, kind="stable"))
        scores = detector.score_and_update(batch)
        sensors, times = scores.sensors_and_times(batch) if (scores.rows < 0).any() else (None, None)
        for k, row in enumerate(scores.rows.tolist()):
            if row >= 0:
                row_score[(int(batch.reading_idx[row]), int(batch.quantity_idx[row]))] = float(scores.score[k])
            else:
                assert sensors is not None and times is not None
                silent.append((int(sensors[k]), int(times[k]), float(scores.score[k])))
    return Fed(row_score, silent)


def scores_of(fed: Fed, readings: Sequence[R], sensor: int, quantity: int = 0) -> list[float]:
    """Scores of one sensor's readings in order (NaN where the row was not scored)."""
    return [fed.row_score.get((i, quantity), float("nan")) for i, r in enumerate(readings) if r.sensor == sensor]
