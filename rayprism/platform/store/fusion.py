"""Fusing ranked lists from dense and sparse search into one, and the fusions a search may ask for.

Both take lists of ``(id, score)``, best first, where a higher score is better. The fusion
models (:mod:`rayprism.platform.config.search`, where a collection's search defaults name them too) are the HTTP
schema's ``fusion`` and what the store fuses by: one definition, read by attribute on both sides of the hop.
"""

from __future__ import annotations

import math
from typing import Any

from rayprism.platform.config.search import (  # noqa: F401  (the fusion models, defined with the search settings)
    DEFAULT_FUSION,
    MAX_RRF_K,
    MAX_WEIGHT,
    RRF_K,
    Fusion,
    FusionWeights,
    Normalization,
    RRFFusion,
    Weight,
    WeightedFusion,
)
from rayprism.platform.store.vocabulary import Hits


def reciprocal_rank(routes: list[Hits], k: int = RRF_K) -> Hits:
    """RRF: each list adds 1 / (k + rank) for the documents it holds (rank from 1)."""
    scores: dict[Any, float] = {}
    for hits in routes:
        for rank, (doc_id, _) in enumerate(hits, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)


def shares(weights: list[float]) -> tuple[list[float], float, float]:
    """Weights scaled to sum to 1 (all zero stay zero), and their sum as ``largest × rest``: fusing with
    shares ranks the same and cannot overflow, whatever finite weights come in (1e308 + 1e308 is inf)."""
    largest = max(weights, default=0.0)
    if largest <= 0:
        return [0.0] * len(weights), 0.0, 0.0
    scaled = [weight / largest for weight in weights]  # ≤ 1 each: their sum cannot overflow
    return [weight / sum(scaled) for weight in scaled], largest, sum(scaled)


def normalised(scores: list[float], normalization: Normalization = "min_max") -> list[float]:
    """One list's scores on the scale ``normalization`` names: ``min_max`` to [0, 1] (all equal: 1 each),
    ``z_score`` as standard deviations from the list's mean (all equal, or one hit: 0 each)."""
    if not scores:
        return []
    if normalization == "z_score":
        mean = sum(scores) / len(scores)
        deviation = math.sqrt(sum((score - mean) ** 2 for score in scores) / len(scores))
        return [(score - mean) / deviation if deviation > 0 else 0.0 for score in scores]
    low, spread = min(scores), max(scores) - min(scores)
    return [(score - low) / spread if spread > 0 else 1.0 for score in scores]


def weighted(routes: list[Hits], weights: list[float], normalization: Normalization = "min_max") -> Hits:
    """Each list's scores :func:`normalised` over its own hits (min-max to [0, 1] by default), then a weighted
    sum; a document absent from a list gets nothing from it.

    Ranked by the sum with the weights' :func:`shares` (in [0, 1]); the score reported is that times
    the weights' sum: the plain weighted sum (inf, never NaN, past the largest float)."""
    fused: dict[Any, float] = {}
    parts, largest, rest = shares(weights)
    for hits, part in zip(routes, parts):
        for (doc_id, _), value in zip(hits, normalised([score for _, score in hits], normalization)):
            fused[doc_id] = fused.get(doc_id, 0.0) + part * value
    ranked = sorted(fused.items(), key=lambda item: item[1], reverse=True)
    return [(doc_id, share * largest * rest) for doc_id, share in ranked]


def fuse(dense: Hits, sparse: Hits, fusion: Fusion = DEFAULT_FUSION) -> Hits:
    if isinstance(fusion, WeightedFusion):
        return weighted([dense, sparse], [fusion.weights.dense, fusion.weights.sparse], fusion.normalization)
    return reciprocal_rank([dense, sparse], fusion.k)
