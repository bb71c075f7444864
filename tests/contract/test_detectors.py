"""Every detector configured in topology.yaml against the same contract.

Batches come from the simulated city through the real decoder, so the shapes
are the ones the worker sees.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from detectors.base import ReadingBatch
from detectors.registry import DETECTORS, build_detector
from streams.catalog import SensorIndex
from streams.decode import KindDecoder, RawMessage
from streams.sim.engine import SimOptions, generate
from streams.topology import Topology, load_topology

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = load_topology(REPO / "topology.yaml")
START_MS = 1_795_700_000_000
SPECS = [pytest.param(d, id=d.name) for d in TOPOLOGY.spec.detectors]


@functools.cache
def _batch(kind: str, seed: int) -> ReadingBatch:
    return _simulated_batch(TOPOLOGY, kind, seed)


def _simulated_batch(topology: Topology, kind: str, seed: int) -> ReadingBatch:
    opts = SimOptions(rate=None, duration_s=120, seed=seed, start_ms=START_MS)
    topic = topology.kind(kind).topic
    msgs = [RawMessage(m.value, m.key, m.topic, 0, i) for i, m in enumerate(m for t in generate(topology, opts) for m in t) if m.topic == topic]
    decoder = KindDecoder(kind, topology.kind(kind), topology.spec.input, {})
    decoded = decoder.decode(msgs, SensorIndex(topology.catalog.by_kind(kind)), START_MS + 200_000)
    assert decoded.dead == [] and len(decoded.batch) > 0
    return decoded.batch


def test_every_registered_detector_is_configured() -> None:
    assert {d.kind for d in TOPOLOGY.spec.detectors} == set(DETECTORS)


@pytest.mark.parametrize("spec", SPECS)
def test_contract(spec: object) -> None:
    from streams.topology_spec import DetectorSpec

    assert isinstance(spec, DetectorSpec)
    batch = _batch(spec.sensor_kind, seed=3)
    before = {name: getattr(batch, name).copy() for name in batch.__slots__}  # type: ignore[attr-defined]
    detector = build_detector(spec.kind, TOPOLOGY.context(spec.sensor_kind), spec.params)
    scores = detector.score(batch)
    # shape, dtype, no NaN, rows valid and unique, in batch order (routes scan per sensor in that order)
    assert scores.rows.dtype == np.int64 and scores.score.dtype == np.float64
    assert scores.rows.shape == scores.score.shape
    assert scores.rows.size > 0
    assert not np.isnan(scores.score).any()
    assert np.all(np.diff(scores.rows) > 0) and scores.rows.min() >= 0 and scores.rows.max() < len(batch)
    # no input mutation
    for name, array in before.items():
        np.testing.assert_array_equal(getattr(batch, name), array, err_msg=name)
    # deterministic, and a fresh instance agrees
    again = build_detector(spec.kind, TOPOLOGY.context(spec.sensor_kind), spec.params).score(batch)
    np.testing.assert_array_equal(again.rows, scores.rows)
    np.testing.assert_array_equal(again.score, scores.score)
    # batch boundaries do not matter: score two halves (cut between readings) and compare
    cut = _reading_cut(batch)
    first, second = batch.take(np.arange(cut)), batch.take(np.arange(cut, len(batch)))
    parts = [detector.score(first), detector.score(second)]
    np.testing.assert_array_equal(np.concatenate([parts[0].rows, parts[1].rows + cut]), scores.rows)
    np.testing.assert_array_equal(np.concatenate([p.score for p in parts]), scores.score)


def _reading_cut(batch: ReadingBatch) -> int:
    """A row index between two readings near the middle (readings are contiguous rows)."""
    middle = len(batch) // 2
    boundaries = np.flatnonzero(np.diff(batch.reading_idx) != 0) + 1
    return int(boundaries[np.argmin(np.abs(boundaries - middle))])
