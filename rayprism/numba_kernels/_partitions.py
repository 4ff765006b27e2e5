"""Per-partition sums (or means) of token vectors, the inner loop of MUVERA's fixed
dimensional encodings (``rayprism.platform.codecs.muvera``)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from rayprism.numba_kernels._bits import popcount
from rayprism.numba_kernels._checks import as_offsets


def partition_means(
    partitions: np.ndarray, vectors: np.ndarray, offsets: np.ndarray, n_partitions: int, *, average: bool, fill_empty: bool
) -> np.ndarray:
    """float32[n_docs, reps, n_partitions, d]: for each set of tokens and repetition, the sum
    (``average``: the mean) of the tokens' vectors in each partition.

    ``partitions`` (int64[T, reps]) is each token's partition per repetition: the integer made
    of its sign bits, so the Hamming distance between a token and a partition is the popcount
    of their XOR. ``vectors`` is float32[T, reps, d] (or [T, 1, d]: the same vectors in every
    repetition); set i owns tokens
    ``offsets[i]:offsets[i + 1]``. With ``fill_empty``, a partition no token of a (non-empty)
    set fell in takes the vector of the set's token nearest to it in Hamming distance (the
    first such token on ties).
    """
    if partitions.ndim != 2 or partitions.dtype != np.int64:
        raise ValueError(f"partitions must be int64[T, reps], got {partitions.dtype}{list(partitions.shape)}")
    tokens, reps = partitions.shape
    if vectors.ndim != 3 or vectors.dtype != np.float32 or len(vectors) != tokens or vectors.shape[1] not in (1, reps):
        raise ValueError(f"vectors must be float32[{tokens}, {reps} or 1, d], got {vectors.dtype}{list(vectors.shape)}")
    offsets = as_offsets("offsets", offsets, tokens)
    if len(partitions) and (partitions.min() < 0 or partitions.max() >= n_partitions):
        raise ValueError(f"partitions must lie in [0, {n_partitions})")
    return _partition_means(
        np.ascontiguousarray(partitions), np.ascontiguousarray(vectors), offsets, n_partitions, average, fill_empty
    )


@njit(parallel=True, cache=True)
def _partition_means(partitions, vectors, offsets, n_partitions, average, fill_empty):
    reps = partitions.shape[1]
    d = vectors.shape[2]
    shared = vectors.shape[1] == 1
    out = np.zeros((len(offsets) - 1, reps, n_partitions, d), dtype=np.float32)
    for doc in prange(len(offsets) - 1):
        first, last = offsets[doc], offsets[doc + 1]
        counts = np.zeros(n_partitions, dtype=np.int64)
        for rep in range(reps):
            counts[:] = 0
            block = out[doc, rep]
            source = 0 if shared else rep
            for token in range(first, last):
                partition = partitions[token, rep]
                counts[partition] += 1
                for dim in range(d):
                    block[partition, dim] += vectors[token, source, dim]
            for partition in range(n_partitions):
                if counts[partition] > 0:
                    if average:
                        for dim in range(d):
                            block[partition, dim] /= counts[partition]
                elif fill_empty and last > first:
                    nearest, distance = first, popcount(partitions[first, rep] ^ partition)
                    for token in range(first + 1, last):
                        bits = popcount(partitions[token, rep] ^ partition)
                        if bits < distance:
                            nearest, distance = token, bits
                    for dim in range(d):
                        block[partition, dim] = vectors[nearest, source, dim]
    return out
