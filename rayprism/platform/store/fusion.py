"""Fusing ranked lists from dense and sparse search into one, and the fusions a search may ask for.

Both take lists of ``(id, score)``, best first, where a higher score is better. The fusion
models are the HTTP schema's ``fusion`` and what the store fuses by: one definition, read by
attribute on both sides of the hop.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

from rayprism.platform.config.base import Integer
from rayprism.platform.store.vocabulary import Hits

RRF_K = 60
"""Reciprocal rank fusion's constant, as in the RRF paper and Milvus's ``RRFRanker``."""
MAX_RRF_K = 16384
"""Milvus's ``RRFRanker`` takes k in [1, 16384); a larger k ranks by list membership alone."""
MAX_WEIGHT = 1e6
"""Weights are relative (only their ratio ranks); a million to one is as lopsided as fusion gets."""

Weight = Annotated[StrictFloat, Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False)]
"""A fusion weight: finite and bounded, so no weighted sum can overflow (fusion is safe beyond it too)."""


class RRFFusion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["rrf"]
    """Required, as the discriminator of ``fusion`` (the schema's ``oneOf`` cannot pick a member without it)."""
    k: Integer = Field(default=RRF_K, gt=0, lt=MAX_RRF_K)


class FusionWeights(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dense: Weight = 0.5
    sparse: Weight = 0.5


class WeightedFusion(BaseModel):
    """Each list's scores min-max normalised over its own hits, then a weighted sum (the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["weighted"]
    weights: FusionWeights = FusionWeights()


Fusion = Annotated[RRFFusion | WeightedFusion, Field(discriminator="type")]

DEFAULT_FUSION = WeightedFusion(type="weighted")
"""Equal-weight min-max fusion: on the Debian dev queries it beat RRF (k=60) by 0.03 MRR@10
and both single modes by 0.04+ (docs/benchmarks.md); RRF stays one option away."""


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


def weighted(routes: list[Hits], weights: list[float]) -> Hits:
    """Each list's scores min-max normalised to [0, 1] over its own hits, then a weighted sum;
    a document absent from a list gets nothing from it.

    Ranked by the sum with the weights' :func:`shares` (in [0, 1]); the score reported is that times
    the weights' sum: the plain weighted sum (inf, never NaN, past the largest float)."""
    fused: dict[Any, float] = {}
    parts, largest, rest = shares(weights)
    for hits, part in zip(routes, parts):
        if not hits:
            continue
        values = [score for _, score in hits]
        low, spread = min(values), max(values) - min(values)
        for doc_id, score in hits:
            normalised = (score - low) / spread if spread > 0 else 1.0
            fused[doc_id] = fused.get(doc_id, 0.0) + part * normalised
    ranked = sorted(fused.items(), key=lambda item: item[1], reverse=True)
    return [(doc_id, share * largest * rest) for doc_id, share in ranked]


def fuse(dense: Hits, sparse: Hits, fusion: Fusion = DEFAULT_FUSION) -> Hits:
    if isinstance(fusion, WeightedFusion):
        return weighted([dense, sparse], [fusion.weights.dense, fusion.weights.sparse])
    return reciprocal_rank([dense, sparse], fusion.k)
