"""Dot products of one vector with many, four rows at a time: the vector is loaded once
per four accumulators (about 20% faster here than one row at a time)."""

from __future__ import annotations

import numpy as np
from numba import njit


def pad_rows(matrix: np.ndarray, multiple: int) -> np.ndarray:
    """``matrix`` with zero rows appended up to a multiple of ``multiple`` rows, C-contiguous."""
    padded = np.zeros((-(-len(matrix) // multiple) * multiple, *matrix.shape[1:]), dtype=matrix.dtype)
    padded[: len(matrix)] = matrix
    return padded


@njit(inline="always", fastmath={"reassoc", "contract", "nsz"}, cache=True)
def dot4(rows, vector, out):
    """out[i] = rows[i] · vector, for ``rows`` with a multiple of 4 rows.

    Inlined code compiles under the caller's flags: callers need ``fastmath`` with
    ``reassoc`` too, or the sums are not vectorised (measured 3x slower).
    """
    for first in range(0, len(rows), 4):
        total0 = total1 = total2 = total3 = np.float32(0)
        for dim in range(len(vector)):
            value = vector[dim]
            total0 += rows[first, dim] * value
            total1 += rows[first + 1, dim] * value
            total2 += rows[first + 2, dim] * value
            total3 += rows[first + 3, dim] * value
        out[first] = total0
        out[first + 1] = total1
        out[first + 2] = total2
        out[first + 3] = total3
