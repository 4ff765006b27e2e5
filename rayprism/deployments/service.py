"""The serving replica's logic, free of Ray and HTTP so it reads (and tests) on its own.

Every model no group takes lives in each replica: a request is parsed, batched and
encoded in one process, with no hop between an ingress and an encoder. A grouped model
is reached through its group's handle (:mod:`~rayprism.deployments.remote_runner`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import orjson

from rayprism.deployments.background import BackgroundLane
from rayprism.deployments.metrics import ServiceMetrics, merged_exposition
from rayprism.deployments.remote_media import RemoteMedia
from rayprism.deployments.remote_runner import RemoteRunner
from rayprism.deployments.runner import ModelRunner
from rayprism.platform.api.requests import EmbeddingRequest, RerankRequest, parse_body
from rayprism.platform.api.responses import (
    Embedding,
    EmbeddingResponse,
    Health,
    ModelDescription,
    ModelList,
    RerankDocument,
    RerankResponse,
    RerankResult,
    Usage,
)
from rayprism.platform.codecs.matryoshka import truncate
from rayprism.platform.codecs.output import row_encoder
from rayprism.platform.config import ServeConfig
from rayprism.platform.errors import (
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    RayprismError,
    RetryLaterError,
)
from rayprism.platform.models.base import Embeddings, ModelKind, PromptRole, prompt_for_role

logger = logging.getLogger(__name__)

BATCH_RETRY_S = 0.5
"""How long a batch line refused for overload (a full queue, a model restarting) waits before it tries again."""
BATCH_RETRY_FOR_S = 600.0
"""How long a batch line keeps trying through such refusals before the refusal is its answer."""

_KIND_NAMES = {"embedder": "embedding model", "reranker": "reranker"}
_A_KIND = {"embedder": "an embedding model", "reranker": "a reranker"}
_UNDECLARED_TOKEN_IDS = (
    'input holds token ids, which are read as the model\'s own only with "tokenizer": "model". LangChain\'s '
    "OpenAIEmbeddings sends OpenAI's (tiktoken) ids by default, which this model would read as other words: "
    "create it with check_embedding_ctx_length=False to send the text")
_KIND_ROUTES = {"embedder": "POST /v1/embeddings", "reranker": "POST /v1/rerank"}


def _usage(token_counts: list[int]) -> Usage:
    """Tokens read by a request: all of them prompt tokens (an encoder writes none)."""
    total_tokens = sum(token_counts)
    return Usage(prompt_tokens=total_tokens, total_tokens=total_tokens)


class EmbeddingService:
    def __init__(self, config: ServeConfig, *, replica: str = "", groups: dict[str, Any] | None = None):
        """``groups``: a Serve handle for each model group of ``config`` (none when it has no groups)."""
        self.config = config
        self.replica = replica
        self.metrics = ServiceMetrics(replica)
        self.created = int(time.time())
        self.runners: dict[str, ModelRunner | RemoteRunner] = {}
        for model in config.models:
            group = config.group_of(model.name)
            self.runners[model.name] = (
                RemoteRunner(model, group, groups[group.name]) if group is not None
                else ModelRunner(model, self.metrics, num_cpus=config.deployment.num_cpus)
            )
        self.remote_media = RemoteMedia(max_bytes=config.server.max_request_bytes) if (
            config.server.allow_remote_media) else None
        self.lane = BackgroundLane(config.batches)
        """Batch lines wait here behind online requests (:mod:`~rayprism.deployments.background`)."""
        self.startup_errors: dict[str, str] = {}
        """Problems found after loading (e.g. a collection whose schema disagrees), by subject."""
        self._loader = threading.Thread(target=self._load_models, name="rayprism-model-loader", daemon=True)
        self._loader.start()

    def _load_models(self) -> None:
        for runner in self.runners.values():
            runner.load()

    def started(self) -> bool:
        """Whether start-up work (model loading, and whatever subclasses add) is over."""
        return not self._loader.is_alive()

    def wait_loaded(self, timeout_s: float | None = None) -> bool:
        self._loader.join(timeout_s)
        return not self._loader.is_alive()

    def check_health(self) -> None:
        """Serve's health hook, for serving and group replicas alike: Serve replaces a replica whose model
        failed to load; /health reports why meanwhile."""
        failed = {name: runner.load_error for name, runner in self.runners.items() if runner.load_error}
        if failed:
            raise RuntimeError(f"models failed to load: {failed}")

    def runner(self, name: str | None, kind: ModelKind | None = "embedder") -> ModelRunner | RemoteRunner:
        """Model ``name``, or without a name the service's only model of ``kind``; one of another kind is
        refused (None: any kind)."""
        if name is None:
            of_kind = [runner for runner in self.runners.values() if kind is None or runner.config.kind == kind]
            if len(of_kind) == 1:
                return of_kind[0]
            have = f"its {_KIND_NAMES[kind]}s are {sorted(r.name for r in of_kind)}" if of_kind else (
                f"it has no {_KIND_NAMES[kind]}")
            raise InvalidInputError(f"model is required: {have}", param="model")
        runner = self.runners.get(name)
        if runner is None:
            raise NotFoundError(f"model {name!r} does not exist; available: {sorted(self.runners)}", param="model")
        if kind is not None and runner.config.kind != kind:
            raise InvalidInputError(f"model {name!r} is {_A_KIND[runner.config.kind]}, not {_A_KIND[kind]} "
                                    f"({_KIND_ROUTES[runner.config.kind]} takes it)", param="model")
        return runner

    def metrics_label(self, model: str | None, kind: ModelKind = "embedder") -> str:
        """A model name safe to use as a label: callers cannot invent new series."""
        try:
            return self.runner(model, kind).name
        except RayprismError:
            return "unknown"

    def check_input_count(self, count: int, what: str, param: str) -> None:
        """``server.max_inputs_per_request`` bounds the inputs of every request, embeddings and documents alike."""
        limit = self.config.server.max_inputs_per_request
        if count > limit:
            raise PayloadTooLargeError(f"too many {what}: {count} (at most {limit} per request)", param=param)

    async def create_embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        self.check_input_count(len(request.input), "inputs", "input")
        if request.tokenizer is None and isinstance(request.input[0], list):
            raise InvalidInputError(_UNDECLARED_TOKEN_IDS, param="input")
        runner = self.runner(request.model)
        await runner.ready()
        dimensions = runner.encoder.dimensions
        if request.dimensions is not None and request.dimensions > dimensions:
            raise InvalidInputError(
                f"dimensions {request.dimensions} exceeds the model's {dimensions}", param="dimensions"
            )
        encode = row_encoder(request.output_dtype, request.encoding_format, model=runner.name,
                             dimensions=request.dimensions or dimensions, ranges_path=runner.config.int8_ranges)
        inputs = await self.media_inputs(request.input, request.modality)
        result = await runner.embed(inputs, request.modality, request.prompt_name, truncate=request.truncate)
        vectors = result.vectors
        if request.dimensions is not None and request.dimensions < dimensions:
            vectors = truncate(vectors, request.dimensions)
        data: list[Embedding] = [{"object": "embedding", "index": index, "embedding": row}
                                 for index, row in enumerate(encode(vectors))]  # typed literals: see responses.py
        return EmbeddingResponse(object="list", data=data, model=runner.name, usage=_usage(result.token_counts))

    async def batch_lines(self, bodies: list[dict]) -> list[tuple[int, Any]]:
        """Each body of a batch's lines answered as ``POST /v1/embeddings`` answers it: (status, body), in order.
        The lines enter one by one as the lane lets them (behind online requests), shortest first, and run
        together: a forward pass pads each input to the pass's longest, so lines of like length entering together
        share passes with little padding (in file order, Debian descriptions' passes were mostly padding:
        docs/benchmarks.md, "Batches")."""
        answers: list[Any] = [None] * len(bodies)
        requests: list[tuple[int, EmbeddingRequest]] = []
        for index, body in enumerate(bodies):
            try:
                requests.append((index, parse_body(EmbeddingRequest, orjson.dumps(body))))
            except RayprismError as error:
                answers[index] = (error.http_status, error.to_body())
        running: dict[int, asyncio.Task] = {}
        for index, request in sorted(requests, key=lambda pair: sum(len(item) for item in pair[1].input)):
            inputs = len(request.input)
            await self.lane.admit(inputs)
            running[index] = asyncio.get_running_loop().create_task(self._batch_line(request, inputs))
        for index, task in running.items():
            answers[index] = await task
        return answers

    async def _batch_line(self, request: EmbeddingRequest, inputs: int) -> tuple[int, Any]:
        deadline = time.monotonic() + BATCH_RETRY_FOR_S
        try:
            while True:
                try:
                    return 200, await self.create_embeddings(request)
                except RetryLaterError as error:
                    if time.monotonic() > deadline:
                        return error.http_status, error.to_body()
                await asyncio.sleep(BATCH_RETRY_S)
        except RayprismError as error:
            return error.http_status, error.to_body()
        except Exception:  # our own fault: the line says so, as the online route would, with no trace
            logger.exception("a batch line failed")
            return 500, RayprismError("internal server error").to_body()
        finally:
            self.lane.release(inputs)

    async def rerank(self, request: RerankRequest) -> RerankResponse:
        self.check_input_count(len(request.documents), "documents", "documents")
        runner = self.runner(request.model, "reranker")
        await runner.ready()
        result = await runner.rerank(request.query, request.documents, truncate=request.truncate)
        results = []
        for index in result.best_first(request.top_n):
            answer = RerankResult(index=index, relevance_score=float(result.scores[index]))
            if request.return_documents:
                answer["document"] = RerankDocument(text=request.documents[index])
            results.append(answer)
        return RerankResponse(object="rerank", model=runner.name, results=results, usage=_usage(result.token_counts))

    async def embed_texts(self, model: str, texts: list[str], role: PromptRole) -> Embeddings:
        """Texts embedded by ``model`` with the prompt it declares for ``role`` (query or document), if any."""
        runner = self.runner(model)
        return await runner.embed(texts, "text", prompt_for_role(runner.encoder.prompts, role))

    async def media_inputs(self, inputs: list, modality: str) -> list:
        """Image and audio URLs fetched where the operator allows it; otherwise refused by the encoder."""
        if modality == "text" or self.remote_media is None:
            return inputs
        return await self.remote_media.resolve(inputs)

    def describe_model(self, runner: ModelRunner | RemoteRunner) -> ModelDescription:
        description = ModelDescription(
            id=runner.name,
            object="model",
            created=self.created,
            owned_by="rayprism",
            kind=runner.config.kind,
            state=runner.state,
            modality=runner.config.modality,
            backend=runner.config.backend,
        )
        if runner.state == "ready":
            description["max_input_tokens"] = runner.encoder.max_input_tokens
            description["modalities"] = sorted(runner.encoder.modalities)
            if runner.config.kind == "embedder":
                description["dimensions"] = runner.encoder.dimensions
                description["prompts"] = sorted(runner.encoder.prompts)
        return description

    def list_models(self) -> ModelList:
        return ModelList(object="list", data=[self.describe_model(runner) for runner in self.runners.values()])

    def health(self) -> tuple[bool, Health]:
        states = {name: runner.state for name, runner in self.runners.items()}
        errors = {name: runner.load_error for name, runner in self.runners.items() if runner.load_error}
        errors.update(self.startup_errors)
        ready = all(state in ("ready", "idle") for state in states.values()) and not errors and self.started()
        body = Health(status="ok" if ready else ("error" if errors else "loading"), models=states, replica=self.replica)
        if errors:
            body["errors"] = errors
        return ready, body

    async def exposition(self) -> bytes:
        """This replica's metrics, and those of each model group that has replicas now (asking an idle
        one would start it)."""
        self.update_gauges()
        remote = [runner for runner in self.runners.values() if isinstance(runner, RemoteRunner)]
        groups = {runner.group.name: runner for runner in remote if runner.recently_used()}
        if not groups:
            return self.metrics.exposition()
        texts = await asyncio.gather(*(runner.metrics() for runner in groups.values()))
        return merged_exposition([self.metrics.exposition(), *(text for text in texts if text)])

    def update_gauges(self) -> None:
        for name, runner in self.runners.items():
            if isinstance(runner, ModelRunner):  # a group reports its own queues
                self.metrics.queue_depth(name).set(runner.queued_inputs)

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()
