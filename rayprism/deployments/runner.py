"""One served model: loads in the background, then embeds through its batcher."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from rayprism.deployments.batcher import DynamicBatcher
from rayprism.deployments.metrics import ServiceMetrics
from rayprism.platform.config import ModelConfig
from rayprism.platform.errors import InvalidInputError, NotReadyError, RayprismError
from rayprism.platform.models.base import Embeddings, Encoder, Modality, Prepared, Reranker, token_dimensions
from rayprism.platform.models.registry import load_encoder

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class ItemErrors:
    """Why items were refused, by their position in the batch."""

    errors: dict[int, InvalidInputError]


@dataclass(frozen=True)
class RerankScores:
    scores: np.ndarray
    """float32 relevance of each document to the query, in input order."""
    token_counts: list[int]
    """Tokens of each (query, document) pair."""

    def best_first(self, n: int | None = None) -> list[int]:
        """Positions of the ``n`` best scores (all if None), best first; ties keep input order."""
        return np.argsort(-self.scores, kind="stable")[:n].tolist()


@dataclass(frozen=True)
class TokenEmbeddings:
    tokens: list[np.ndarray]
    """float32[t, token_dimensions] per input, in input order."""
    token_counts: list[int]


def _as_object_array(matrices: list[np.ndarray]) -> np.ndarray:
    """Token matrices as one array the batcher can slice and concatenate like vectors."""
    batch = np.empty(len(matrices), dtype=object)
    for index, matrix in enumerate(matrices):  # not batch[:] = ...: numpy would broadcast same-shaped matrices
        batch[index] = matrix
    return batch


# Requests with more inputs than this are tokenised off the event loop.
INLINE_PREPARE_MAX_INPUTS = 16


class ModelRunner:
    def __init__(self, config: ModelConfig, metrics: ServiceMetrics, *, num_cpus: float | None = None):
        self.config = config
        self.name = config.name
        self._metrics = metrics
        self._num_cpus = num_cpus
        self._encoder: Encoder | Reranker | None = None
        self._batcher: DynamicBatcher | None = None
        self._token_batcher: DynamicBatcher | None = None
        self.load_error: str | None = None

    @property
    def state(self) -> str:
        if self._encoder is not None:
            return "ready"
        return "failed" if self.load_error else "loading"

    @property
    def encoder(self) -> Encoder | Reranker:
        if self._encoder is None:
            detail = f"failed to load: {self.load_error}" if self.load_error else "is still loading"
            raise NotReadyError(f"model {self.name!r} {detail}")
        return self._encoder

    def load(self) -> None:
        """Blocking; run in a thread. Records the failure instead of raising, for /health to report."""
        try:
            encoder = load_encoder(self.config, num_cpus=self._num_cpus)
            encoder.warmup()
        except Exception as error:
            logger.exception("loading model %r failed", self.name)
            self.load_error = str(error) if isinstance(error, RayprismError) else f"{type(error).__name__}: {error}"
            return
        self._batcher = self._new_batcher(encoder.score if self.config.kind == "reranker" else encoder.encode)
        if token_dimensions(encoder) is not None:  # token vectors batch apart: a batch gives one kind of output
            self._token_batcher = self._new_batcher(lambda items: _as_object_array(encoder.encode_tokens(items)))
        self._encoder = encoder
        self._metrics.model_ready(self.name).set(1)

    def _new_batcher(self, run_batch) -> DynamicBatcher:
        return DynamicBatcher(
            run_batch,
            self.config.batching,
            name=self.name,
            on_batch=lambda inputs, tokens, seconds: self._metrics.observe_batch(self.name, inputs, tokens, seconds),
            on_wait=self._metrics.queue_wait(self.name).observe,
        )

    @property
    def queued_inputs(self) -> int:
        return sum(batcher.queued_inputs for batcher in (self._batcher, self._token_batcher) if batcher)

    @property
    def gives_tokens(self) -> bool:
        """Whether the model gives per-token vectors (:meth:`embed_tokens`), as multi-vector collections need."""
        return self._token_batcher is not None

    async def embed(self, inputs: Sequence[Any], modality: Modality = "text", prompt_name: str | None = None, *,
                    truncate: bool = True) -> Embeddings:
        """``truncate``: a text over the model's limit is cut to fit, else refused (``Encoder.prepare``)."""
        return await self.embed_prepared(await self.prepare(inputs, modality, prompt_name, truncate=truncate))

    async def prepare(self, inputs: Sequence[Any], modality: Modality = "text", prompt_name: str | None = None, *,
                      truncate: bool = True):
        return await self._prepared_for(self._batcher, inputs, modality, prompt_name, truncate)

    async def _prepared_for(self, batcher: DynamicBatcher, inputs: Sequence[Any], modality: Modality,
                            prompt_name: str | None, truncate: bool = True) -> list[Prepared]:
        in_thread = modality != "text" or len(inputs) > INLINE_PREPARE_MAX_INPUTS
        prepare = partial(self.encoder.prepare, truncate=truncate)
        return await self._admitted(batcher, len(inputs), in_thread, prepare, inputs, modality, prompt_name)

    @staticmethod
    async def _admitted(batcher: DynamicBatcher, count: int, in_thread: bool,
                        prepare: Callable[..., list[Prepared]], *args) -> list[Prepared]:
        """``count`` inputs admitted to ``batcher``'s queue (a 429 must cost nothing: refuse before tokenising
        or decoding), then ``prepare(*args)``: in a thread for media and long requests, so the event loop
        keeps answering."""
        batcher.check_capacity(count)
        return await asyncio.to_thread(prepare, *args) if in_thread else prepare(*args)

    async def rerank(self, query: str, documents: Sequence[str], *, truncate: bool = True) -> RerankScores:
        """Each document's relevance to ``query``, the pairs batched with other requests' pairs; ``truncate``
        as in :meth:`embed`, for each pair."""
        scorer: Reranker = self.encoder
        in_thread = len(documents) > INLINE_PREPARE_MAX_INPUTS
        prepared = await self._admitted(self._batcher, len(documents), in_thread,
                                        partial(scorer.prepare_pairs, truncate=truncate), query, documents)
        return RerankScores(await self._batcher.submit(prepared), self._counted(prepared))

    async def ready(self) -> None:
        """Nothing to wait for: the model loads with the replica (see :class:`RemoteRunner`)."""

    async def embed_each(self, inputs: Sequence[Any], modality: Modality) -> Embeddings | ItemErrors:
        """Every input's vector, or every input's error: for batches where each bad item is reported
        (documents of a media collection), the items being decoded one at a time."""
        self._batcher.check_capacity(len(inputs))

        def each() -> list[Prepared | InvalidInputError]:
            outcomes: list[Prepared | InvalidInputError] = []
            for item in inputs:
                try:
                    outcomes.extend(self.encoder.prepare([item], modality))
                except InvalidInputError as error:
                    outcomes.append(error)
            return outcomes

        outcomes = await asyncio.to_thread(each)
        errors = {index: outcome for index, outcome in enumerate(outcomes) if isinstance(outcome, InvalidInputError)}
        return ItemErrors(errors) if errors else await self.embed_prepared(outcomes)

    async def embed_prepared(self, prepared: Sequence[Prepared]) -> Embeddings:
        vectors = await self._batcher.submit(prepared)
        return Embeddings(vectors, self._counted(prepared))

    def _counted(self, prepared: Sequence[Prepared]) -> list[int]:
        """Each embedded input's token count, once the inputs and tokens are in the model's metrics."""
        token_counts = [item.n_tokens for item in prepared]
        self._metrics.inputs(self.name).inc(len(prepared))
        self._metrics.tokens(self.name).inc(sum(token_counts))
        return token_counts

    async def embed_tokens(self, texts: Sequence[str], prompt_name: str | None = None) -> TokenEmbeddings:
        """Each text's token vectors (float32[t, token_dimensions], unit length, no padding or special tokens)."""
        if self._token_batcher is None:
            raise InvalidInputError(f"model {self.name!r} gives no token vectors (it needs a transformer on the "
                                    "torch backend)", param="model")
        prepared = await self._prepared_for(self._token_batcher, texts, "text", prompt_name)
        tokens = await self._token_batcher.submit(prepared)
        return TokenEmbeddings(list(tokens), self._counted(prepared))

    def close(self) -> None:
        for batcher in (self._batcher, self._token_batcher):
            if batcher is not None:
                batcher.close()
