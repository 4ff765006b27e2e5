"""What a search and a document id are made of, named once for the HTTP schema, the serving replica and the store
(no pymilvus here: the SDK imports the HTTP schema)."""

from __future__ import annotations

from typing import Any, Literal

SearchMode = Literal["hybrid", "dense", "sparse", "multivector"]
Metric = Literal["COSINE", "IP", "L2"]
"""A dense index's metric (BM25 scores the sparse route)."""

Hits = list[tuple[Any, float]]
"""``(id, score)`` best first, a higher score better: what every route, fusion and rerank answer."""

DEFAULT_CANDIDATES = 50
"""Hits taken from each of dense and sparse before fusion (at least k), and hits a rerank stage
rescores: enough for fusion to find a document that one route ranks low."""
MAX_PASSAGES = 20
"""Most pieces a chunked collection's hit shows (``passages`` of a search)."""

ID_MAX_BYTES = 512
"""Longest varchar id, in UTF-8 bytes."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The range of an int64 id."""
