"""Retrieval metrics by exact dense search, checked against brute force and hand-worked rankings."""

import numpy as np
import pytest

from rayprism.trainers.evaluation import evaluate_vectors, score_rankings, top_k


def test_top_k_is_a_full_sort_by_cosine():
    rng = np.random.default_rng(0)
    queries, corpus = rng.normal(size=(50, 16)), rng.normal(size=(300, 16)) * rng.uniform(0.5, 3, size=(300, 1))
    unit = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    expected = np.argsort(-(queries @ unit.T), axis=1)[:, :10]
    assert np.array_equal(top_k(queries, corpus, 10, chunk=7), expected)


def test_scores_by_hand():
    ranked = np.array([[3, 1, 2, 0, 4, 5, 6, 7, 8, 9],     # relevant 3 at rank 1
                       [1, 2, 3, 4, 0, 5, 6, 7, 8, 9],     # relevant 0 at rank 5
                       [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])   # relevant 0 not in the top 10
    scores = score_rankings(ranked, np.array([3, 0, 0]))
    assert scores.mrr_at_10 == pytest.approx((1 + 1 / 5) / 3)
    assert scores.recall_at_1 == pytest.approx(1 / 3)
    assert scores.recall_at_10 == pytest.approx(2 / 3)
    assert scores.ndcg_at_10 == pytest.approx((1 + 1 / np.log2(6)) / 3)
    assert set(scores.as_dict()) == {"mrr@10", "recall@1", "recall@10", "ndcg@10"}


def test_identical_vectors_retrieve_themselves():
    corpus = np.eye(12, dtype=np.float32)
    scores = evaluate_vectors(corpus[:5] * 3, corpus, np.arange(5))
    assert (scores.mrr_at_10, scores.recall_at_1, scores.ndcg_at_10) == (1.0, 1.0, 1.0)
