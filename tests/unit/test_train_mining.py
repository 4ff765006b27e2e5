"""Hard negatives from a rank window of the base model's ranking: the positive and its near-duplicates skipped."""

import numpy as np

from rayprism.trainers.mining import cached_vectors, fingerprint, select_negatives


def ranked_corpus():
    """Query 0 along axis 0; document i has cosine to it decreasing with i (0 is the positive)."""
    angles = np.linspace(0, np.pi / 2, 40)
    corpus = np.stack([np.cos(angles), np.sin(angles), np.zeros(40)], axis=1).astype(np.float32)
    return np.array([[1.0, 0.0, 0.0]], dtype=np.float32), corpus


def test_candidates_come_from_the_window_only():
    query, corpus = ranked_corpus()
    picked = set()
    for seed in range(30):
        rows = select_negatives(query, corpus, np.array([0]), rank_from=3, rank_to=6, per_query=1,
                                max_similarity_to_positive=1.0, seed=seed)
        picked.add(int(rows[0, 0]))
    # ranks 1..6 without the positive are documents 1..6; the window 3..6 is documents 3..6
    assert picked == {3, 4, 5, 6}


def test_the_positive_anywhere_in_the_ranking_is_skipped():
    query, corpus = ranked_corpus()
    # the positive is document 4: ranks without it are 0,1,2,3,5,6,...
    rows = select_negatives(query, corpus, np.array([4]), rank_from=1, rank_to=6, per_query=6,
                            max_similarity_to_positive=1.0, seed=0)
    assert sorted(rows[0]) == [0, 1, 2, 3, 5, 6]


def test_near_duplicates_of_the_positive_are_skipped_and_missing_slots_are_minus_one():
    query, corpus = ranked_corpus()
    corpus[1] = corpus[0]  # an exact copy of the positive, ranked first among the others
    rows = select_negatives(query, corpus, np.array([0]), rank_from=1, rank_to=3, per_query=3,
                            max_similarity_to_positive=0.999, seed=0)
    assert 1 not in rows[0] and sorted(rows[0]) == [-1, 2, 3]


def test_seeded_and_cached(tmp_path):
    rng = np.random.default_rng(1)
    queries, corpus = rng.normal(size=(20, 8)), rng.normal(size=(200, 8))
    positives = np.arange(20)
    first = select_negatives(queries, corpus, positives, rank_from=5, rank_to=40, per_query=2,
                             max_similarity_to_positive=0.95, seed=3, chunk=6)
    again = select_negatives(queries, corpus, positives, rank_from=5, rank_to=40, per_query=2,
                             max_similarity_to_positive=0.95, seed=3)
    assert np.array_equal(first, again) and (first != positives[:, None]).all()
    key = fingerprint("model", {"tokens": 128}, ["a", "b"])
    assert key != fingerprint("model", {"tokens": 64}, ["a", "b"]) != fingerprint("model", {"tokens": 128}, ["ab"])
    calls = []
    compute = lambda: calls.append(1) or [corpus, queries]  # noqa: E731
    arrays, cached = cached_vectors(tmp_path / f"v-{key}.npz", compute)
    again_arrays, again_cached = cached_vectors(tmp_path / f"v-{key}.npz", compute)
    assert (cached, again_cached, len(calls)) == (False, True, 1)
    assert np.array_equal(again_arrays[0], corpus) and np.array_equal(again_arrays[1], queries)
