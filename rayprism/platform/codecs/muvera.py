"""MUVERA fixed dimensional encodings (FDEs): one vector per set of token vectors, such that
the inner product of a query's FDE with a document's approximates their Chamfer (MaxSim)
similarity, so a multi-vector corpus can be searched like a dense one and reranked exactly.

Dhulipala et al., "MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings" (2024);
Google's reference implementation is graph-mining's ``fixed_dimensional_encoding.cc``.
Each of ``r_reps`` repetitions cuts the space with ``k_sim`` Gaussian hyperplanes into
2^k_sim partitions. A token's partition is the integer made of its sign bits (first
hyperplane most significant), so the bits of partition p are p's binary digits and the
Hamming distance between a token and a partition is ``popcount(partition ^ p)``: no Gray
code, whose inverse the public Python port gets wrong for most partitions. Each partition's
block holds its tokens projected to ``d_proj`` dimensions by a random ±1/√d_proj matrix
(the identity when ``d_proj == dim``): summed for queries, averaged for documents. With
``fill_empty_partitions`` a document's empty partition takes its token nearest in Hamming
distance, so that each query token meets some document token in every repetition; query
blocks of empty partitions stay zero. ``d_final`` optionally count-sketches the
concatenation (each coordinate added, with a random sign, to one random output
coordinate, as the reference does), which keeps inner products unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from rayprism.numba_kernels import partition_means
from rayprism.platform.threads import one_blas_thread

_MAX_K_SIM = 16
_BATCH_BYTES = 64 << 20  # projected token vectors per batch: bounds memory for any corpus size


@dataclass(frozen=True)
class FDEConfig:
    """How to encode: the same config (seed included) must encode queries and documents."""

    dim: int
    k_sim: int = 5
    d_proj: int = 16
    r_reps: int = 20
    seed: int = 0
    fill_empty_partitions: bool = True
    d_final: int | None = None

    def __post_init__(self):
        for name in ("dim", "d_proj", "r_reps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.k_sim, int) or not 0 <= self.k_sim <= _MAX_K_SIM:
            raise ValueError(f"k_sim must be an integer in [0, {_MAX_K_SIM}], got {self.k_sim!r}")
        if self.d_final is not None and (not isinstance(self.d_final, int) or self.d_final < 1):
            raise ValueError(f"d_final must be a positive integer or None, got {self.d_final!r}")

    @property
    def partitions(self) -> int:
        return 1 << self.k_sim

    @property
    def output_dim(self) -> int:
        """2^k_sim · d_proj · r_reps, or d_final."""
        return self.d_final or self.partitions * self.d_proj * self.r_reps


class _Randomness(NamedTuple):
    planes: np.ndarray  # float32[dim, r_reps * k_sim]: repetition r's hyperplanes in columns r*k:(r+1)*k
    projections: np.ndarray | None  # float32[dim, r_reps * d_proj], None for the identity
    sketch_index: np.ndarray | None  # int64[2^k_sim * d_proj * r_reps]: each coordinate's output coordinate
    sketch_sign: np.ndarray | None  # float32[...]: and its sign


@lru_cache(maxsize=16)
def _randomness(cfg: FDEConfig) -> _Randomness:
    """Drawn from independent streams, so partitions depend only on (seed, dim, k_sim, r_reps)."""
    planes_seed, projection_seed, sketch_seed = np.random.SeedSequence(cfg.seed).spawn(3)
    planes = np.random.default_rng(planes_seed).standard_normal((cfg.dim, cfg.r_reps * cfg.k_sim), dtype=np.float32)
    projections = None
    if cfg.d_proj != cfg.dim:
        signs = np.random.default_rng(projection_seed).integers(0, 2, (cfg.dim, cfg.r_reps * cfg.d_proj))
        projections = ((2 * signs - 1) / np.sqrt(cfg.d_proj)).astype(np.float32)
    sketch_index = sketch_sign = None
    if cfg.d_final is not None:
        rng = np.random.default_rng(sketch_seed)
        width = cfg.partitions * cfg.d_proj * cfg.r_reps
        sketch_index = rng.integers(0, cfg.d_final, width)
        sketch_sign = (2 * rng.integers(0, 2, width) - 1).astype(np.float32)
    return _Randomness(planes, projections, sketch_index, sketch_sign)


def partition_index(tokens: np.ndarray, cfg: FDEConfig) -> np.ndarray:
    """int64[t, r_reps]: each token's partition in each repetition, the integer whose bit
    ``k_sim - 1 - i`` is 1 where the token is on the positive side of hyperplane i."""
    tokens = _check_tokens(tokens, cfg)
    above = (tokens @ _randomness(cfg).planes > 0).reshape(len(tokens), cfg.r_reps, cfg.k_sim)
    index = np.zeros((len(tokens), cfg.r_reps), dtype=np.int64)
    for bit in range(cfg.k_sim):
        index = (index << 1) | above[:, :, bit]
    return index


def encode_queries(tokens: np.ndarray, offsets: np.ndarray, cfg: FDEConfig) -> np.ndarray:
    """float32[n, output_dim] for n queries, query i being tokens[offsets[i]:offsets[i + 1]]."""
    return _encode(tokens, offsets, cfg, document=False)


def encode_documents(tokens: np.ndarray, offsets: np.ndarray, cfg: FDEConfig) -> np.ndarray:
    """float32[n, output_dim] for n documents, document i being tokens[offsets[i]:offsets[i + 1]]."""
    return _encode(tokens, offsets, cfg, document=True)


def encode_query(tokens: np.ndarray, cfg: FDEConfig) -> np.ndarray:
    """float32[output_dim] for one query's tokens (float32[t, dim], L2-normalised)."""
    with one_blas_thread():  # a search's step: see rayprism.platform.threads
        return encode_queries(tokens, np.array([0, len(tokens)]), cfg)[0]


