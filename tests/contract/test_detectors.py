"""Every registered detector against the same contract (river's check_estimator).

Two sources of cases: every detector entry of topology.yaml, fed the simulated
city through the real decoder (the shapes the worker sees), and every class's
``test_params()`` on a synthetic one-quantity kind. Each case must:
score with the right shape and dtype, never NaN, leave the batch untouched,
give identical scores however the stream is cut into batches (random cuts and
one reading at a time), survive snapshot -> restore, ignore a repeated
reading, and score an injected anomaly above the baseline.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from detectors.base import Detector, DetectorContext, ReadingBatch, Scores
from detectors.columns import batch_from_columns
from detectors.registry import DETECTORS, build_detector
from streams.catalog import SensorIndex
from streams.decode import KindDecoder, RawMessage
from streams.sim.engine import SimOptions, generate
from streams.topology import Topology, load_topology

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = load_topology(REPO / "topology.yaml")
START_MS = 1_795_700_000_000
PERIOD_MS = 60_000
SYNTHETIC = DetectorContext(quantities=("value",), quantity_ranges=((-1e6, 1e6),), expected_period_s=60.0)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Detector]
    stream: Callable[[], ReadingBatch]  # rows in arrival order
    anomaly: str


def _topology_cases() -> Iterator[Case]:
    for spec in TOPOLOGY.spec.detectors:
        context = TOPOLOGY.context(spec.sensor_kind)

        def make(kind: str = spec.kind, ctx: DetectorContext = context, params: dict = dict(spec.params)) -> Detector:  # type: ignore[type-arg]
            return build_detector(kind, ctx, params)

        yield Case(f"topology:{spec.name}", make, functools.partial(_city_stream, spec.sensor_kind), "none")


def _class_cases() -> Iterator[Case]:
    for kind, cls in sorted(DETECTORS.items()):
        for i, params in enumerate(cls.test_params()):

            def make(k: str = kind, p: dict = dict(params)) -> Detector:  # type: ignore[type-arg]
                return build_detector(k, SYNTHETIC, p)

            yield Case(f"{kind}[{i}]", make, _synthetic_stream, str(getattr(cls, "anomaly", "none")))


# -- streams -----------------------------------------------------------------------------
@functools.cache
def _city_stream(kind: str) -> ReadingBatch:
    opts = SimOptions(rate=None, duration_s=180, seed=3, start_ms=START_MS)
    topic = TOPOLOGY.kind(kind).topic
    messages = (m for tick in generate(TOPOLOGY, opts) for m in tick if m.topic == topic)
    raw = [RawMessage(m.value, m.key, m.topic, 0, i) for i, m in enumerate(messages)]
    decoder = KindDecoder(kind, TOPOLOGY.kind(kind), TOPOLOGY.spec.input, {})
    decoded = decoder.decode(raw, SensorIndex(TOPOLOGY.catalog.by_kind(kind)), START_MS + 400_000)
    assert decoded.dead == [] and len(decoded.batch) > 0
    return _arrival_order(decoded.batch)


@functools.cache
def _synthetic_stream() -> ReadingBatch:
    """Seven sensors, a daily-ish wave plus noise, interleaved with jitter, so batches
    hold several readings of one sensor."""
    rng = np.random.default_rng(7)
    n_sensors, per_sensor = 7, 240
    sensor = np.repeat(np.arange(n_sensors), per_sensor)
    step = np.tile(np.arange(per_sensor), n_sensors)
    t = START_MS + step * PERIOD_MS + rng.integers(0, PERIOD_MS // 2, sensor.size)
    value = 100 + 10 * np.sin(2 * np.pi * step / 96) + sensor + rng.normal(0, 1, sensor.size)
    order = np.argsort(t, kind="stable")
    return _arrival_order(batch_from_columns(sensor[order], t[order], np.round(value[order], 3)))


def _arrival_order(batch: ReadingBatch) -> ReadingBatch:
    """Rows by (reading, quantity): the order they reached the decoder; the rows of a
    reading keep sharing its ``reading_idx``."""
    return batch.take(np.lexsort((batch.quantity_idx, batch.reading_idx)))


def _renumbered(piece: ReadingBatch) -> ReadingBatch:
    """A slice of the stream as the decoder would number it: readings 0..n-1."""
    _, reading = np.unique(piece.reading_idx, return_inverse=True)
    return ReadingBatch(piece.sensor_idx, reading.astype(np.int32), piece.event_time_ms, piece.quantity_idx,
                        piece.value, piece.flag)


def _feed(detector: Detector, stream: ReadingBatch, cuts: list[int]) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """Score ``stream`` cut before the given rows; per-row scores in arrival order
    (NaN = row not scored) and the entries about silent sensors."""
    out = np.full(len(stream), np.nan)
    silent: list[tuple[int, int, float]] = []
    bounds = [0, *[c for c in cuts if 0 < c < len(stream)], len(stream)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if lo == hi:
            continue
        arrival = np.arange(lo, hi)
        piece = _renumbered(stream.take(arrival))
        order = np.argsort(piece.sensor_idx, kind="stable")  # the decoder's row order
        batch = piece.take(order)
        scores = detector.score_and_update(batch)
        _check_scores(scores, batch)
        real = scores.rows >= 0
        out[arrival[order[scores.rows[real]]]] = scores.score[real]
        if not real.all():
            sensor, t = scores.sensors_and_times(batch)
            silent += zip(sensor[~real].tolist(), t[~real].tolist(), scores.score[~real].tolist(), strict=True)
    return out, sorted(silent)


def _check_scores(scores: Scores, batch: ReadingBatch) -> None:
    assert scores.rows.dtype == np.int64 and scores.score.dtype == np.float64
    assert scores.rows.shape == scores.score.shape
    assert not np.isnan(scores.score).any()
    real = scores.rows[scores.rows >= 0]
    assert np.all(np.diff(real) > 0) and (real.size == 0 or real.max() < len(batch))
    if (scores.rows < 0).any():
        assert scores.sensor_idx is not None and scores.event_time_ms is not None
        assert scores.sensor_idx.shape == scores.rows.shape == scores.event_time_ms.shape


def _reading_cuts(stream: ReadingBatch, rng: np.random.Generator, n: int) -> list[int]:
    """Cut positions that fall between readings (rows of one reading stay together)."""
    boundaries = np.flatnonzero(np.r_[True, np.diff(stream.reading_idx) != 0])
    return sorted(rng.choice(boundaries, size=min(n, boundaries.size), replace=False).tolist())


CASES = [pytest.param(c, id=c.name) for c in [*_topology_cases(), *_class_cases()]]


# -- the contract ---------------------------------------------------------------------------
def test_every_registered_detector_is_configured() -> None:
    assert {d.kind for d in TOPOLOGY.spec.detectors} == set(DETECTORS)


@pytest.mark.parametrize("case", CASES)
def test_scores_shape_and_no_mutation(case: Case) -> None:
    stream = case.stream()
    batch = stream.take(np.argsort(stream.sensor_idx, kind="stable"))  # the decoder's row order
    before = {name: copy.deepcopy(getattr(batch, name)) for name in ReadingBatch.__slots__}
    scores = case.make().score_and_update(batch)
    _check_scores(scores, batch)
    assert scores.rows.size > 0
    for name, array in before.items():
        np.testing.assert_array_equal(getattr(batch, name), array, err_msg=name)


@pytest.mark.parametrize("case", CASES)
def test_batch_boundaries_do_not_matter(case: Case) -> None:
    stream = case.stream()
    whole = _feed(case.make(), stream, [])
    rng = np.random.default_rng(11)
    for n_cuts in (1, 7, 60):
        cut = _feed(case.make(), stream, _reading_cuts(stream, rng, n_cuts))
        np.testing.assert_array_equal(cut[0], whole[0], err_msg=f"{n_cuts} cuts")
        assert cut[1] == whole[1], f"{n_cuts} cuts: silent-sensor entries differ"


@pytest.mark.parametrize("case", CASES)
def test_one_reading_at_a_time_equals_one_batch(case: Case) -> None:
    stream = case.stream().take(np.arange(min(600, len(case.stream()))))
    boundaries = np.flatnonzero(np.r_[True, np.diff(stream.reading_idx) != 0]).tolist()
    single = _feed(case.make(), stream, boundaries)
    whole = _feed(case.make(), stream, [])
    np.testing.assert_array_equal(single[0], whole[0])
    assert single[1] == whole[1]


@pytest.mark.parametrize("case", CASES)
def test_snapshot_restore_identity(case: Case) -> None:
    stream = case.stream()
    cut = _reading_cuts(stream, np.random.default_rng(5), 1)[0]
    reference = case.make()
    _feed(reference, stream.take(np.arange(cut)), [])
    restored = case.make()
    restored.restore(reference.snapshot())
    partial = case.make()  # restore only the sensors of the first half, by index
    sensors = np.unique(stream.sensor_idx[:cut]).astype(np.int64)
    partial.restore(reference.snapshot(sensors), sensors)
    rest = stream.take(np.arange(cut, len(stream)))
    expected = _feed(reference, rest, [])
    for other in (restored, partial):
        got = _feed(other, rest, [])
        np.testing.assert_array_equal(got[0], expected[0])
        assert got[1] == expected[1]


@pytest.mark.parametrize("case", CASES)
def test_restore_rejects_a_foreign_snapshot(case: Case) -> None:
    detector = case.make()
    _feed(detector, case.stream(), [])
    snapshot = detector.snapshot()
    snapshot["not_a_field"] = np.zeros(len(next(iter(snapshot.values()), np.zeros(0))))
    with pytest.raises(ValueError, match="not_a_field"):
        case.make().restore(snapshot)


@pytest.mark.parametrize("case", CASES)
def test_a_repeated_reading_changes_nothing_after_it(case: Case) -> None:
    """Documented: a reading not newer than the sensor's last (a duplicate, or out of
    order) is not learned from, so every later score is as if it never came."""
    stream = case.stream()
    cut = _reading_cuts(stream, np.random.default_rng(9), 1)[0]
    first, rest = stream.take(np.arange(cut)), stream.take(np.arange(cut, len(stream)))
    rows_of_last_reading = np.flatnonzero(first.reading_idx == first.reading_idx[-1])
    repeat = first.take(rows_of_last_reading)
    clean, noisy = case.make(), case.make()
    _feed(clean, first, [])
    _feed(noisy, first, [])
    _feed(noisy, repeat, [])
    np.testing.assert_array_equal(_feed(noisy, rest, [])[0], _feed(clean, rest, [])[0])


INJECTED = [c for c in CASES if c.values[0].anomaly != "none"]  # type: ignore[union-attr]


@pytest.mark.parametrize("case", INJECTED)
def test_an_injected_anomaly_scores_above_baseline(case: Case) -> None:
    """Sensor 0 of the synthetic stream gets the anomaly in its last 20 readings;
    its top score there must beat every score of the clean stream after warm-up."""
    stream = case.stream()
    clean = _feed(case.make(), stream, [])[0]
    anomalous_stream, window = _inject(stream, case.anomaly)
    scores, silent = _feed(case.make(), anomalous_stream, [])
    warm = np.arange(len(stream)) >= len(stream) // 2
    baseline = np.nanmax(clean[warm])
    if case.anomaly == "gap":
        top = max((s for sensor, _, s in silent if sensor == 0), default=-np.inf)
    else:
        top = np.nanmax(scores[window])
    assert top > baseline, f"{case.anomaly}: anomaly {top} vs baseline {baseline}"


def _inject(stream: ReadingBatch, anomaly: str) -> tuple[ReadingBatch, np.ndarray]:
    rows = np.flatnonzero(stream.sensor_idx == 0)[-20:]
    value = stream.value.copy()
    keep = np.ones(len(stream), bool)
    if anomaly == "spike":
        value[rows[-1]] += 50 * max(1.0, float(np.std(value[stream.sensor_idx == 0])))
        window = rows[-1:]
    elif anomaly == "flatline":
        value[rows] = value[rows[0]]
        window = rows
    elif anomaly == "decrease":
        value[rows[-1]] = value[rows[0]] - 1_000.0
        window = rows[-1:]
    elif anomaly == "gap":
        keep[rows] = False  # sensor 0 falls silent while the others go on
        window = rows
    else:
        msg = f"unknown anomaly kind {anomaly!r}; valid: spike, flatline, decrease, gap, none"
        raise AssertionError(msg)
    out = ReadingBatch(stream.sensor_idx, stream.reading_idx, stream.event_time_ms, stream.quantity_idx,
                       value, stream.flag)
    if anomaly == "gap":
        kept = np.flatnonzero(keep)
        out = _renumbered(out.take(kept))
    return out, window
