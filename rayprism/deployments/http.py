"""The HTTP surface: routes, body limits, and the one place errors become responses.

Every error leaves as ``{"error": {"message", "type", "param", "code"}}``; caller
mistakes are 4xx, overload 429/503 with ``Retry-After``, our own faults a bare
500. No stack trace ever reaches a response body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from rayprism import __version__
from rayprism.deployments.audit import AuditTrail
from rayprism.deployments.auth import ApiKeyGuard, key_of
from rayprism.deployments.batch_routes import BatchService, add_batch_routes
from rayprism.deployments.collection_routes import CollectionServices, add_collection_routes, audited
from rayprism.deployments.console import install_console
from rayprism.deployments.http_io import (
    Observed,
    cancelled_if_client_leaves,
    error_response,
    http_error_body,
    json_response,
    parsed_body,
)
from rayprism.deployments.openapi import CALLER_ERRORS, answers, install, request_body
from rayprism.deployments.quotas import QuotaGuard, key_quotas
from rayprism.deployments.request_ids import RequestIds
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.swagger_ui import install_swagger_ui
from rayprism.platform.api import responses
from rayprism.platform.api.keys import ADMIN
from rayprism.platform.api.requests import (
    AliasRequest,
    DeleteDocumentsRequest,
    DocumentsRequest,
    EmbeddingRequest,
    ReembedRequest,
    RerankRequest,
    RollbackRequest,
    SearchRequest,
    SnapshotRequest,
)
from rayprism.platform.batches import BatchRequest
from rayprism.platform.config import CollectionConfig, SearchDefaults, ServerConfig
from rayprism.platform.errors import RayprismError

logger = logging.getLogger(__name__)

API_DESCRIPTION = (
    "OpenAI-compatible embeddings, Milvus-backed collections and hybrid search. Every error has the shape "
    '`{"error": {"message", "type", "param", "code"}}`; 429 and 503 carry `Retry-After`.'
)

def audit_settings(server: ServerConfig) -> tuple[str | None, int, int]:
    """What :meth:`AuditTrail.of` needs, also sent to re-embedding workers (which write the swap's record)."""
    return server.audit_log, server.audit_log_max_bytes, server.audit_log_backups


def create_app(
    service: EmbeddingService,
    collection_services: CollectionServices | None = None,
    *,
    on_startup: Callable[[], Awaitable[None]] | None = None,
    batches: BatchService | None = None,
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
    install_console(app)  # /console, the browser console's files from the package
    body_limit = service.config.server.max_request_bytes
    install(app, [EmbeddingRequest, RerankRequest, CollectionConfig, DocumentsRequest, DeleteDocumentsRequest,
                  SearchRequest, SearchDefaults, AliasRequest, ReembedRequest, RollbackRequest, SnapshotRequest,
                  BatchRequest])
    server = service.config.server
    audit = AuditTrail.of(*audit_settings(server))
    keys = server.resolved_api_keys()
    if keys:  # the last added runs first: request id, then the key, then its quota
        quotas = key_quotas(server.rates(), service.config.deployment.replicas.max,
                            lambda key, limit: service.metrics.throttled(key, limit).inc())
        if quotas:
            app.add_middleware(QuotaGuard, quotas=quotas, refuse=error_response)
        app.add_middleware(ApiKeyGuard, keys=keys, routes=app.router.routes,
                           protect_open_paths=server.api_key_routes == "all", refuse=error_response, audit=audit)
    app.add_middleware(RequestIds)

    @app.exception_handler(RayprismError)
    async def _on_rayprism_error(request: Request, error: RayprismError) -> Response:
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(request: Request, error: StarletteHTTPException) -> Response:
        return json_response(http_error_body(error.status_code, str(error.detail)), error.status_code, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _on_validation_error(request: Request, error: RequestValidationError) -> Response:
        return json_response(http_error_body(422, str(error.errors()[0].get("msg", "invalid request"))), 422)

    @app.exception_handler(Exception)
    async def _on_unexpected(request: Request, error: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return json_response(http_error_body(500, "internal server error"), 500)

    @app.post("/v1/embeddings", responses=answers(responses.EmbeddingResponse), openapi_extra=request_body(EmbeddingRequest))
    async def create_embeddings(request: Request) -> Response:
        """Embed texts (or token ids) with one model, OpenAI-style; requests are batched across callers."""
        parsed: EmbeddingRequest | None = None
        with (Observed(service, "embeddings", lambda: service.metrics_label(parsed.model) if parsed else "unknown"),
              service.lane.online()):  # batch lines wait behind it
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

    @app.get("/v1/keys/me", responses=answers(responses.KeyDescription, errors={}))
    async def key_me(request: Request) -> Response:
        """The key this request presented: its name and scopes (a console shows only what the key may do)."""
        key = key_of(request)
        return json_response(responses.KeyDescription(
            object="key", name=key.name if key else None, scopes=list(key.scopes) if key else [ADMIN],
            keys_required=bool(keys)))

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
        if collection_services is not None:
            problem = await collection_services.collections.store_problem()
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

    if collection_services is not None:
        add_collection_routes(app, service, collection_services, audit)
    # without a launcher (an app built by `build_application` alone), files are taken and batches refused
    add_batch_routes(app, service, batches or BatchService(service.config.batches, None), audited(audit))
    return app
