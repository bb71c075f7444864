"""Alarm events' RFC 3339 times formatted for a whole batch at once equal the per-event
``datetime.isoformat`` ones, for any offset of whole minutes and any event time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streams.pipeline import KindPipeline
from streams.timeparse import parse_offset
from streams.topology import load_topology

TOPOLOGY = load_topology(Path(__file__).resolve().parents[2] / "topology.yaml")


@pytest.mark.parametrize("offset", ["+08:00", "-05:30", "+00:00", "+14:00", "-12:00"])
def test_batch_formatting_equals_isoformat(offset: str) -> None:
    pipeline = KindPipeline(TOPOLOGY, "hazmat")
    pipeline._tz = parse_offset(offset)
    rng = np.random.default_rng(3)
    ms = np.r_[rng.integers(-10**12, 4 * 10**12, 20_000), np.arange(-2000, 2000),
               1_800_000_000_000 + np.arange(-1000, 1000), 253_402_100_000_000, -30_610_000_000_000]
    assert pipeline._iso_many(ms.astype(np.int64)) == [pipeline._iso(int(m)) for m in ms]
