"""Argument checks shared by the kernels: they fail in Python, naming the argument, before
numba sees a shape or dtype it would reject with a typing error (or, worse, accept)."""

from __future__ import annotations

import operator

import numpy as np


def as_matrix(name: str, value, dtype) -> np.ndarray:
    """``value`` as a C-contiguous 2-D array of exactly ``dtype`` (no silent casts)."""
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {array.shape}")
    if array.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)}, got {array.dtype}")
    return np.ascontiguousarray(array)


def as_vector(name: str, value, dtype, length: int | None = None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    if array.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)}, got {array.dtype}")
    if length is not None and len(array) != length:
        raise ValueError(f"{name} must have length {length}, got {len(array)}")
    return np.ascontiguousarray(array)


def as_offsets(name: str, value, total: int) -> np.ndarray:
    """int64 offsets of sets stored back to back: set i is rows offsets[i]:offsets[i + 1]."""
    offsets = as_vector(name, value, np.int64)
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{name} must be non-decreasing from 0 to {total} (the number of rows), got {offsets}")
    return offsets


def as_mask(allowed, rows: int) -> np.ndarray | None:
    """The optional ``allowed`` row mask: None, or bool[rows]."""
    return None if allowed is None else as_vector("allowed", allowed, np.bool_, rows)


def as_k(k) -> int:
    try:
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"k must be an integer, got {type(k).__name__}") from None
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return k


def same_width(name: str, array: np.ndarray, other_name: str, other: np.ndarray) -> None:
    if array.shape[1] != other.shape[1]:
        raise ValueError(
            f"{name} has {array.shape[1]} columns but {other_name} has {other.shape[1]}; they must match"
        )
