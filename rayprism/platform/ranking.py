"""Ranking metrics, defined once for training's evaluation and re-embedding's gate, so a model that
training scores at some MRR@10 is gated on the same measure when a collection moves to it."""

from __future__ import annotations

from typing import Collection, Sequence

import numpy as np

CUTOFF = 10
"""Ranks counted: a relevant document below the tenth scores nothing (MRR@10)."""


def first_relevant_ranks(ranked: Sequence[Sequence], relevant: Sequence[Collection], k: int = CUTOFF) -> np.ndarray:
    """int64, one per query: the 1-based rank of its first relevant id among its first ``k``; 0 where none is."""
    ranks = np.zeros(len(ranked), dtype=np.int64)
    for query, (ids, wanted) in enumerate(zip(ranked, relevant, strict=True)):
        ranks[query] = next((rank for rank, doc_id in enumerate(ids[:k], start=1) if doc_id in wanted), 0)
    return ranks


def mean_reciprocal_rank(ranks: np.ndarray) -> float:
    """MRR over :func:`first_relevant_ranks`: 1/rank per query, 0 where nothing relevant was ranked;
    0.0 for no queries."""
    ranks = np.asarray(ranks)
    if not len(ranks):
        return 0.0
    return float(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0).mean())


def agreement(reference: Sequence, other: Sequence) -> float:
    """Share of ``reference``'s ids (a top-k) that ``other`` also has; 0.0 for an empty reference."""
    return len(set(reference) & set(other)) / len(reference) if len(reference) else 0.0
