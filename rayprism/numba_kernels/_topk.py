"""Best-k buffers shared by the top-k kernels.

Keys are "smaller is better" (a Hamming distance, a negated score). Each chunk of rows
keeps its own sorted buffer per query; a row enters only if its key is strictly below the
buffer's worst, so among equal keys the lower row id stays (rows are scanned in id order).
:func:`merge` folds the chunks' buffers, in chunk order, into one per query.
"""

from __future__ import annotations

from numba import njit, prange


@njit(inline="always", cache=True)
def insert(keys, ids, key, row):
    """Put (key, row) into the sorted buffer, after every entry with a key <= ``key``."""
    slot = len(keys) - 1
    while slot > 0 and keys[slot - 1] > key:
        keys[slot] = keys[slot - 1]
        ids[slot] = ids[slot - 1]
        slot -= 1
    keys[slot] = key
    ids[slot] = row


@njit(parallel=True, cache=True)
def merge(keys, ids):
    """(keys[m, k], ids[m, k]) from per-chunk buffers keys[chunks, m, k] (empty slots: id -1)."""
    chunks, m, k = keys.shape
    best_keys = keys[0].copy()
    best_ids = ids[0].copy()
    for query in prange(m):
        for chunk in range(1, chunks):
            for slot in range(k):
                key = keys[chunk, query, slot]
                if ids[chunk, query, slot] < 0 or key >= best_keys[query, k - 1]:
                    break
                insert(best_keys[query], best_ids[query], key, ids[chunk, query, slot])
    return best_keys, best_ids


def chunk_count(rows: int, threads: int) -> int:
    """Chunks per scan: eight per thread (measured best on 1M rows, 2 cores), none under 1,024 rows."""
    return max(1, min(8 * threads, rows // 1024))

