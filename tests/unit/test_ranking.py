"""The ranking metrics training's evaluation and re-embedding's gate share, against hand-worked answers."""

import numpy as np
import pytest

from rayprism.platform.ranking import agreement, first_relevant_ranks, mean_reciprocal_rank
from rayprism.platform.vectors import normalised


def test_first_relevant_rank_counts_the_first_ten_only():
    ranked = [["a", "b", "c"], ["x"] * 10 + ["wanted"], ["q", "r", "s"], []]
    relevant = [{"c", "b"}, {"wanted"}, {"s"}, {"a"}]
    assert first_relevant_ranks(ranked, relevant).tolist() == [2, 0, 3, 0]
    assert mean_reciprocal_rank(first_relevant_ranks(ranked, relevant)) == pytest.approx((1 / 2 + 1 / 3) / 4)


def test_no_queries_score_zero_rather_than_nan():
    assert mean_reciprocal_rank(first_relevant_ranks([], [])) == 0.0


def test_agreement_is_the_share_of_the_reference_found():
    assert agreement([1, 2, 3, 4], [4, 9, 1]) == 0.5
    assert agreement([], [1]) == 0.0


def test_normalised_rows_have_unit_length_and_zero_rows_stay_zero():
    rows = normalised([[3.0, 4.0], [0.0, 0.0]])
    assert rows.dtype == np.float32
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]])
    assert normalised([[1.0, 1.0]], np.float64).dtype == np.float64
