"""The latest value per catalog sensor, for the Grafana boards (AQI per station, gas
%LEL per detector, speed per road station...), exposed bounded and without per-event work.

Counters never carry a sensor label (streams/metrics.py). Boards still need "the
current reading at each station"; so topology.yaml ``metrics`` names which
quantities (``latest_values``, per kind) and which detectors' scores
(``latest_scores``, e.g. the AQI) are exported, and only for *catalog* sensors:
the series count is bounded by the catalog, not by what arrives.

Per batch, :meth:`LatestValues.update` scatters the batch's newest reading per
(sensor, quantity) into numpy arrays (a lexsort, no Python loop over readings);
an event-time comparison keeps a late reading from overwriting a newer one. At
scrape time :class:`LatestCollector` turns the arrays into two gauge families:

- ``cityops_latest_value{kind, quantity, sensor_id, site_id, district}``
- ``cityops_latest_score{kind, detector, sensor_id, site_id, district}``

A sensor not heard since the worker started (or since a rebalance moved it
here) has no sample. With several workers each exports the sensors of its own
partitions, so a board sums or takes ``max by (sensor_id)`` across instances.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from detectors.arrays import lasts
from detectors.base import ReadingBatch, Scores
from streams.catalog import SensorInfo


class _Latest:
    """Newest value and its event time per (catalog sensor, column)."""

    def __init__(self, n_sensors: int, n_columns: int) -> None:
        self.value = np.full((n_sensors, n_columns), np.nan)
        self.time = np.full((n_sensors, n_columns), np.iinfo(np.int64).min, np.int64)
        self._last_row: npt.NDArray[np.int64] | None = None

    def put(self, sensor: npt.NDArray[np.integer], column: npt.NDArray[np.integer],
            time: npt.NDArray[np.int64], value: npt.NDArray[np.float64]) -> None:
        n_sensors, n_columns = self.value.shape
        keep = (sensor >= 0) & (sensor < n_sensors) & (column >= 0)
        if not keep.any():
            return
        if not keep.all():
            sensor, column, time, value = sensor[keep], column[keep], time[keep], value[keep]
        flat = sensor.astype(np.int64) * n_columns + column
        step = sensor[1:] != sensor[:-1]
        if bool(np.all(sensor[1:] >= sensor[:-1])) and bool(np.all((time[1:] >= time[:-1]) | step)):
            # grouped by sensor, event times never falling within a sensor (the decoder's
            # layout): a cell's last row is its newest (the latest row among equal times)
            last_row = self._scratch()
            np.maximum.at(last_row, flat, np.arange(flat.shape[0], dtype=np.int64))
            cells = np.flatnonzero(last_row >= 0)  # (cells: catalog sensors x exported columns)
            last = last_row[cells]
            last_row[cells] = -1
        else:
            order = np.lexsort((time, flat))  # by cell, then event time: the last of each cell is its newest
            cells = flat[order]
            last = order[lasts(cells)]
        newer = time[last] >= self.time.ravel()[flat[last]]
        chosen = last[newer]
        self.value.ravel()[flat[chosen]] = value[chosen]
        self.time.ravel()[flat[chosen]] = time[chosen]

    def _scratch(self) -> npt.NDArray[np.int64]:
        """-1 per cell (callers put back the -1s they overwrite)."""
        if self._last_row is None or self._last_row.shape[0] != self.value.size:
            self._last_row = np.full(self.value.size, -1, np.int64)
        return self._last_row


class LatestValues:
    """One kind's exported latest values (see the module docstring)."""

    def __init__(self, kind: str, sensors: Sequence[SensorInfo], quantities: Sequence[str],
                 exported: Sequence[str], detectors: Sequence[str]) -> None:
        self.kind, self.sensors = kind, list(sensors)
        self.quantities, self.detectors = list(exported), list(detectors)
        self._column = np.full(len(quantities), -1, np.int64)  # kind quantity index -> exported column
        for column, quantity in enumerate(exported):
            self._column[list(quantities).index(quantity)] = column
        self.values = _Latest(len(sensors), len(exported))
        self.scores = _Latest(len(sensors), len(detectors))

    def update(self, batch: ReadingBatch, scores: Mapping[str, Scores]) -> None:
        if len(batch) and self.quantities:
            self.values.put(batch.sensor_idx, self._column[batch.quantity_idx], batch.event_time_ms, batch.value)
        for column, name in enumerate(self.detectors):
            found = scores.get(name)
            if found is None or len(found.rows) == 0:
                continue
            rows = found.rows
            sensor = found.sensor_idx if found.sensor_idx is not None else batch.sensor_idx[rows]
            time = found.event_time_ms if found.event_time_ms is not None else batch.event_time_ms[rows]
            self.scores.put(np.asarray(sensor), np.full(len(rows), column, np.int64), np.asarray(time, np.int64),
                            np.asarray(found.score, np.float64))

    def samples(self) -> Iterator[tuple[str, str, SensorInfo, float]]:
        """("value"|"score", quantity or detector, sensor, value) for every cell heard."""
        for family, names, latest in (("value", self.quantities, self.values), ("score", self.detectors, self.scores)):
            sensors, columns = np.nonzero(~np.isnan(latest.value))
            for i, c in zip(sensors.tolist(), columns.tolist(), strict=True):
                yield family, names[c], self.sensors[i], float(latest.value[i, c])


class LatestCollector(Collector):
    """Prometheus collector over every kind's :class:`LatestValues`, read at scrape time."""

    def __init__(self, kinds: Callable[[], Mapping[str, LatestValues]]) -> None:
        self.kinds = kinds  # called per scrape: a pipeline replaces its holder when its state is reset

    def collect(self) -> Iterator[GaugeMetricFamily]:
        values = GaugeMetricFamily(
            "cityops_latest_value", "Latest reading of an exported quantity per catalog sensor (topology metrics.latest_values)",
            labels=["kind", "quantity", "sensor_id", "site_id", "district"])
        scores = GaugeMetricFamily(
            "cityops_latest_score", "Latest score of an exported detector per catalog sensor (topology metrics.latest_scores)",
            labels=["kind", "detector", "sensor_id", "site_id", "district"])
        for kind, latest in self.kinds().items():
            for family, name, sensor, value in latest.samples():
                target = values if family == "value" else scores
                target.add_metric([kind, name, sensor.sensor_id, sensor.site_id, sensor.district], value)
        yield values
        yield scores
