"""What a search is made of, named once for the HTTP schema, the serving replica and the store."""

from __future__ import annotations

from typing import Literal

SearchMode = Literal["hybrid", "dense", "sparse", "multivector"]

DEFAULT_CANDIDATES = 50
"""Hits taken from each of dense and sparse before fusion (at least k), and hits a rerank stage
rescores: enough for fusion to find a document that one route ranks low."""
