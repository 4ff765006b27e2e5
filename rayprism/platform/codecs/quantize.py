"""int8 and binary codes, via sentence-transformers' ``quantize_embeddings``.

int8 maps each dimension's calibrated [min, max] onto 256 buckets; the ranges are
part of the output (without them the codes mean nothing). Binary keeps the sign
bits, packed eight to a byte in ``np.packbits`` order.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np

Precision = Literal["int8", "uint8", "binary", "ubinary"]
"""sentence-transformers' names: int8/uint8 take calibrated ranges; binary/ubinary are the sign bits packed
eight to a value, less 128 as int8 (``binary``) or as uint8 (``ubinary``)."""


def calibrate_int8(sample: np.ndarray) -> np.ndarray:
    """Per-dimension ranges, shape (2, dim): row 0 the minimum, row 1 the maximum."""
    if sample.ndim != 2 or len(sample) < 2:
        raise ValueError(f"int8 calibration needs at least 2 vectors, got shape {sample.shape}")
    return np.vstack((sample.min(axis=0), sample.max(axis=0))).astype(np.float32)


def quantize(vectors: np.ndarray, precision: Precision, ranges: np.ndarray | None = None) -> np.ndarray:
    """The one quantisation rule of rayprism. int8/uint8 need ``ranges``: without them
    ``quantize_embeddings`` would calibrate on ``vectors`` themselves, so codes would differ by batch."""
    from sentence_transformers.util.quantization import quantize_embeddings

    if precision.endswith("int8") and ranges is None:
        raise ValueError(f"{precision} codes need calibrated ranges")
    return quantize_embeddings(vectors, precision=precision, ranges=ranges)


def to_int8(vectors: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    return quantize(vectors, "int8", ranges)


def from_int8(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Bucket centres: within the calibrated range the error is at most half a bucket."""
    step = np.where(ranges[1] > ranges[0], (ranges[1] - ranges[0]) / 255, 1)
    return (ranges[0] + (codes.astype(np.float32) + 128 + 0.5) * step).astype(np.float32)


def to_binary(vectors: np.ndarray) -> np.ndarray:
    return quantize(vectors, "ubinary")


def ranges_to_json(ranges: np.ndarray) -> bytes:
    return json.dumps({"min": ranges[0].tolist(), "max": ranges[1].tolist()}).encode()


def ranges_from_json(data: bytes) -> np.ndarray:
    parsed = json.loads(data)
    return np.array([parsed["min"], parsed["max"]], dtype=np.float32)
