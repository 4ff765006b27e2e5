"""The one Encoder contract that serving, batch jobs and training all load.

An encoder works in stages so the caller can schedule them:

* ``prepare`` (pre): CPU-side decoding/tokenisation of raw inputs, one
  :class:`Prepared` per input with its cost in tokens. Cheap, runs per request,
  rejects bad input with :class:`~rayprism.platform.errors.InvalidInputError`.
* ``encode`` (core + post): one call over any number of prepared inputs from any
  number of requests; returns float32 vectors in input order. Backends sort by
  length and split into forward passes themselves.

Text is the first modality; image and audio encoders implement the same two
methods over decoded pixels or waveforms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

import numpy as np

Modality = Literal["text", "image", "audio"]


@dataclass(frozen=True, slots=True)
class Prepared:
    """One input after the pre stage: what the core stage consumes and what it costs."""

    payload: Any
    n_tokens: int


@runtime_checkable
class Encoder(Protocol):
    modalities: frozenset[str]
    dimensions: int
    max_input_tokens: int

    def prepare(self, inputs: Sequence[Any], modality: Modality = "text") -> list[Prepared]: ...

    def encode(self, items: Sequence[Prepared]) -> np.ndarray: ...


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray
    """float32, shape (n, dimensions), in input order."""
    token_counts: list[int]


def embed(encoder: Encoder, inputs: Sequence[Any], modality: Modality = "text") -> Embeddings:
    """Run all stages in this thread: for batch jobs and tests, where no scheduler sits between."""
    prepared = encoder.prepare(inputs, modality)
    return Embeddings(encoder.encode(prepared), [item.n_tokens for item in prepared])
