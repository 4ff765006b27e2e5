"""Matryoshka truncation: keep the leading dimensions and re-normalise."""

from __future__ import annotations

import numpy as np


def truncate(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """The first ``dimensions`` columns of each row, scaled back to unit length.

    Rows that are all zero stay zero instead of becoming NaN.
    """
    if not 0 < dimensions <= vectors.shape[1]:
        raise ValueError(f"dimensions must be in [1, {vectors.shape[1]}], got {dimensions}")
    head = np.ascontiguousarray(vectors[:, :dimensions], dtype=np.float32)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    np.divide(head, norms, out=head, where=norms > 0)
    return head
