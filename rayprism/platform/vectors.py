"""Unit-length rows: how every cosine in rayprism is taken (search routes, the bridge, training's evaluation)."""

from __future__ import annotations

from typing import Any

import numpy as np


def normalised(vectors: Any, dtype: Any = np.float32) -> np.ndarray:
    """Rows of ``vectors`` (as ``dtype``) scaled to unit length; zero rows stay zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=dtype)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
