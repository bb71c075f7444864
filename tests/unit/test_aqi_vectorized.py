"""The AQI detector's sub-indices, computed for all pollutants at once, equal ``iaqi`` per
pollutant bit for bit: breakpoints exactly, values between, negatives, and past the top
(SO2 1h and O3 8h fall back to their other table)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.aqi import BREAKPOINTS, POLLUTANTS, TABLE_FOR_MODE, AqiHj633, iaqi
from detectors.base import DetectorContext


@pytest.mark.parametrize("averaging", sorted(TABLE_FOR_MODE))
def test_all_pollutants_at_once_equal_iaqi(averaging: str) -> None:
    detector = AqiHj633(DetectorContext(quantities=POLLUTANTS), averaging=averaging)
    rng = np.random.default_rng(2)
    values, pollutants = [], []
    for p, name in enumerate(POLLUTANTS):
        table = BREAKPOINTS[TABLE_FOR_MODE[averaging][name]][name]
        edges = np.array(table, np.float64)
        v = np.r_[edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf), -3.0, 0.0,
                  rng.uniform(0, 1.3 * edges[-1], 3000), rng.uniform(edges[-1], 5 * edges[-1], 200), 1e6]
        values.append(v)
        pollutants.append(np.full(v.size, p, np.int64))
    value, pollutant = np.concatenate(values), np.concatenate(pollutants)
    order = rng.permutation(value.size)
    value, pollutant = value[order], pollutant[order]
    got = detector._sub_indices(pollutant, value)
    want = np.empty(value.size)
    for p, name in enumerate(POLLUTANTS):
        m = pollutant == p
        want[m] = iaqi(name, value[m], TABLE_FOR_MODE[averaging][name])
    np.testing.assert_array_equal(got, want)
