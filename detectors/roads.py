"""Station order along roads, from the catalog.

A traffic station's ``site_id`` names its road section (``GSEXP-S03``: road
``GSEXP``, section 3) and its ``site_name`` carries its km post (``... K12.8 ...``).
Stations of one road, sorted by km post, are neighbours; travel runs towards
higher km posts (the catalog lists them in that order). Stations without a km
post have no neighbours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from detectors.base import IntArray

NONE = -1
_KM_POST = re.compile(r"\bK(\d+(?:\.\d+)?)\b")


def road_of(site_id: str) -> str:
    """``GSEXP-S03`` -> ``GSEXP`` (the whole id when it has no ``-``)."""
    return site_id.rpartition("-")[0] or site_id


def km_post(site_name: str) -> float | None:
    m = _KM_POST.search(site_name)
    return float(m.group(1)) if m else None


def downstream_stations(site_ids: Sequence[str], site_names: Sequence[str]) -> IntArray:
    """Per station (dense index), the next station along its road, or NONE."""
    out = np.full(len(site_ids), NONE, np.int64)
    roads: dict[str, list[tuple[float, int]]] = {}
    for i, (site, name) in enumerate(zip(site_ids, site_names, strict=True)):
        km = km_post(name)
        if km is not None:
            roads.setdefault(road_of(site), []).append((km, i))
    for stations in roads.values():
        stations.sort()
        for (_, here), (_, there) in zip(stations[:-1], stations[1:], strict=True):
            out[here] = there
    return out
