"""Pattern novelty: has this sensor seen its last few quantized readings before?

A cheap, vectorized cousin of the contextual detectors of NAB (CAD OSE, HTM):
each reading is quantized into ``bins`` equal bins of the sensor's running
[min, max]; the last ``pattern`` bins form a key in 0 .. bins**pattern - 1
(a base-``bins`` number, the newest reading its last digit); a per-sensor
bitset of ``bins**pattern`` bits records every key the sensor has produced.
A reading is *novel* when its key's bit was not yet set (it is set then).
The ensemble smooths the novel flags into a rate and calibrates that rate
like its other scores.

A second, contextual key asks "have I seen this pattern *at this time of
day*?": the phase of the local day (``day_phase``: one of ``phases`` equal
parts, 24 = the hour) joined with the last ``context`` bins (``phase_key``),
in a bitset of its own. A daily rhythm that skips a beat (no jump today, a flat
afternoon) produces only familiar patterns, but at unfamiliar times.

Every function works on arrays of distinct sensors' readings, in place, with
no loop over rows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from detectors.base import FloatArray, IntArray

WORD_BITS = 64
#: the largest table, in keys (8 KB of bits per sensor)
MAX_KEYS = 1 << 16
BoolArray = npt.NDArray[np.bool_]
U64Array = npt.NDArray[np.uint64]


def n_words(bins: int, pattern: int) -> int:
    """uint64 words of a sensor's bitset of ``bins**pattern`` keys."""
    keys: int = bins**pattern
    return (keys + WORD_BITS - 1) // WORD_BITS


def quantize(x: FloatArray, lo: FloatArray, hi: FloatArray, bins: int, out: FloatArray, tmp: FloatArray) -> IntArray:
    """Bin of ``x`` in 0 .. bins - 1 among ``bins`` equal bins of [lo, hi].

    ``lo`` and ``hi`` are widened in place to include ``x`` first (start them at
    +inf and -inf). A sensor whose readings were all equal is in bin 0.
    """
    np.minimum(lo, x, out=lo)
    np.maximum(hi, x, out=hi)
    span = np.subtract(hi, lo, out=tmp)
    span += 1e-300  # 0 / tiny = 0: a flat sensor stays in bin 0, with no division by zero
    np.subtract(x, lo, out=out)
    out /= span
    out *= bins
    q = out.astype(np.intp)  # truncation is floor here: out >= 0
    return np.minimum(q, bins - 1, out=q)  # x == hi lands on ``bins`` exactly


def roll(key: FloatArray, q: IntArray, bins: int, pattern: int) -> IntArray:
    """The last ``pattern`` bins as one number, key * bins + q mod bins**pattern; stored in ``key`` too.

    ``key`` is a float state array: floats hold these small integers exactly
    (bins**pattern <= MAX_KEYS).
    """
    k = key.astype(np.intp)
    k *= bins
    k += q
    k %= bins**pattern
    key[:] = k
    return k


MS_PER_DAY = 86_400_000


def day_phase(event_ms: IntArray, utc_offset_s: int, phases: int) -> IntArray:
    """Part of the local day, 0 .. phases - 1, of each event time (``phases`` equal parts;
    24 gives the local hour)."""
    ms: IntArray = event_ms + utc_offset_s * 1000
    ms %= MS_PER_DAY  # numpy's % is a floor modulo: 0 .. MS_PER_DAY - 1 before 1970 too
    ms *= phases
    ms //= MS_PER_DAY
    return ms


def phase_key(key: IntArray, phase: IntArray, bins: int, context: int) -> IntArray:
    """The last ``context`` bins of ``key`` with the day phase in front: phase * bins**context
    + key mod bins**context, in 0 .. phases * bins**context - 1."""
    size = bins**context
    out: IntArray = np.remainder(key, size)
    out += phase * size
    return out


#: the one-bit masks of a word, by bit number
_BIT = np.left_shift(np.uint64(1), np.arange(WORD_BITS, dtype=np.uint64))


def mark_seen(seen: U64Array, sensor: IntArray, key: IntArray, out: BoolArray) -> BoolArray:
    """Whether bit ``key`` of each ``sensor``'s bitset (row of ``seen``) was clear; sets it.

    ``sensor`` must be distinct (one reading per sensor): each row is read and
    written once.
    """
    assert seen.flags.c_contiguous  # so that reshape gives a view, not a copy
    flat = seen.reshape(-1)
    where = sensor * seen.shape[1]
    where += key >> 6
    mask = _BIT[key & (WORD_BITS - 1)]
    word = flat[where]
    np.equal(np.bitwise_and(word, mask), 0, out=out)
    word |= mask
    flat[where] = word
    return out
