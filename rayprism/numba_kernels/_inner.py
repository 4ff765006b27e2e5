"""Exact inner-product top-k over the rows of a matrix, float32 or int8 codes, on numba's threads.

A float32 scan here replaces numpy's matrix-vector product in a search: it uses every core without
OpenBLAS's threads, which keep spinning after each product and then slow the numba kernels that
follow it in the same search (MUVERA's encoding, MaxSim, a filter mask).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from rayprism.numba_kernels._checks import as_k, as_mask, as_matrix, same_width
from rayprism.numba_kernels._dot import dots
from rayprism.numba_kernels._topk import chunk_count, insert, merge

_QUERY_BLOCK = 256
_BUFFER_K = 256
"""Above this k, sorted buffers cost O(k) per insertion: score every row, then select in numpy."""
_SORTED_QUERY_BLOCK = 16
"""Queries scored at once on the large-k path (a float32 row of n scores each)."""


def dot_topk(
    matrix: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``matrix`` (float32[n, d]) with the largest inner product with each query
    (float32[m, d]).

    ``allowed`` (bool[n]) excludes rows that are False. Returns (ids int64[m, k], scores
    float32[m, k]), best first, equal scores in id order; when fewer than k rows qualify the
    rest are id -1 with score -inf.
    """
    matrix = as_matrix("matrix", matrix, np.float32)
    queries = as_matrix("queries", queries, np.float32)
    same_width("queries", queries, "matrix", matrix)
    return inner_topk(matrix, queries, np.zeros(len(queries), dtype=np.float32), as_k(k), as_mask(allowed, len(matrix)))


def inner_topk(rows: np.ndarray, queries: np.ndarray, bias: np.ndarray, k: int, allowed: np.ndarray | None):
    """Top-k of ``rows · query + bias[query]`` for checked arguments (rows float32 or int8)."""
    if k > _BUFFER_K:
        return _by_sorting(rows, queries, bias, k, allowed)
    chunks = chunk_count(len(rows), numba.get_num_threads())
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), _QUERY_BLOCK):
        block = slice(start, start + _QUERY_BLOCK)
        keys, found = _scan(rows, queries[block], bias[block], k, allowed, chunks)
        negated, ids[block] = merge(keys, found)
        scores[block] = -negated
    return ids, scores


def _by_sorting(rows, queries, bias, k, allowed):
    eligible = np.arange(len(rows)) if allowed is None else np.flatnonzero(allowed)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for start in range(0, len(queries), _SORTED_QUERY_BLOCK):
        block = slice(start, start + _SORTED_QUERY_BLOCK)
        every = _all_scores(rows, queries[block], bias[block])
        for offset, row_scores in enumerate(every[:, eligible]):
            best = np.lexsort((eligible, -row_scores))[:k]  # by score, then by id
            ids[start + offset, : len(best)] = eligible[best]
            scores[start + offset, : len(best)] = row_scores[best]
    return ids, scores


@njit(parallel=True, fastmath={"reassoc", "contract", "nsz"}, cache=True)
def _all_scores(rows, queries, bias):
    scores = np.empty((len(queries), len(rows)), dtype=np.float32)
    for row in prange(len(rows)):
        totals = np.empty(len(queries), dtype=np.float32)
        dots(queries, rows[row], totals)
        for query in range(len(queries)):
            scores[query, row] = totals[query] + bias[query]
    return scores


@njit(parallel=True, fastmath={"reassoc", "contract", "nsz"}, cache=True)
def _scan(rows, queries, bias, k, allowed, chunks):
    """Per-chunk top-k buffers of negated scores (smaller is better, as :mod:`._topk` wants).

    Each row is read once for all queries (four at a time, see :mod:`._dot`).
    """
    n = len(rows)
    m = len(queries)
    keys = np.full((chunks, m, k), np.inf, dtype=np.float32)
    ids = np.full((chunks, m, k), -1, dtype=np.int64)
    for chunk in prange(chunks):
        totals = np.empty(m, dtype=np.float32)
        worst = np.full(m, np.inf, dtype=np.float32)
        for row in range(chunk * n // chunks, (chunk + 1) * n // chunks):
            if allowed is not None and not allowed[row]:
                continue
            dots(queries, rows[row], totals)
            for query in range(m):
                key = -(totals[query] + bias[query])
                if key < worst[query]:
                    insert(keys[chunk, query], ids[chunk, query], key, row)
                    worst[query] = keys[chunk, query, k - 1]
    return keys, ids
