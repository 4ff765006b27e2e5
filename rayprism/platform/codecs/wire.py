"""Vectors on the wire as base64 of little-endian float32: OpenAI's ``encoding_format: base64``.

A sixth of the bytes of JSON floats and no float parsing: what the embeddings API returns
when asked, and how batch jobs send precomputed vectors to a running service.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np


def to_base64(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector).astype("<f4", copy=False).tobytes()).decode("ascii")


def from_base64(text: str) -> np.ndarray:
    """float32 values; ValueError if ``text`` is not base64 of whole float32 values."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("is not valid base64") from None
    if len(raw) % 4:
        raise ValueError("does not hold whole float32 values")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)
