"""Inner-product top-k over int8 codes, scored as if against their dequantised vectors.

rayprism's int8 codec (sentence-transformers ``quantize_embeddings`` with calibrated
``ranges``) maps each dimension's [min, max] onto 256 buckets, and
``rayprism.platform.codecs.quantize.from_int8`` reads code c back as the bucket centre
``min + (c + 128.5) * step`` with ``step = (max - min) / 255`` (1 where max == min). That is
an affine map, so ``q · centre(c) = q · (min + 128.5 * step) + (q * step) · c``: the kernel
folds the step into the query once and never materialises a float matrix.
"""

from __future__ import annotations

import numpy as np

from rayprism.numba_kernels._checks import as_k, as_mask, as_matrix, same_width
from rayprism.numba_kernels._inner import inner_topk


def int8_dot_topk(
    codes: np.ndarray, ranges: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``codes`` (int8[n, d]) with the largest inner product with each query
    (float32[m, d]), scoring each row as its bucket centres under ``ranges`` (float32[2, d]:
    row 0 the minimum, row 1 the maximum, as the int8 codec calibrates them).

    ``allowed`` (bool[n]) excludes rows that are False. Returns (ids int64[m, k], scores
    float32[m, k]), best first, equal scores in id order; when fewer than k rows qualify the
    rest are id -1 with score -inf.
    """
    codes = as_matrix("codes", codes, np.int8)
    ranges = as_matrix("ranges", ranges, np.float32)
    queries = as_matrix("queries", queries, np.float32)
    if ranges.shape != (2, codes.shape[1]):
        raise ValueError(f"ranges must have shape (2, {codes.shape[1]}), got {ranges.shape}")
    same_width("queries", queries, "codes", codes)
    k = as_k(k)
    allowed = as_mask(allowed, len(codes))
    low, high = ranges
    step = np.where(high > low, (high - low) / 255, 1).astype(np.float32)
    scaled = queries * step
    bias = (queries.astype(np.float64) @ (low + 128.5 * step).astype(np.float64)).astype(np.float32)
    return inner_topk(codes, scaled, bias, k, allowed)
