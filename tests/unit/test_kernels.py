"""The numba kernels against plain numpy references on random data: ties, k > n, empty
inputs, all-false masks, one and many queries, byte widths that are not a multiple of 8."""

from __future__ import annotations

import numpy as np
import pytest

from rayprism.numba_kernels import (
    MISSING_DISTANCE,
    Cmp,
    ColumnArrays,
    FilterProgram,
    Op,
    dot_topk,
    hamming_topk,
    int8_dot_topk,
    mask_from_columns,
    maxsim,
    pack_bits,
    partition_means,
)
from rayprism.platform.codecs.quantize import calibrate_int8, from_int8, to_int8

rng = np.random.default_rng(7)


def reference_topk(keys: np.ndarray, k: int, allowed: np.ndarray | None, missing) -> tuple[np.ndarray, np.ndarray]:
    """Smallest keys first, ties by lower id, padded with (-1, missing)."""
    m, n = keys.shape
    ids = np.full((m, k), -1, dtype=np.int64)
    out = np.full((m, k), missing, dtype=keys.dtype)
    rows = np.arange(n) if allowed is None else np.flatnonzero(allowed)
    for query in range(m):
        order = rows[np.lexsort((rows, keys[query, rows]))][:k]
        ids[query, : len(order)] = order
        out[query, : len(order)] = keys[query, order]
    return ids, out


def hamming_reference(db, queries, k, allowed=None):
    distances = np.unpackbits(db[None, :, :] ^ queries[:, None, :], axis=2).sum(axis=2, dtype=np.int32)
    return reference_topk(distances.reshape(len(queries), len(db)), k, allowed, MISSING_DISTANCE)


def test_pack_bits_matches_numpy_packbits():
    x = rng.standard_normal((50, 72)).astype(np.float32)
    x[x < -1] = 0  # zero is not positive
    np.testing.assert_array_equal(pack_bits(x), np.packbits(x > 0, axis=1))
    assert pack_bits(np.zeros((0, 16), np.float32)).shape == (0, 2)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((3, 12), np.float32), "multiple of 8"),
        (np.zeros((3, 16), np.float64), "dtype float32"),
        (np.zeros(16, np.float32), "2-D"),
    ],
)
def test_pack_bits_names_the_bad_argument(x, message):
    with pytest.raises(ValueError, match=message) as error:
        pack_bits(x)
    assert "x " in str(error.value)


@pytest.mark.parametrize("width", [32, 3, 12, 1])
@pytest.mark.parametrize("m", [1, 7])
def test_hamming_topk_matches_numpy(width, m):
    # 5,000 rows: several parallel chunks, so their buffers are merged; 1-byte codes tie a lot.
    db = rng.integers(0, 256, (5000, width), dtype=np.uint8)
    queries = rng.integers(0, 256, (m, width), dtype=np.uint8)
    allowed = rng.random(len(db)) < 0.3
    for mask in (None, allowed):
        ids, distances = hamming_topk(db, queries, 25, mask)
        expected_ids, expected_distances = hamming_reference(db, queries, 25, mask)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(distances, expected_distances)
        assert ids.dtype == np.int64 and distances.dtype == np.int32


def test_hamming_topk_fills_when_fewer_rows_qualify():
    db = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (3, 8), dtype=np.uint8)
    ids, distances = hamming_topk(db, queries, 10)
    np.testing.assert_array_equal((ids, distances), hamming_reference(db, queries, 10))
    assert (ids[:, 6:] == -1).all() and (distances[:, 6:] == MISSING_DISTANCE).all()
    ids, distances = hamming_topk(db, queries, 4, np.zeros(6, bool))
    assert (ids == -1).all() and (distances == MISSING_DISTANCE).all()


def test_hamming_topk_empty_inputs():
    ids, distances = hamming_topk(np.zeros((0, 8), np.uint8), np.zeros((2, 8), np.uint8), 3)
    assert ids.shape == (2, 3) and (ids == -1).all() and (distances == MISSING_DISTANCE).all()
    ids, distances = hamming_topk(np.zeros((5, 8), np.uint8), np.zeros((0, 8), np.uint8), 3)
    assert ids.shape == distances.shape == (0, 3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((np.zeros((4, 8), np.uint8), np.zeros((2, 16), np.uint8), 3), "queries has 16 columns but db has 8"),
        ((np.zeros((4, 8), np.int8), np.zeros((2, 8), np.uint8), 3), "db must have dtype uint8"),
        ((np.zeros((4, 8), np.uint8), np.zeros((2, 8), np.uint8), 0), "k must be at least 1"),
        ((np.zeros((4, 8), np.uint8), np.zeros((2, 8), np.uint8), 3, np.ones(5, bool)), "allowed must have length 4"),
        ((np.zeros((4, 8), np.uint8), np.zeros((2, 8), np.uint8), 3, np.ones(4, np.int8)), "allowed must have dtype bool"),
    ],
)
def test_hamming_topk_names_the_bad_argument(arguments, message):
    with pytest.raises(ValueError, match=message):
        hamming_topk(*arguments)


