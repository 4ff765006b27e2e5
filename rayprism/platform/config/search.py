"""A search's settings that a collection keeps defaults for: the fusion of its routes, the rerank stage, and
``search_defaults``, the block a collection's config carries (declared in serve.yaml, given at creation, or
applied to a live collection by ``PUT /v1/collections/{name}/search_defaults``, which ``rayprism tune --apply``
uses).

The same classes are the HTTP schema's (``SearchRequest``), the store's (it fuses by the fusion models) and the
config's: one definition, read by attribute on every side. How a request and the defaults meet is
``SearchRequest.with_defaults`` (``rayprism.platform.api.requests``), the one place they do.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

from rayprism.platform.config.base import Integer, StrictModel, bounded
from rayprism.platform.store.vocabulary import DEFAULT_CANDIDATES, SearchMode

RRF_K = 60
"""Reciprocal rank fusion's constant, as in the RRF paper and Milvus's ``RRFRanker``."""
MAX_RRF_K = 16384
"""Milvus's ``RRFRanker`` takes k in [1, 16384); a larger k ranks by list membership alone."""
MAX_WEIGHT = 1e6
"""Weights are relative (only their ratio ranks); a million to one is as lopsided as fusion gets."""
MAX_CANDIDATES = 16384
"""The most hits one route of a search takes (what one Milvus search answers)."""

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


Normalization = Literal["min_max", "z_score"]
"""How weighted fusion puts each list's scores on one scale (the names OpenSearch's normalization processor uses)."""


class WeightedFusion(BaseModel):
    """Each list's scores normalised over its own hits, then a weighted sum (the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["weighted"]
    weights: FusionWeights = FusionWeights()
    normalization: Normalization = "min_max"
    """``min_max``: each list's scores mapped to [0, 1] (its worst hit 0, its best 1). ``z_score``: each list's
    mean subtracted and the difference divided by its standard deviation, so a hit far above the rest of its list
    counts for more than one barely ahead (a document a list lacks gets nothing from it; fused scores may be
    negative). On the Debian dev queries z_score scored about 0.847 MRR@10 against min_max's 0.835 (equal weights,
    50 candidates; docs/benchmarks.md, "Tuned search settings"); ``rayprism tune`` tries both."""


Fusion = Annotated[RRFFusion | WeightedFusion, Field(discriminator="type")]

DEFAULT_FUSION = WeightedFusion(type="weighted")
"""Equal-weight min-max fusion: on the Debian dev queries it beat RRF (k=60) by 0.03 MRR@10
and both single modes by 0.04+ (docs/benchmarks.md); RRF stays one option away."""


class RerankStage(BaseModel):
    """A search's last stage: a cross-encoder scores (query, text) of the best hits so far, and the
    k best by that score are the answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str | None = None
    """A ``kind: reranker`` model; optional when the service has exactly one."""
    candidates: Integer = Field(default=DEFAULT_CANDIDATES, gt=0, le=1000)
    """Hits rescored (at least k are)."""
    weight: StrictFloat = Field(default=1.0, ge=0, le=1)
    """The reranker's share of the final score. 1: the reranker's order alone. Below 1, the reranker's
    and the first stage's scores over the candidates are fused as ``weighted`` fusion fuses routes
    (each min-max normalised, weights ``weight`` and ``1 - weight``): a reranker trained on little
    data still adds what it knows without discarding what fusion knew."""


class SearchDefaults(StrictModel):
    """A collection's search settings, used by every search of it that leaves them out; a request still
    sets each one itself. Settings left out here fall back to the built-in defaults (``SearchRequest``'s).

    Defaults apply where they can: a search by example or by vector is dense and reranks nothing, so it
    takes only ``candidates`` (and ``fusion``, unused there) from them."""

    mode: SearchMode | None = None
    """The mode of a text search that names none."""
    fusion: Fusion | None = None
    """How hybrid search fuses its dense and BM25 hits."""
    candidates: bounded(gt=0, le=MAX_CANDIDATES) | None = None
    """Hits taken from each route before fusion (a multi-vector collection: documents reranked by MaxSim);
    a search asking for more hits (k, rerank.candidates) takes at least that many."""
    rerank: RerankStage | None = None
    """A rerank stage for text searches that give none (``"rerank": null`` in a request turns it off)."""
