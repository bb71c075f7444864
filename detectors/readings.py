"""Reading-level views of a long-format batch, for detectors that look at whole
readings rather than one quantity's rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.arrays import run_starts
from detectors.base import FLAG_NORMAL, FloatArray, IntArray, ReadingBatch


@dataclass(frozen=True, slots=True)
class Readings:
    """The readings of a long-format batch, in arrival order (ascending ``reading_idx``).

    ``row`` is each reading's first row in the batch; ``of_row`` maps every batch
    row to its reading's position here; ``row_sorted`` is ``row`` in ascending order.
    """

    row: IntArray
    of_row: IntArray
    row_sorted: IntArray

    @classmethod
    def of(cls, batch: ReadingBatch) -> Readings:
        if len(batch) == 0:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
        starts = reading_runs(batch)
        if starts is not None:  # the decoder's layout: no sort needed
            row = np.empty(starts.shape[0], np.int64)
            row[batch.reading_idx[starts]] = starts
            return cls(row, batch.reading_idx.astype(np.int64), starts)
        _, first, inverse = np.unique(batch.reading_idx, return_index=True, return_inverse=True)
        first = first.astype(np.int64)
        return cls(first, inverse.astype(np.int64).reshape(-1), np.sort(first))

    def __len__(self) -> int:
        return int(self.row.shape[0])

    def value(self, batch: ReadingBatch, quantity_idx: int) -> FloatArray:
        """Per reading: the value of ``quantity_idx`` when its HJ 212 flag is N, else NaN."""
        out = np.full(len(self), np.nan)
        hit = np.flatnonzero((batch.quantity_idx == quantity_idx) & (batch.flag == FLAG_NORMAL))
        out[self.of_row[hit]] = batch.value[hit]
        return out


def reading_runs(batch: ReadingBatch) -> IntArray | None:
    """First row of each run of equal ``reading_idx`` when every reading's rows are
    contiguous and the readings are exactly 0..n-1 (how the decoder builds a batch);
    None otherwise."""
    r = batch.reading_idx
    starts = run_starts(r)
    first = r[starts]
    n = starts.shape[0]
    if int(first.min()) != 0 or int(first.max()) != n - 1:
        return None
    seen = np.zeros(n, np.bool_)
    seen[first] = True
    return starts if bool(seen.all()) else None