def int8_corpus(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    ranges = calibrate_int8(vectors[: max(2, n // 2)])  # the rest falls partly outside: clipped codes
    ranges[:, 0] = 0.25  # a constant dimension: the codec's step is 1 there
    return to_int8(vectors, ranges), ranges


@pytest.mark.parametrize("m", [1, 6])
def test_int8_dot_topk_scores_the_codecs_bucket_centres(m):
    codes, ranges = int8_corpus(3000, 48)
    queries = rng.standard_normal((m, 48)).astype(np.float32)
    allowed = rng.random(len(codes)) < 0.5
    exact = queries @ from_int8(codes, ranges).T
    for mask in (None, allowed):
        ids, scores = int8_dot_topk(codes, ranges, queries, 20, mask)
        expected_ids, negated = reference_topk(-exact, 20, mask, np.inf)
        np.testing.assert_allclose(scores, -negated, rtol=1e-5, atol=1e-4)
        # Scores this close can swap under float rounding; the rows found must score as the best do.
        np.testing.assert_allclose(np.take_along_axis(exact, ids, axis=1), -negated, rtol=1e-5, atol=1e-4)


def test_int8_dot_topk_breaks_ties_by_lower_id_and_fills():
    codes, ranges = int8_corpus(3, 16)
    repeated = codes[rng.integers(0, 3, 2000)]  # every row is one of three patterns: exact ties
    queries = rng.standard_normal((2, 16)).astype(np.float32)
    exact = queries @ from_int8(repeated, ranges).T
    ids, _ = int8_dot_topk(repeated, ranges, queries, 30)
    np.testing.assert_array_equal(ids, reference_topk(-exact, 30, None, np.inf)[0])
    ids, scores = int8_dot_topk(codes, ranges, queries, 5)
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    ids, scores = int8_dot_topk(codes, ranges, queries, 2, np.zeros(3, bool))
    assert (ids == -1).all() and np.isneginf(scores).all()
    ids, scores = int8_dot_topk(codes[:0], ranges, queries[:0], 2)
    assert ids.shape == scores.shape == (0, 2)


@pytest.mark.parametrize("k", [20, 300])  # sorted buffers, and scoring every row then selecting (k > 256)
@pytest.mark.parametrize("m", [1, 6])
def test_dot_topk_matches_numpy(m, k):
    matrix = rng.standard_normal((3000, 48)).astype(np.float32)
    queries = rng.standard_normal((m, 48)).astype(np.float32)
    allowed = rng.random(len(matrix)) < 0.5
    exact = queries.astype(np.float64) @ matrix.T.astype(np.float64)
    for mask in (None, allowed):
        ids, scores = dot_topk(matrix, queries, k, mask)
        _, negated = reference_topk(-exact, k, mask, np.inf)
        np.testing.assert_allclose(scores, -negated, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(np.take_along_axis(exact, ids, axis=1), -negated, rtol=1e-5, atol=1e-4)
        if mask is not None:
            assert mask[ids].all()


@pytest.mark.parametrize("k", [30, 400])
def test_dot_topk_breaks_ties_by_lower_id_and_fills(k):
    patterns = rng.integers(-3, 4, (3, 16)).astype(np.float32)  # small integers: exact sums, exact ties
    repeated = patterns[rng.integers(0, 3, 2000)]
    queries = rng.integers(-3, 4, (2, 16)).astype(np.float32)
    ids, _ = dot_topk(repeated, queries, k)
    np.testing.assert_array_equal(ids, reference_topk(-(queries @ repeated.T), k, None, np.inf)[0])
    ids, scores = dot_topk(patterns, queries, k)
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    ids, scores = dot_topk(patterns, queries, k, np.zeros(3, bool))
    assert (ids == -1).all() and np.isneginf(scores).all()
    ids, scores = dot_topk(patterns[:0], queries[:0], k)
    assert ids.shape == scores.shape == (0, k)


def test_int8_dot_topk_checks_ranges():
    codes, ranges = int8_corpus(10, 16)
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 16\)"):
        int8_dot_topk(codes, ranges[:, :8], np.zeros((1, 16), np.float32), 3)
    with pytest.raises(ValueError, match="queries must have dtype float32"):
        int8_dot_topk(codes, ranges, np.zeros((1, 16)), 3)


def maxsim_reference(query_tokens, doc_tokens, offsets):
    similarities = query_tokens @ doc_tokens.T
    return np.array(
        [similarities[:, a:b].max(axis=1).sum() if b > a else -np.inf for a, b in zip(offsets[:-1], offsets[1:])]
    )


@pytest.mark.parametrize("q", [1, 5])
def test_maxsim_matches_numpy(q):
    lengths = rng.integers(0, 9, 300)
    lengths[:3] = 0  # documents without tokens
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    doc_tokens = rng.standard_normal((offsets[-1], 24)).astype(np.float32)
    query_tokens = rng.standard_normal((q, 24)).astype(np.float32)
    expected = maxsim_reference(query_tokens, doc_tokens, offsets)
    np.testing.assert_allclose(maxsim(query_tokens, doc_tokens, offsets), expected, rtol=1e-5, atol=1e-5)
    docs = np.array([299, 4, 0, 4], dtype=np.int64)
    np.testing.assert_allclose(maxsim(query_tokens, doc_tokens, offsets, docs), expected[docs], rtol=1e-5, atol=1e-5)
    assert (maxsim(query_tokens[:0], doc_tokens, offsets) == 0).all()


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        (np.array([0, 2, 1, 4]), "doc_offsets must be non-decreasing from 0 to 4"),
        (np.array([0, 2, 3]), "doc_offsets must be non-decreasing from 0 to 4"),
        (np.array([0, 2, 4], dtype=np.int32), "doc_offsets must have dtype int64"),
    ],
)
def test_maxsim_checks_offsets(offsets, message):
    with pytest.raises(ValueError, match=message):
        maxsim(np.zeros((1, 4), np.float32), np.zeros((4, 4), np.float32), offsets.astype(offsets.dtype))


def partition_means_reference(partitions, vectors, offsets, n_partitions, average):
    reps = partitions.shape[1]
    expected = np.zeros((len(offsets) - 1, reps, n_partitions, vectors.shape[2]), dtype=np.float32)
    for doc, (first, last) in enumerate(zip(offsets[:-1], offsets[1:])):
        for rep in range(reps):
            for partition in range(n_partitions):
                inside = vectors[first:last, rep][partitions[first:last, rep] == partition]
                if len(inside):
                    expected[doc, rep, partition] = inside.mean(axis=0) if average else inside.sum(axis=0)
    return expected


@pytest.mark.parametrize("average", [False, True])
def test_partition_means_matches_numpy(average):
    lengths = rng.integers(0, 30, 40)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    partitions = rng.integers(0, 8, (offsets[-1], 3))
    vectors = rng.standard_normal((offsets[-1], 3, 5)).astype(np.float32)
    np.testing.assert_allclose(
        partition_means(partitions, vectors, offsets, 8, average=average, fill_empty=False),
        partition_means_reference(partitions, vectors, offsets, 8, average), rtol=1e-5, atol=1e-6,
    )
    shared = vectors[:, :1]  # the same vectors in every repetition
    np.testing.assert_allclose(
        partition_means(partitions, shared, offsets, 8, average=average, fill_empty=False),
        partition_means_reference(partitions, np.repeat(shared, 3, axis=1), offsets, 8, average), rtol=1e-5, atol=1e-6,
    )


def test_partition_means_checks_partitions():
    vectors = np.zeros((3, 1, 4), np.float32)
    with pytest.raises(ValueError, match=r"partitions must lie in \[0, 4\)"):
        partition_means(np.array([[0], [4], [1]]), vectors, np.array([0, 3]), 4, average=True, fill_empty=True)
    with pytest.raises(ValueError, match="offsets must be non-decreasing from 0 to 3"):
        partition_means(np.zeros((3, 1), np.int64), vectors, np.array([0, 2]), 4, average=True, fill_empty=True)


def kleene_leaf(valid, hit):
    return valid & hit, valid & ~hit


def test_mask_from_columns_follows_three_valued_logic():
    # not (a > 3 and x < 0.5) or s in {1, 4} (definite), over 10,000 rows with nulls
    n = 10_000
    ints = np.stack([rng.integers(0, 8, n), rng.integers(0, 6, n)])
    int_valid = rng.random((2, n)) > 0.2
    floats = rng.random((1, n))
    float_valid = rng.random((1, n)) > 0.2
    columns = ColumnArrays(ints, int_valid, floats, float_valid, np.array([0, 6]))
    table = np.array([False, True, False, False, True, False])
    ops = np.array([
        [Op.INT_CMP, 0, Cmp.GT, 0, 1],
        [Op.FLOAT_CMP, 0, Cmp.LT, 0, 1],
        [Op.AND, 0, 0, 0, 0],
        [Op.NOT, 0, 0, 0, 0],
        [Op.LOOKUP, 1, 0, 0, 6],
        [Op.DEFINITE, 0, 0, 0, 0],
        [Op.OR, 0, 0, 0, 0],
    ])
    program = FilterProgram(ops, np.array([3]), np.array([0.5]), table, 2)
    a_true, a_false = kleene_leaf(int_valid[0], ints[0] > 3)
    x_true, x_false = kleene_leaf(float_valid[0], floats[0] < 0.5)
    # not (p and q): true exactly where (p and q) is definitely false
    both_false = a_false | x_false
    in_true = int_valid[1] & table[ints[1]]
    np.testing.assert_array_equal(mask_from_columns(program, columns), both_false | in_true)
    stale = ColumnArrays(ints, int_valid, floats, float_valid, np.array([0, 7]))
    with pytest.raises(ValueError, match="compile it again"):
        mask_from_columns(program, stale)
