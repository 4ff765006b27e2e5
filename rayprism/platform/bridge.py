"""A linear map from a new model's embedding space to an old one's, so that while a collection
is re-embedded, queries embedded by the new model can search the old index.

Fitted on the collection's own documents embedded by both models: orthogonal Procrustes
(a rotation, or with unequal dimensions a semi-orthogonal map, keeps the new space's geometry)
or unconstrained least squares (fits better on the sample, may distort it). Its quality is
measured on held-out documents, against both endpoints: how close mapped vectors come to the
old model's own, and how often a mapped query finds the old model's top-10 in the old index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rayprism.platform.ranking import agreement
from rayprism.platform.vectors import normalised

BridgeMethod = Literal["procrustes", "lstsq"]


def _normalised(vectors: np.ndarray) -> np.ndarray:
    """In float64: the fit's SVD and least squares want the precision."""
    return normalised(vectors, np.float64)


@dataclass(frozen=True)
class Bridge:
    matrix: np.ndarray
    """(new dimensions, old dimensions): ``old ≈ new @ matrix``."""
    method: BridgeMethod

    def apply(self, new_vectors: np.ndarray) -> np.ndarray:
        """New-model vectors in the old space, L2-normalised as the old index's are compared."""
        return _normalised(_normalised(new_vectors) @ self.matrix).astype(np.float32)


def fit_bridge(new_vectors: np.ndarray, old_vectors: np.ndarray, method: BridgeMethod = "procrustes") -> Bridge:
    """The map that takes each row of ``new_vectors`` closest to the same row of ``old_vectors``."""
    new, old = _normalised(new_vectors), _normalised(old_vectors)
    if new.shape[0] != old.shape[0]:
        raise ValueError(f"the two samples differ in length: {new.shape[0]} new vectors, {old.shape[0]} old")
    if method == "procrustes":
        left, _, right = np.linalg.svd(new.T @ old, full_matrices=False)
        return Bridge(left @ right, method)
    if method == "lstsq":
        return Bridge(np.linalg.lstsq(new, old, rcond=None)[0], method)
    raise ValueError(f"method must be procrustes or lstsq, not {method!r}")


@dataclass(frozen=True)
class BridgeQuality:
    mean_cosine: float
    """Mapped new vectors against the old model's vectors of the same held-out documents."""
    top10_agreement: float
    """Share of the old model's own top-10 (in the old index) that the mapped query finds."""
    rows: int


def bridge_quality(bridge: Bridge, new_held: np.ndarray, old_held: np.ndarray, old_index: np.ndarray,
                   k: int = 10) -> BridgeQuality:
    """``new_held``/``old_held``: held-out documents (or queries) embedded by both models; each is
    used as a query of ``old_index`` (the old model's vectors) once mapped and once as the old
    model embeds it."""
    mapped, old, index = bridge.apply(new_held), _normalised(old_held), _normalised(old_index)
    cosine = float(np.mean(np.sum(mapped * old, axis=1)))
    k = min(k, len(index))
    by_bridge = np.argsort(-(mapped @ index.T), axis=1)[:, :k]
    by_old = np.argsort(-(old @ index.T), axis=1)[:, :k]
    shared = float(np.mean([agreement(a, b) for a, b in zip(by_old, by_bridge)]))
    return BridgeQuality(cosine, shared, len(new_held))
