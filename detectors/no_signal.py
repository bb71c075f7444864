"""``no_signal``: sensors that have sent nothing for too long, judged in event time.

A silent sensor sends no reading to score, so this detector speaks about sensors
that are *not* in the batch (Scores entries with row -1, see detectors.base).

When is "now"? Never the wall clock: the detector's clock is its *watermark*,
the newest event time any sensor of the kind has sent so far. Silence is judged
only at *ticks*, the multiples of the kind's ``expected_period_s`` (context):
when a reading moves the watermark past one or more ticks, the detector checks
every tracked sensor at the newest tick T it passed, using the readings that
*arrived before* that reading (that reading's own sensor is speaking, so it is
not checked). A sensor whose newest event time is ``last`` has then been silent
for ``(T - last) / period`` periods; entries are emitted for sensors silent for
at least ``report_after_periods`` (event time T, score = periods of silence).
Every reading of a sensor scores 0, so its alarm clears when it speaks again.

Why this is independent of batch boundaries: the ticks crossed, the reading
that crosses each, and what arrived before it are properties of the arrival
sequence alone; the batch is processed as that sequence (readings in
``reading_idx`` order), so one batch, many batches or one reading at a time give
the same entries. When the watermark jumps over several ticks at once (a
backlog) only the newest is checked: it holds the longest silences.

Tracked sensors: every sensor that has reported, plus the catalog's sensors
(context.sensor_ids) from the start of observation (the earliest event time
seen), so a catalog sensor that never reports is flagged too.

Period: the kind's ``expected_period_s``; with ``learn_period`` a sensor whose
own average spacing of readings ((last - first) / (n - 1), over its fresh
readings) is longer uses that instead (a slow sensor is not "silent"). It is
only ever lengthened, so an incident that makes sensors report faster does not
make their normal spacing look like silence.

Caveat: the watermark is the maximum event time; the decoder admits readings up
to ``input.max_future_skew_s`` ahead of arrival, so one sensor with a clock
running minutes ahead would make every other sensor look silent. Keep that
skew small for kinds with a no_signal route.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from detectors.base import DetectorContext, FloatArray, Int32Array, IntArray, ReadingBatch, Scores
from detectors.readings import Readings, check_at_least, ints
from detectors.state import NEVER_MS, Field, SensorState

MEASURE: Final = "silent_periods"
UNSET_MS: Final = np.iinfo(np.int64).max  # first_ms of a sensor never heard


class NoSignal:
    """Periods of silence per sensor at event-time ticks; 0 on every reading."""

    anomaly: ClassVar[str] = "gap"

    def __init__(self, context: DetectorContext, *, report_after_periods: float = 2.0, learn_period: bool = True) -> None:
        check_at_least("report_after_periods", report_after_periods, 1.0)
        if not isinstance(learn_period, bool):
            msg = f"learn_period: must be true or false, got {learn_period!r}"
            raise ValueError(msg)
        self.report_after_periods = float(report_after_periods)
        self.learn_period = learn_period
        self.tick_ms = max(1, round(context.expected_period_s * 1000))
        self.n_catalog = len(context.sensor_ids)
        self.state = SensorState(
            {"last_ms": Field(np.int64, NEVER_MS), "first_ms": Field(np.int64, UNSET_MS), "n_fresh": Field(np.int64, 0)}
        )

    # -- the Detector protocol ---------------------------------------------------------
    def score_and_update(self, batch: ReadingBatch) -> Scores:
        readings = Readings.of(batch)
        if len(readings) == 0:
            return Scores.none(MEASURE)
        self.resize(max(self.n_catalog, int(batch.sensor_idx.max()) + 1))
        sensor = batch.sensor_idx[readings.row]
        t = batch.event_time_ms[readings.row]
        fresh = self._fresh(sensor, t)
        silent = self._scan(sensor, t, fresh)
        return self._scores(batch, readings, silent)

    def _fresh(self, sensor: Int32Array, t: IntArray) -> npt.NDArray[np.bool_]:
        """Readings newer than every earlier one of their sensor (arrival order)."""
        order = np.argsort(sensor, kind="stable")
        s, ts = sensor[order], t[order]
        start = np.r_[True, s[1:] != s[:-1]]
        segment = np.cumsum(start) - 1
        seed = ints(self.state["last_ms"])[s]
        # running max of each sensor's event times (segments offset so one accumulate serves all)
        t_min = int(ts.min())
        span = int(ts.max()) - t_min + 1
        running = np.maximum.accumulate(segment * span + (ts - t_min)) - segment * span + t_min
        newest = np.maximum(running, seed)  # newest event time up to and including each row
        newest_before = np.where(start, seed, np.r_[seed[:1], newest[:-1]])
        out = np.empty(sensor.shape[0], np.bool_)
        out[order] = ts > newest_before
        return out

    def _scan(self, sensor: Int32Array, t: IntArray, fresh: npt.NDArray[np.bool_]) -> list[tuple[int, IntArray, FloatArray, int]]:
        """Fold readings in arrival order, checking silence at every tick crossing.
        Returns (arrival position, silent sensors, scores, tick ms) per crossing."""
        last = ints(self.state["last_ms"])
        w0 = int(last[: self.state.n_sensors].max(initial=NEVER_MS))
        after = np.maximum.accumulate(np.maximum(t, w0))
        before = np.r_[w0, after[:-1]]
        crossing = np.flatnonzero((before != NEVER_MS) & (after // self.tick_ms > before // self.tick_ms))
        out = []
        done = 0
        for j in crossing.tolist():  # one iteration per event-time tick, not per reading
            self._fold(sensor[done:j], t[done:j], fresh[done:j])
            done = j
            tick = int(after[j] // self.tick_ms * self.tick_ms)
            who, periods = self._silent_at(tick, int(sensor[j]))
            if who.size:
                out.append((j, who, periods, tick))
        self._fold(sensor[done:], t[done:], fresh[done:])
        return out

    def _fold(self, sensor: Int32Array, t: IntArray, fresh: npt.NDArray[np.bool_]) -> None:
        np.maximum.at(ints(self.state["last_ms"]), sensor, t)
        np.minimum.at(ints(self.state["first_ms"]), sensor[fresh], t[fresh])
        np.add.at(ints(self.state["n_fresh"]), sensor[fresh], 1)

    def _silent_at(self, tick_ms: int, speaking: int) -> tuple[IntArray, FloatArray]:
        n = self.state.n_sensors
        last = ints(self.state["last_ms"])[:n]
        first = ints(self.state["first_ms"])[:n]
        heard = last != NEVER_MS
        tracked = heard | (np.arange(n) < self.n_catalog)
        tracked[speaking] = False
        start = int(first.min(initial=UNSET_MS))
        since = np.where(heard, last, start)
        periods = (tick_ms - since) / self.period_ms(n)
        who = np.flatnonzero(tracked & (periods >= self.report_after_periods)).astype(np.int64)
        return who, periods[who]

    def period_ms(self, n: int) -> FloatArray:
        """The period silence is measured in, per sensor (see the module docstring)."""
        expected = np.full(n, float(self.tick_ms))
        if not self.learn_period:
            return expected
        last, first = ints(self.state["last_ms"])[:n], ints(self.state["first_ms"])[:n]
        count = ints(self.state["n_fresh"])[:n]
        known = count >= 3
        learned = np.where(known, (last - np.where(known, first, last)) / np.maximum(count - 1, 1), 0.0)
        out: FloatArray = np.maximum(expected, learned)
        return out

    def _scores(self, batch: ReadingBatch, readings: Readings, silent: list[tuple[int, IntArray, FloatArray, int]]) -> Scores:
        real_rows = np.sort(readings.row)
        if not silent:
            return Scores(rows=real_rows, score=np.zeros(real_rows.shape[0]), measure=MEASURE)
        who = np.concatenate([w for _, w, _, _ in silent])
        at = np.concatenate([np.full(w.size, j, np.int64) for j, w, _, _ in silent])
        tick = np.concatenate([np.full(w.size, k, np.int64) for _, w, _, k in silent])
        periods = np.concatenate([p for _, _, p, _ in silent])
        anchor = self._anchor(batch, readings, who, at)
        # real rows ascend; a silence entry sits just before its sensor's next reading
        row = np.r_[real_rows, np.full(who.size, -1, np.int64)]
        key_row = np.r_[real_rows, anchor]
        key_real = np.r_[np.ones(real_rows.size, np.int64), np.zeros(who.size, np.int64)]
        key_at = np.r_[np.zeros(real_rows.size, np.int64), at]
        order = np.lexsort((key_at, key_real, key_row))
        n_real = real_rows.size
        sensor = np.r_[batch.sensor_idx[real_rows].astype(np.int64), who]
        times = np.r_[batch.event_time_ms[real_rows], tick]
        return Scores(
            rows=row[order],
            score=np.r_[np.zeros(n_real), periods][order],
            measure=MEASURE,
            sensor_idx=sensor[order].astype(np.int32),
            event_time_ms=times[order],
        )

    @staticmethod
    def _anchor(batch: ReadingBatch, readings: Readings, who: IntArray, at: IntArray) -> IntArray:
        """The batch row of each silent sensor's first reading after arrival position ``at``
        (len(batch) if it sends none later in this batch)."""
        n = len(readings)
        sensor = batch.sensor_idx[readings.row].astype(np.int64)
        keys = sensor * (n + 1) + np.arange(n)
        order = np.argsort(keys)
        idx = np.searchsorted(keys[order], who * (n + 1) + at, side="right")
        found = idx < n
        found[found] = sensor[order[idx[found]]] == who[found]
        out = np.full(who.shape[0], len(batch), np.int64)
        out[found] = readings.row[order[idx[found]]]
        return out

    def resize(self, n_sensors: int) -> None:
        self.state.resize(n_sensors)

    def snapshot(self, sensors: IntArray | None = None) -> dict[str, npt.NDArray[np.generic]]:
        return self.state.snapshot(sensors)

    def restore(self, arrays: Mapping[str, npt.NDArray[np.generic]], sensors: IntArray | None = None) -> None:
        self.state.restore(arrays, sensors)

    @classmethod
    def test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"report_after_periods": 3.0, "learn_period": False}