def encode_document(tokens: np.ndarray, cfg: FDEConfig) -> np.ndarray:
    """float32[output_dim] for one document's tokens (float32[t, dim], L2-normalised)."""
    return encode_documents(tokens, np.array([0, len(tokens)]), cfg)[0]


def _encode(tokens: np.ndarray, offsets: np.ndarray, cfg: FDEConfig, *, document: bool) -> np.ndarray:
    tokens = _check_tokens(tokens, cfg)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(tokens):
        raise ValueError(f"offsets must run from 0 to the number of tokens ({len(tokens)})")
    if np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be non-decreasing")
    randomness = _randomness(cfg)
    out = np.empty((len(offsets) - 1, cfg.output_dim), dtype=np.float32)
    for first, last in _batches(offsets, cfg):
        start, stop = offsets[first], offsets[last]
        batch = tokens[start:stop]
        if randomness.projections is None:
            projected = batch[:, None, :]
        else:
            projected = (batch @ randomness.projections).reshape(len(batch), cfg.r_reps, cfg.d_proj)
        blocks = partition_means(
            partition_index(batch, cfg), projected, offsets[first : last + 1] - start, cfg.partitions,
            average=document, fill_empty=document and cfg.fill_empty_partitions,
        ).reshape(last - first, -1)
        out[first:last] = blocks if cfg.d_final is None else _count_sketch(blocks, randomness, cfg.d_final)
    return out


def _batches(offsets: np.ndarray, cfg: FDEConfig):
    """(first, last) document ranges whose projected tokens, and whose blocks before a final projection,
    take about _BATCH_BYTES each."""
    tokens_per_batch = max(1, _BATCH_BYTES // (4 * cfg.r_reps * cfg.d_proj))
    documents_per_batch = max(1, _BATCH_BYTES // (4 * cfg.partitions * cfg.d_proj * cfg.r_reps))
    first = 0
    while first < len(offsets) - 1:
        last = max(first + 1, int(np.searchsorted(offsets, offsets[first] + tokens_per_batch, side="right")) - 1)
        last = min(last, len(offsets) - 1, first + documents_per_batch)
        yield first, last
        first = last


def _count_sketch(blocks: np.ndarray, randomness: _Randomness, d_final: int) -> np.ndarray:
    order = np.argsort(randomness.sketch_index, kind="stable")
    targets, starts = np.unique(randomness.sketch_index[order], return_index=True)
    out = np.zeros((len(blocks), d_final), dtype=np.float32)
    out[:, targets] = np.add.reduceat(blocks[:, order] * randomness.sketch_sign[order], starts, axis=1)
    return out


def _check_tokens(tokens: np.ndarray, cfg: FDEConfig) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != cfg.dim or tokens.dtype != np.float32:
        raise ValueError(f"tokens must be float32[t, {cfg.dim}], got {tokens.dtype}{list(tokens.shape)}")
    return np.ascontiguousarray(tokens)
