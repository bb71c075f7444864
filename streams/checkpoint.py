"""Per-sensor checkpoints of a kind's detector and route state, as Redis hash fields.

Every stateful part of a KindPipeline (each detector, each route's levels and
conditions) keeps per-sensor numpy arrays. After each batch the worker encodes
the rows of the sensors the batch touched into one fixed-size record per
sensor and writes them in the same MULTI/EXEC as the alarm board, before the
input offsets are acknowledged. So the state in Redis always reflects exactly
the readings whose alarms are on the board: after a crash the re-delivered
readings are "late" for the restored state and change nothing twice, and a
partition handed to another worker arrives with its sensors' history.

Records are keyed by sensor_id (dense indices differ between workers). The
hash name carries a digest of the record layout, so a topology change that
changes the state layout starts from a clean slate instead of misreading bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from detectors.base import IntArray
from streams.catalog import SensorIndex


class Stateful(Protocol):
    def snapshot(self, sensors: IntArray | None = None) -> dict[str, npt.NDArray[Any]]: ...

    def restore(self, arrays: Mapping[str, npt.NDArray[Any]], sensors: IntArray | None = None) -> None: ...


class KindCheckpoint:
    """Encode/decode per-sensor records of named stateful parts of one kind."""

    def __init__(self, namespace: str, kind: str, parts: Mapping[str, Stateful], index: SensorIndex) -> None:
        self.parts = dict(parts)
        self.index = index
        empty = {name: part.snapshot(np.zeros(0, np.int64)) for name, part in self.parts.items()}
        self.dtype = np.dtype([
            (f"{name}/{field}", array.dtype, array.shape[1:])
            for name, arrays in empty.items()
            for field, array in sorted(arrays.items())
        ])
        layout = repr(self.dtype.descr).encode()
        self.key = f"cityops:{namespace}:state:{kind}:{hashlib.blake2b(layout, digest_size=6).hexdigest()}"

    def encode(self, sensors: IntArray) -> dict[str, bytes]:
        """sensor_id -> record bytes for ``sensors``."""
        if sensors.size == 0 or self.dtype.itemsize == 0:
            return {}
        records = np.zeros(sensors.shape[0], self.dtype)
        for name, part in self.parts.items():
            for field, array in part.snapshot(sensors).items():
                records[f"{name}/{field}"] = array
        raw = records.tobytes()
        size = self.dtype.itemsize
        return {self.index.sensor_id(int(s)): raw[i * size:(i + 1) * size] for i, s in enumerate(sensors.tolist())}

    def load(self, stored: Mapping[bytes, bytes]) -> int:
        """Restore every record of ``stored`` (as read back from Redis); returns how many."""
        good = {k.decode(): v for k, v in stored.items() if len(v) == self.dtype.itemsize}
        if not good:
            return 0
        sensors = np.asarray(self.index.lookup(list(good)), np.int64)
        records = np.frombuffer(b"".join(good.values()), self.dtype)
        keep = sensors >= 0  # sensors beyond the unknown-sensor limit have no state
        sensors, records = sensors[keep], records[keep]
        for name, part in self.parts.items():
            fields = {f.split("/", 1)[1]: records[f] for f in self.dtype.names or () if f.split("/", 1)[0] == name}
            part.restore(fields, sensors)
        return int(sensors.size)
