"""The HTTP surface: routes, body limits, and the one place errors become responses.

Every error leaves as ``{"error": {"message", "type", "param", "code"}}``; caller
mistakes are 4xx, overload 429/503 with ``Retry-After``, our own faults a bare
500. No stack trace ever reaches a response body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from rayprism import __version__
from rayprism.deployments import responses
from rayprism.deployments.auth import ApiKeyGuard
from rayprism.deployments.collections import CollectionsService
from rayprism.deployments.openapi import CALLER_ERRORS, RETRY_LATER, answers, install, request_body
from rayprism.deployments.schemas import (
    AliasRequest,
    DeleteDocumentsRequest,
    DocumentsRequest,
    EmbeddingRequest,
    ReembedRequest,
    RequestT,
    RerankRequest,
    RollbackRequest,
    SearchRequest,
    parse_body,
)
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.swagger_ui import install_swagger_ui
from rayprism.platform.config import CollectionConfig
from rayprism.platform.errors import PayloadTooLargeError, RayprismError, RetryLaterError

logger = logging.getLogger(__name__)

API_DESCRIPTION = (
    "OpenAI-compatible embeddings, Milvus-backed collections and hybrid search. Every error has the shape "
    '`{"error": {"message", "type", "param", "code"}}`; 429 and 503 carry `Retry-After`.'
)

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def json_response(content: Any, status_code: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(content, option=_JSON_OPTIONS), status_code, headers, "application/json")


def error_response(error: RayprismError) -> Response:
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, RetryLaterError) else None
    return json_response(error.to_body(), error.http_status, headers)


def _http_error_body(status: int, message: str) -> dict:
    error_type = "invalid_request_error" if status < 500 else "server_error"
    code = {404: "not_found", 405: "method_not_allowed"}.get(status)
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed the limit."""
    too_large = PayloadTooLargeError(f"request body exceeds {limit_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


LARGE_BODY_BYTES = 64 * 1024
"""Bodies above this are parsed in a thread, so the event loop keeps answering /health and small requests."""
CLIENT_GONE = 499
"""The status recorded (never sent) for a request whose client disconnected first, as nginx logs it."""


async def parsed_body(request: Request, schema: type[RequestT], limit_bytes: int) -> RequestT:
    body = await read_body(request, limit_bytes)
    if len(body) > LARGE_BODY_BYTES:
        return await asyncio.to_thread(parse_body, schema, body)
    return parse_body(schema, body)


@contextlib.asynccontextmanager
async def cancelled_if_client_leaves(request: Request) -> AsyncIterator[None]:
    """Cancel the request's work when its client disconnects, so nothing computes for nobody (the
    batcher drops queued inputs of a cancelled request). Call once the body has been read."""
    handler = asyncio.current_task()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        handler.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


class Observed:
    """Records count, status and latency of one request, whatever way it ends.

    ``model`` is asked for the model label when the request ends, once it is known.
    """

    def __init__(self, service: EmbeddingService, endpoint: str, model: Callable[[], str]):
        self._metrics = service.metrics
        self._endpoint = endpoint
        self._model = model

    def __enter__(self) -> Observed:
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            status = 200
        elif isinstance(exc, asyncio.CancelledError):
            status = CLIENT_GONE
        else:
            status = exc.http_status if isinstance(exc, RayprismError) else 500
        model = self._model()
        self._metrics.requests(model, self._endpoint, str(status)).inc()
        self._metrics.latency(model, self._endpoint).observe(time.perf_counter() - self._started)


def create_app(
    service: EmbeddingService,
    collections: CollectionsService | None = None,
    *,
    on_startup: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.get_running_loop().create_task(on_startup()) if on_startup else None
        yield
        if task is not None:
            task.cancel()

    app = FastAPI(title="rayprism", version=__version__, lifespan=lifespan, description=API_DESCRIPTION,
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    install_swagger_ui(app)  # /docs, its own files served from here with root-relative links
    body_limit = service.config.server.max_request_bytes
    install(app, [EmbeddingRequest, RerankRequest, CollectionConfig, DocumentsRequest, DeleteDocumentsRequest,
                  SearchRequest, AliasRequest, ReembedRequest, RollbackRequest])
    keys = service.config.server.resolved_api_keys()
    if keys:
        app.add_middleware(ApiKeyGuard, keys=keys, protect_open_paths=service.config.server.api_key_routes == "all",
                           refuse=error_response)

    @app.exception_handler(RayprismError)
    async def _on_rayprism_error(request: Request, error: RayprismError) -> Response:
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(request: Request, error: StarletteHTTPException) -> Response:
        return json_response(_http_error_body(error.status_code, str(error.detail)), error.status_code, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _on_validation_error(request: Request, error: RequestValidationError) -> Response:
        return json_response(_http_error_body(422, str(error.errors()[0].get("msg", "invalid request"))), 422)

    @app.exception_handler(Exception)
    async def _on_unexpected(request: Request, error: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return json_response(_http_error_body(500, "internal server error"), 500)

    @app.post("/v1/embeddings", responses=answers(responses.EmbeddingResponse), openapi_extra=request_body(EmbeddingRequest))
    async def create_embeddings(request: Request) -> Response:
        """Embed texts (or token ids) with one model, OpenAI-style; requests are batched across callers."""
        parsed: EmbeddingRequest | None = None
        with Observed(service, "embeddings", lambda: service.metrics_label(parsed.model) if parsed else "unknown"):
            parsed = await parsed_body(request, EmbeddingRequest, body_limit)
            async with cancelled_if_client_leaves(request):
                return json_response(await service.create_embeddings(parsed))

    @app.post("/v1/rerank", responses=answers(responses.RerankResponse), openapi_extra=request_body(RerankRequest))
    async def rerank(request: Request) -> Response:
        """Score documents against a query with a reranker (a cross-encoder), best first, as Cohere, Jina and
        TEI do; pairs are batched across callers."""
        parsed: RerankRequest | None = None
        label = lambda: service.metrics_label(parsed.model, "reranker") if parsed else "unknown"  # noqa: E731
        with Observed(service, "rerank", label):
            parsed = await parsed_body(request, RerankRequest, body_limit)
            async with cancelled_if_client_leaves(request):
                return json_response(await service.rerank(parsed))

    @app.get("/v1/models", responses=answers(responses.ModelList, errors={}))
    async def list_models() -> Response:
        """Every model with its state, modalities, dimensions and prompts."""
        return json_response(service.list_models())

    @app.get("/v1/models/{name}", responses=answers(responses.ModelDescription, errors={404: CALLER_ERRORS[404]}))
    async def get_model(name: str) -> Response:
        """One model."""
        return json_response(service.describe_model(service.runner(name, kind=None)))

    health_answers = answers(responses.Health, description="Every model loaded and every declared collection in place",
                             errors={503: "Starting, or a part is down (`status`, `errors` say which)"})

    @app.get("/health", responses=health_answers)
    @app.head("/health", responses=health_answers)
    async def health() -> Response:
        """Readiness: 200 when the service can answer, 503 with the reasons when it cannot."""
        ready, body = service.health()
        if collections is not None:
            problem = await collections.store_problem()
            body["store"] = "unavailable" if problem else "ok"
            if problem:  # a part that comes back by itself: "unavailable", not a start-up "error"
                if ready:
                    body["status"] = "unavailable"
                ready = False
                body["errors"] = {**body.get("errors", {}), "store": problem}
        return json_response(body, 200 if ready else 503, None if ready else {"Retry-After": "2"})

    @app.get("/metrics", responses={200: {"description": "Prometheus text format",
                                          "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
    async def metrics() -> Response:
        """This replica's Prometheus metrics."""
        return Response(await service.exposition(), media_type=CONTENT_TYPE_LATEST)

    if collections is not None:
        _add_collection_routes(app, service, collections)
    return app


def _add_collection_routes(app: FastAPI, service: EmbeddingService, collections: CollectionsService) -> None:
    body_limit = service.config.server.max_request_bytes

    async def observed_call(endpoint: str, name: str, request: Request, schema: type, method) -> Response:
        """Parse the body into ``schema``, run ``method(name, parsed)``, record it under the collection's model."""
        with Observed(service, endpoint, lambda: service.metrics_label(collections.model_of(name))):
            parsed = await parsed_body(request, schema, body_limit)
            async with cancelled_if_client_leaves(request):
                return json_response(await method(name, parsed))

    async def created_or_existing(endpoint: str, request: Request, schema: type, method, model_of) -> Response:
        """Parse the body, run ``method(parsed) -> (description, created)``: 201 when something was made,
        200 when it existed; recorded under ``model_of(parsed)`` (read after the call)."""
        parsed = None
        with Observed(service, endpoint, lambda: service.metrics_label(model_of(parsed) if parsed else None)):
            parsed = await parsed_body(request, schema, body_limit)
            description, created = await method(parsed)
            return json_response(description, 201 if created else 200)

    @app.get("/v1/collections", responses=answers(responses.CollectionList, errors=RETRY_LATER))
    async def list_collections() -> Response:
        """Every collection with its schema and size."""
        return json_response(await collections.list())

    @app.post("/v1/collections", status_code=201, openapi_extra=request_body(CollectionConfig), responses={
        **answers(responses.CollectionDescription, status=201, description="Created", errors={
            **CALLER_ERRORS, 409: "A collection of that name exists with a different config", **RETRY_LATER}),
        200: {"model": responses.CollectionDescription, "description": "It exists already, identical"}})
    async def create_collection(request: Request) -> Response:
        """Create a collection (the keys of a `collections:` entry in serve.yaml)."""
        return await created_or_existing("collections.create", request, CollectionConfig, collections.create,
                                         lambda config: config.model)

    @app.get("/v1/collections/{name}", responses=answers(responses.CollectionDescription))
    async def get_collection(name: str) -> Response:
        """One collection: schema, model, document count."""
        return json_response(await collections.describe(name))

    @app.delete("/v1/collections/{name}", responses=answers(responses.CollectionDeleted, errors={
        **CALLER_ERRORS, 409: "An alias reaches it: remove or repoint the alias first", **RETRY_LATER}))
    async def drop_collection(name: str) -> Response:
        """Drop a collection and its documents."""
        model = collections.model_of(name)  # known before the drop forgets it
        with Observed(service, "collections.drop", lambda: service.metrics_label(model)):
            return json_response(await collections.drop(name))

    @app.post("/v1/collections/{name}/documents", responses=answers(responses.DocumentsUpserted),
              openapi_extra=request_body(DocumentsRequest))
    async def upsert_documents(name: str, request: Request) -> Response:
        """Embed and upsert documents by id; a batch with any invalid document is refused whole."""
        return await observed_call("documents.upsert", name, request, DocumentsRequest, collections.upsert)

    @app.get("/v1/collections/{name}/documents/{document_id}", responses=answers(responses.Document))
    async def get_document(name: str, document_id: str) -> Response:
        """One document by id."""
        return json_response(await collections.get_document(name, document_id))

    @app.delete("/v1/collections/{name}/documents", responses=answers(responses.DocumentsDeleted),
                openapi_extra=request_body(DeleteDocumentsRequest))
    async def delete_documents(name: str, request: Request) -> Response:
        """Delete documents by id."""
        return await observed_call("documents.delete", name, request, DeleteDocumentsRequest, collections.delete)

    @app.post("/v1/collections/{name}/search", responses=answers(responses.SearchResults),
              openapi_extra=request_body(SearchRequest))
    async def search(name: str, request: Request) -> Response:
        """Dense, BM25 or hybrid search, with an optional Milvus filter."""
        return await observed_call("search", name, request, SearchRequest, collections.search)

    @app.post("/v1/collections/{name}/reembed", status_code=202, openapi_extra=request_body(ReembedRequest),
              responses={**answers(responses.ReembedJob, status=202, description="Started", errors={
                  **CALLER_ERRORS, 409: "A job of this alias is running, or one of another model was interrupted",
                  **RETRY_LATER}),
                  200: {"model": responses.ReembedJob, "description": "An interrupted job of this model: resumed"}})
    async def reembed(name: str, request: Request) -> Response:
        """Embed an alias's collection again with another served model into a new physical collection, following
        the writes made meanwhile; once the evaluation gate passes, the alias moves there atomically. Answers
        the job at once: `GET /v1/reembed/{id}` follows it."""
        with Observed(service, "collections.reembed", lambda: service.metrics_label(collections.model_of(name))):
            parsed = await parsed_body(request, ReembedRequest, body_limit)
            job, started = await collections.reembed(name, parsed)
            return json_response(job, 202 if started else 200)

    @app.get("/v1/collections/{name}/reembed", responses=answers(responses.ReembedJobList))
    async def list_reembed_jobs(name: str) -> Response:
        """The re-embedding jobs of an alias, oldest first (rollbacks included)."""
        return json_response(await collections.reembed_jobs(name))

    @app.get("/v1/reembed/{job_id}", responses=answers(responses.ReembedJob))
    async def get_reembed_job(job_id: str) -> Response:
        """One re-embedding job: its state, progress, gate and bridge."""
        return json_response(await collections.reembed_job(job_id))

    @app.post("/v1/collections/{name}/rollback", status_code=202,
              openapi_extra=request_body(RollbackRequest, required=False), responses=answers(
                  responses.ReembedJob, status=202, description="Started", errors={
                      **CALLER_ERRORS, 409: "A job of this alias has not finished", **RETRY_LATER}))
    async def rollback(name: str, request: Request) -> Response:
        """Point the alias back at the collection its last re-embedding moved it from, after replaying the
        writes made since into that collection (a job, followed like a re-embedding). The body may be left out."""
        with Observed(service, "collections.rollback", lambda: service.metrics_label(collections.model_of(name))):
            body = await read_body(request, body_limit)
            parsed = parse_body(RollbackRequest, body) if body.strip() else RollbackRequest()
            return json_response(await collections.rollback(name, parsed), 202)

    @app.get("/v1/aliases", responses=answers(responses.AliasList, errors=RETRY_LATER))
    async def list_aliases() -> Response:
        """Every alias and the collection it reaches."""
        return json_response(await collections.list_aliases())

    @app.post("/v1/aliases", status_code=201, openapi_extra=request_body(AliasRequest), responses={
        **answers(responses.Alias, status=201, description="Created", errors={
            **CALLER_ERRORS, 409: "The name is a collection's, or the target is an alias", **RETRY_LATER}),
        200: {"model": responses.Alias, "description": "It existed: repointed (atomically)"}})
    async def point_alias(request: Request) -> Response:
        """Create an alias, or repoint it: every collection route accepts the alias as a collection name."""
        return await created_or_existing("aliases.point", request, AliasRequest, collections.point_alias,
                                         lambda alias: collections.model_of(alias.name))

    @app.delete("/v1/aliases/{name}", responses=answers(responses.AliasDeleted))
    async def drop_alias(name: str) -> Response:
        """Remove an alias; the collection it reached stays."""
        return json_response(await collections.drop_alias(name))
