"""The one Encoder contract that serving, batch jobs and training all load.

An encoder works in stages so the caller can schedule them:

* ``prepare`` (pre): CPU-side decoding/tokenisation of raw inputs, one
  :class:`Prepared` per input with its cost in tokens. Cheap, runs per request,
  rejects bad input with :class:`~rayprism.platform.errors.InvalidInputError`.
* ``encode`` (core + post): one call over any number of prepared inputs from any
  number of requests; returns float32 vectors in input order. Backends sort by
  length and split into forward passes themselves.

Text is the first modality; image and audio encoders implement the same methods
over decoded pixels or waveforms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from rayprism.platform.errors import InvalidInputError, UnprocessableError

Modality = Literal["text", "image", "audio"]
ModelKind = Literal["embedder", "reranker"]

MAX_CHARS_PER_TOKEN = 100
"""No tokenizer makes one token of more than this many characters (WordPiece turns longer words into a
single unknown token), so a text is cut at ``max_input_tokens`` times this before tokenising: a 2 MB
string cannot give more than ``max_input_tokens`` useful tokens, and tokenising all of it costs time
and memory for nothing."""


def to_tokenise(text: str, max_tokens: int, truncate: bool) -> str:
    """What of ``text`` is worth tokenising: its first ``max_tokens`` × :data:`MAX_CHARS_PER_TOKEN` characters
    where it will be truncated anyway, all of it where truncation is refused (a refusal states its true length)."""
    return text[: max_tokens * MAX_CHARS_PER_TOKEN] if truncate else text


def check_fits(param: str, n_tokens: int, max_tokens: int, *, counted: str = "") -> None:
    """The rule for ``truncate: false`` (as TEI and Cohere take it): an input longer than the model reads is a
    400 naming it, its length and the limit, never cut silently. ``counted`` says what the length covers."""
    if n_tokens > max_tokens:
        raise InvalidInputError(f"{param}{counted} is {n_tokens:,} tokens; this model reads at most {max_tokens:,} "
                                '(send "truncate": true to cut it to fit)', param=param)


PromptRole = Literal["query", "document"]
_PROMPTS_BY_ROLE: dict[str, tuple[str, ...]] = {"query": ("query",), "document": ("document", "passage", "corpus")}
"""Prompt names a role takes, first present wins: sentence-transformers' ``encode_query``/``encode_document``."""


P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Prepared(Generic[P]):
    """One input after the pre stage: what the core stage consumes and what it costs. The payload's type is
    its backend's own (token ids, pixels, features...); only the backend that made it reads it."""

    payload: P
    n_tokens: int


@runtime_checkable
class Encoder(Protocol):
    modalities: frozenset[str]
    dimensions: int
    max_input_tokens: int
    prompts: Mapping[str, str]
    """Named prompts the model declares (name → text prepended to the input); empty if none."""

    def prepare(self, inputs: Sequence[Any], modality: Modality = "text", prompt_name: str | None = None, *,
                truncate: bool = True) -> list[Prepared]:
        """``truncate``: a text over ``max_input_tokens`` is cut to fit (``n_tokens`` counts what is kept);
        without it, it is refused (:func:`check_fits`). Media inputs over a model's limits are refused either way."""

    def encode(self, items: Sequence[Prepared]) -> np.ndarray: ...

    def warmup(self) -> None:
        """Run one small input through every stage: the first forward pass is slow, pay it before serving."""


@runtime_checkable
class Reranker(Protocol):
    """A cross-encoder: scores (query, document) pairs, in stages like an encoder's."""

    max_input_tokens: int
    """Tokens of a pair (query and document together) read; longer pairs are cut, the longer side first, or
    refused (``prepare_pairs``' ``truncate``)."""

    def prepare_pairs(self, query: str, documents: Sequence[str], *, truncate: bool = True) -> list[Prepared]:
        """``truncate`` as in :meth:`Encoder.prepare`, for each (query, document) pair."""

    def score(self, items: Sequence[Prepared]) -> np.ndarray:
        """float32 relevance of each pair, in input order (the model's activation applied: a probability
        for the usual one-label model, as ``CrossEncoder.predict`` gives it)."""

    def warmup(self) -> None: ...


def token_dimensions(encoder: Any) -> int | None:
    """The width of the per-token vectors ``encoder.encode_tokens`` gives (float32[t, width] per input, unit
    length, padding and special tokens removed: what multi-vector collections store); None if it gives none."""
    return getattr(encoder, "token_dimensions", None) if callable(getattr(encoder, "encode_tokens", None)) else None


@dataclass(frozen=True)
class Embeddings:
    """What a model runner answers for one request's inputs."""

    vectors: np.ndarray
    """float32, shape (n, dimensions), in input order."""
    token_counts: list[int]


def check_prompt_name(prompts: Mapping[str, str], prompt_name: str) -> str:
    """The prompt's text, or a 422 that lists the prompts this model has."""
    if prompt_name not in prompts:
        have = f"this model's prompts are {sorted(prompts)}" if prompts else "this model declares no prompts"
        raise UnprocessableError(f"prompt_name {prompt_name!r} is unknown; {have}", param="prompt_name")
    return prompts[prompt_name]


def prompt_for_role(prompts: Mapping[str, str], role: PromptRole) -> str | None:
    """The name of the prompt a search query or a stored document gets, if the model has one."""
    return next((name for name in _PROMPTS_BY_ROLE[role] if name in prompts), None)
