"""Exact Hamming top-k over packed binary codes: one pass over the database for all queries.

The database is read once per call (not once per query): each of the parallel chunks
walks its rows in order and compares every row with all queries, whose words sit
transposed (word-major) so the loop over queries vectorises into VPOPCNTQ. A row only
touches a query's top-k buffer when it beats that buffer's worst, which after the first
few thousand rows almost never happens.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from rayprism.numba_kernels._bits import popcount
from rayprism.numba_kernels._checks import as_k, as_mask, as_matrix, same_width
from rayprism.numba_kernels._topk import chunk_count, insert, merge

MISSING_DISTANCE = np.iinfo(np.int32).max
_QUERY_BLOCK = 256  # queries per scan: their words and distances stay in L1


def hamming_topk(
    db: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``db`` nearest each query in Hamming distance.

    ``db`` is uint8[n, b] and ``queries`` uint8[m, b] (packed bits, any b; widths that are
    not a multiple of 8 bytes are copied with zero padding). ``allowed`` (bool[n]) excludes
    rows that are False. Returns (ids int64[m, k], distances int32[m, k]), nearest first,
    equal distances in id order; when fewer than k rows qualify the rest are id -1 with
    distance ``MISSING_DISTANCE`` (the int32 maximum).
    """
    db = as_matrix("db", db, np.uint8)
    queries = as_matrix("queries", queries, np.uint8)
    same_width("queries", queries, "db", db)
    k = as_k(k)
    allowed = as_mask(allowed, len(db))
    words, query_words = _words(db), _words(queries)
    chunks = chunk_count(len(db), numba.get_num_threads())
    ids = np.empty((len(queries), k), dtype=np.int64)
    distances = np.empty((len(queries), k), dtype=np.int32)
    for start in range(0, len(queries), _QUERY_BLOCK):
        block = slice(start, start + _QUERY_BLOCK)
        keys, rows = _scan(words, np.ascontiguousarray(query_words[block].T), k, allowed, chunks)
        distances[block], ids[block] = merge(keys, rows)
    return ids, distances


def _words(codes: np.ndarray) -> np.ndarray:
    """uint64[n, ceil(b / 8)]: XOR and popcount ignore byte order, and zero padding adds no distance."""
    width = -(-codes.shape[1] // 8) * 8
    if width != codes.shape[1]:
        padded = np.zeros((len(codes), width), dtype=np.uint8)
        padded[:, : codes.shape[1]] = codes
        codes = padded
    return codes.view(np.uint64)


@njit(parallel=True, cache=True)
def _scan(db, query_words, k, allowed, chunks):
    """Per-chunk top-k buffers: keys int32[chunks, m, k], ids int64[chunks, m, k]."""
    n, width = db.shape
    m = query_words.shape[1]
    keys = np.full((chunks, m, k), MISSING_DISTANCE, dtype=np.int32)
    ids = np.full((chunks, m, k), -1, dtype=np.int64)
    whole = width - width % 4
    for chunk in prange(chunks):
        distance = np.zeros(m, dtype=np.int64)
        worst = np.full(m, MISSING_DISTANCE, dtype=np.int64)
        for row in range(chunk * n // chunks, (chunk + 1) * n // chunks):
            if allowed is not None and not allowed[row]:
                continue
            # Four words per pass: one store per query instead of four read-modify-writes.
            for word in range(0, whole, 4):
                w0, w1, w2, w3 = db[row, word], db[row, word + 1], db[row, word + 2], db[row, word + 3]
                q0, q1, q2, q3 = query_words[word], query_words[word + 1], query_words[word + 2], query_words[word + 3]
                for query in range(m):
                    bits = popcount(w0 ^ q0[query]) + popcount(w1 ^ q1[query])
                    bits += popcount(w2 ^ q2[query]) + popcount(w3 ^ q3[query])
                    distance[query] = bits if word == 0 else distance[query] + bits
            for word in range(whole, width):
                w, q = db[row, word], query_words[word]
                for query in range(m):
                    bits = popcount(w ^ q[query])
                    distance[query] = bits if word == 0 else distance[query] + bits
            better = False
            for query in range(m):
                better |= distance[query] < worst[query]
            if better:
                for query in range(m):
                    if distance[query] < worst[query]:
                        insert(keys[chunk, query], ids[chunk, query], distance[query], row)
                        worst[query] = keys[chunk, query, k - 1]
    return keys, ids
