"""A 2-D picture of vectors: principal component analysis by numpy's SVD (the console's map of a collection).

The axes are the two directions of largest variance of a sample; any vector (a query, a hit outside the
sample) is placed on the same picture by the same projection. Each axis's sign is fixed (its largest loading
positive), so the same sample always draws the same picture, not a mirror image of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AXES = 2


@dataclass(frozen=True)
class Projection:
    mean: np.ndarray
    """The sample's mean vector, subtracted before projecting."""
    axes: np.ndarray
    """``AXES`` × dimensions: the principal directions, unit length, largest variance first (zero rows where
    the sample has fewer directions)."""
    explained: tuple[float, ...]
    """The share of the sample's variance along each axis (0 for a sample with none)."""

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` (n × dimensions) as n × ``AXES`` coordinates."""
        return (np.asarray(vectors, dtype=np.float64) - self.mean) @ self.axes.T


def pca(vectors: np.ndarray) -> Projection:
    """The projection onto the first ``AXES`` principal components of ``vectors`` (n × dimensions, n ≥ 1)."""
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim != 2 or len(matrix) == 0:
        raise ValueError(f"pca needs a non-empty n × dimensions matrix, got shape {matrix.shape}")
    mean = matrix.mean(axis=0)
    _, singular, directions = np.linalg.svd(matrix - mean, full_matrices=False)
    axes = np.zeros((AXES, matrix.shape[1]))
    found = directions[:AXES]
    axes[: len(found)] = found
    for axis in axes:
        if axis.any() and axis[np.argmax(np.abs(axis))] < 0:
            axis *= -1
    variance = singular**2
    total = float(variance.sum())
    explained = tuple(float(variance[i] / total) if total > 0 and i < len(variance) else 0.0 for i in range(AXES))
    return Projection(mean, axes, explained)
