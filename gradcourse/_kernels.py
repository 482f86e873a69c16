"""The probe's measurement kernels: one pass over a float32 array, every sum in float64.

In torch, a float64-accurate mean, spread and saturated count of one layer's activation takes a
float64 copy and four to six more passes, each a separate operation with its own dispatch: on a
512×64 activation that is 40–70 µs, most of a probe's cost. Each kernel here reads its array
once and accumulates in float64 (a float32 value converts exactly, and float64 squares of float32
values neither underflow nor overflow): about 5–10 µs. numba compiles them on first use and
caches the machine code next to this file.

Callers pass float32 numpy arrays (``tensor.numpy(force=True).ravel()``);
:mod:`gradcourse.measurements` decides when, and falls back to torch in float64 otherwise.

>>> import numpy as np
>>> moments(np.array([1.0, 2.0, 3.0], dtype=np.float32), 2.0)
(0.0, 2.0)
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Reassociation lets the compiler vectorise the float64 sums: their order changes, not their
# accuracy (about 1e-16 relative). NaN and Inf keep their meaning (no "nnan"/"ninf").
_FAST = {"reassoc", "contract"}


@njit(cache=True, fastmath=_FAST, nogil=True)
def moments(x, centre):
    """(Σd, Σd²) of d = x − centre, for a 1-D float32 array."""
    total = 0.0
    squares = 0.0
    for i in range(x.size):
        d = np.float64(x[i]) - centre
        total += d
        squares += d * d
    return total, squares


@njit(cache=True, fastmath=_FAST, nogil=True)
def moments_and_outside(x, centre, low, high):
    """(Σd, Σd², how many x < low or x > high), for a 1-D float32 array and float32 bounds."""
    total = 0.0
    squares = 0.0
    outside = 0
    for i in range(x.size):
        v = x[i]
        d = np.float64(v) - centre
        total += d
        squares += d * d
        outside += (v < low) | (v > high)
    return total, squares, outside


@njit(cache=True, fastmath=_FAST, nogil=True)
def moments_and_unit_max(x, centre):
    """(Σd, Σd², the largest value of each column) for a 2-D float32 array (batch, units)."""
    total = 0.0
    squares = 0.0
    unit_max = x[0].copy()
    for i in range(x.shape[0]):
        row = x[i]
        for j in range(row.size):
            v = row[j]
            d = np.float64(v) - centre
            total += d
            squares += d * d
            unit_max[j] = max(unit_max[j], v)  # branch-free: vectorises across the row
    return total, squares, unit_max


@njit(cache=True, fastmath=_FAST, nogil=True)
def sum_of_squares(x):
    """Σx² for a 1-D float32 array."""
    squares = 0.0
    for i in range(x.size):
        v = np.float64(x[i])
        squares += v * v
    return squares


@njit(cache=True, fastmath=_FAST, nogil=True)
def segment_sums_of_squares(x, ends):
    """Σx² of each segment of a 1-D float32 array: segment k ends (exclusive) at ``ends[k]``."""
    sums = np.empty(ends.size)
    start = 0
    for k in range(ends.size):
        sums[k] = sum_of_squares(x[start:ends[k]])  # a slice: the inner loop vectorises
        start = ends[k]
    return sums


@njit(cache=True, nogil=True)
def segment_exponent_counts(bits, ends, first, last):
    """How many values of each segment (as for :func:`segment_sums_of_squares`) have each biased
    float32 exponent E = floor(log2|x|) + 127, read exactly from ``bits`` (the array viewed as
    int32) and clamped to [first, last]: int64 counts of shape (segments, last − first + 1).

    Each segment is counted into four tables of all 256 exponents, four values at a time, and
    clamped once per exponent at the end: neighbouring values (often of equal exponent) then do
    not wait on each other's increments, and the inner loop does no clamping."""
    counts = np.zeros((ends.size, last - first + 1), dtype=np.int64)
    tables = np.empty((4, 256), dtype=np.int64)
    start = 0
    for k in range(ends.size):
        tables[:] = 0
        end = ends[k]
        i = start
        while i + 4 <= end:
            tables[0, (bits[i] >> 23) & 0xFF] += 1
            tables[1, (bits[i + 1] >> 23) & 0xFF] += 1
            tables[2, (bits[i + 2] >> 23) & 0xFF] += 1
            tables[3, (bits[i + 3] >> 23) & 0xFF] += 1
            i += 4
        for j in range(i, end):
            tables[0, (bits[j] >> 23) & 0xFF] += 1
        for e in range(256):
            counts[k, min(max(e, first), last) - first] += tables[0, e] + tables[1, e] + tables[2, e] + tables[3, e]
        start = end
    return counts
