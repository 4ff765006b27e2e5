"""Retrieval quality on held-out queries, by exact dense search as the service searches.

The service's in-memory mirror ranks documents by one matrix product of L2-normalised vectors
(``rayprism.platform.store.routes.DenseRoute``); so does :func:`top_k` here. Each query has one
relevant document (a known-item set such as the Debian dev queries), and the metrics are those
``bench/retrieval.py`` prints, plus nDCG@10.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rayprism.platform.ranking import first_relevant_ranks, mean_reciprocal_rank
from rayprism.platform.vectors import normalised

METRICS = ("mrr@10", "recall@1", "recall@10", "ndcg@10")


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int, *, chunk: int = 1024) -> np.ndarray:
    """Row indices of the ``k`` best corpus vectors per query (cosine, best first)."""
    queries, corpus = normalised(queries), normalised(corpus)
    k = min(k, len(corpus))
    ranked = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start: start + chunk] @ corpus.T
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
        ranked[start: start + chunk] = np.take_along_axis(best, order, axis=1)
    return ranked


@dataclass(frozen=True)
class RetrievalScores:
    mrr_at_10: float
    recall_at_1: float
    recall_at_10: float
    ndcg_at_10: float
    queries: int

    def as_dict(self) -> dict[str, float]:
        return dict(zip(METRICS, (self.mrr_at_10, self.recall_at_1, self.recall_at_10, self.ndcg_at_10)))

    def line(self) -> str:
        return (f"MRR@10 {self.mrr_at_10:.4f}  R@1 {self.recall_at_1:.4f}  R@10 {self.recall_at_10:.4f}  "
                f"nDCG@10 {self.ndcg_at_10:.4f}  ({self.queries} queries)")


def score_rankings(ranked: np.ndarray, relevant: np.ndarray) -> RetrievalScores:
    """``ranked`` (queries, ≥10) corpus rows best first; ``relevant`` each query's one relevant row."""
    rank = first_relevant_ranks(np.asarray(ranked), [(row,) for row in np.asarray(relevant)])
    found = rank > 0
    # one relevant document: the ideal DCG is 1, so nDCG@10 is 1 / log2(rank + 1)
    ndcg = np.where(found, 1.0 / np.log2(np.maximum(rank, 1) + 1.0), 0.0)
    return RetrievalScores(mean_reciprocal_rank(rank), float((rank == 1).mean()), float(found.mean()),
                           float(ndcg.mean()), len(rank))


def evaluate_vectors(query_vectors: np.ndarray, corpus_vectors: np.ndarray, relevant: np.ndarray) -> RetrievalScores:
    return score_rankings(top_k(query_vectors, corpus_vectors, 10), relevant)


def evaluation_label(evaluation: dict) -> str:
    """How an evaluation record is named in the model card and the CLI's summary."""
    if evaluation.get("label"):
        return evaluation["label"]
    return "base model" if evaluation["epoch"] == 0 else f"epoch {evaluation['epoch']}"
