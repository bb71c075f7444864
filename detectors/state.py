"""Per-sensor detector state: named numpy arrays whose first axis is the sensor.

One class owns growth (new sensors appear at runtime), checkpoint snapshots
(all sensors or just the ones a batch touched) and validated restores, so every
detector gets the same semantics for free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.base import IntArray

NEVER_MS = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class Field:
    """One state array: dtype, value for a sensor never seen, per-sensor shape."""

    dtype: type[np.generic]
    fill: float | int | tuple[float, ...] = 0  # a tuple: one fill per element of ``shape``
    shape: tuple[int, ...] = ()


class SensorState:
    """Arrays ``name -> (n_sensors, *field.shape)``, grown with each field's fill."""

    def __init__(self, fields: Mapping[str, Field], n_sensors: int = 0) -> None:
        self.fields = dict(fields)
        self.arrays: dict[str, npt.NDArray[Any]] = {
            name: np.full((0, *f.shape), f.fill, f.dtype) for name, f in self.fields.items()
        }
        self.n_sensors = 0
        self.resize(n_sensors)

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.arrays[name]

    def resize(self, n_sensors: int) -> None:
        """Grow to at least ``n_sensors`` rows (never shrinks: indices are stable)."""
        if n_sensors <= self.n_sensors:
            return
        # grow geometrically so a stream of new sensors costs amortized O(1) each
        capacity = self.arrays and next(iter(self.arrays.values())).shape[0] or 0
        if n_sensors > capacity:
            new_capacity = max(n_sensors, 2 * capacity, 16)
            for name, f in self.fields.items():
                grown = np.full((new_capacity, *f.shape), f.fill, f.dtype)
                grown[:capacity] = self.arrays[name]
                self.arrays[name] = grown
        self.n_sensors = n_sensors

    def snapshot(self, sensors: IntArray | None = None) -> dict[str, npt.NDArray[Any]]:
        """Copies of every array, for all sensors or for ``sensors`` (in that order)."""
        if sensors is None:
            return {name: a[: self.n_sensors].copy() for name, a in self.arrays.items()}
        return {name: a[sensors] for name, a in self.arrays.items()}

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]], sensors: IntArray | None = None) -> None:
        """Load a snapshot; ValueError names the first array that does not fit."""
        missing, extra = sorted(set(self.fields) - set(arrays)), sorted(set(arrays) - set(self.fields))
        if missing or extra:
            msg = f"snapshot arrays do not match: missing {missing}, unexpected {extra}"
            raise ValueError(msg)
        n_rows = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
        if len(n_rows) > 1:
            msg = f"snapshot arrays disagree on the number of sensors: {sorted(n_rows)}"
            raise ValueError(msg)
        for name, f in self.fields.items():
            a = arrays[name]
            if a.dtype != np.dtype(f.dtype) or a.shape[1:] != f.shape:
                msg = f"snapshot array {name!r}: {a.dtype}{list(a.shape[1:])}, expected {np.dtype(f.dtype)}{list(f.shape)}"
                raise ValueError(msg)
        n = n_rows.pop() if n_rows else 0
        if sensors is None:
            self.resize(n)
            for name, a in arrays.items():
                self.arrays[name][:n] = a
            return
        if sensors.shape[0] != n:
            msg = f"snapshot has {n} sensor rows but {sensors.shape[0]} sensor indices were given"
            raise ValueError(msg)
        if n:
            self.resize(int(sensors.max()) + 1)
        for name, a in arrays.items():
            self.arrays[name][sensors] = a


class StateBacked:
    """Detector protocol methods for a detector whose state is one ``SensorState``."""

    state: SensorState

    def resize(self, n_sensors: int) -> None:
        self.state.resize(n_sensors)

    def snapshot(self, sensors: IntArray | None = None) -> dict[str, npt.NDArray[Any]]:
        return self.state.snapshot(sensors)

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]], sensors: IntArray | None = None) -> None:
        self.state.restore(arrays, sensors)
