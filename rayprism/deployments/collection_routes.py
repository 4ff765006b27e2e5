"""The collection, document, search, alias and re-embedding routes, over the services that answer them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Callable, ContextManager, Iterator

from fastapi import FastAPI, Query, Request
from starlette.responses import Response

from rayprism.deployments.audit import AuditTrail, audit_record
from rayprism.deployments.auth import key_name, may_read
from rayprism.deployments.backup_routes import add_backup_routes
from rayprism.deployments.collection_map import MAP_SAMPLE_DEFAULT, MAP_SAMPLE_MAX, CollectionMapService
from rayprism.deployments.collections import CollectionsService
from rayprism.deployments.documents import DocumentsService
from rayprism.deployments.http_io import (
    Observed,
    cancelled_if_client_leaves,
    json_response,
    parsed_body,
    read_body,
    status_of,
)
from rayprism.deployments.openapi import CALLER_ERRORS, RETRY_LATER, STORE_FULL, answers, request_body
from rayprism.deployments.reembed import ReembedJobs
from rayprism.deployments.reembed_jobs import ReembedService
from rayprism.deployments.request_ids import request_id_of
from rayprism.deployments.search import SearchService
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store_client import Store
from rayprism.platform.api import responses
from rayprism.platform.api.requests import (
    AliasRequest,
    DeleteDocumentsRequest,
    DocumentsRequest,
    ReembedRequest,
    RollbackRequest,
    SearchRequest,
    parse_body,
)
from rayprism.platform.config import CollectionConfig, SearchDefaults

DOCUMENT_PAGE_DEFAULT = 20
DOCUMENT_PAGE_MAX = 100
"""Documents in one page of ``GET /v1/collections/{name}/documents`` (each with its whole text)."""


@dataclass(frozen=True)
class CollectionServices:
    """What answers the collection routes of one replica; they share the replica's models and store."""

    collections: CollectionsService
    documents: DocumentsService
    search: SearchService
    reembed: ReembedService
    store: Store
    """The store the services share: backup and restore call it directly."""
    map: CollectionMapService

    @classmethod
    def build(cls, embeddings: EmbeddingService, store: Store, jobs: ReembedJobs | None = None) -> CollectionServices:
        """``store``: the store deployment's client, or a replica in this process. ``jobs``: where re-embedding
        workers start (none: this service cannot re-embed)."""
        collections = CollectionsService(embeddings, store)
        search = SearchService(embeddings, collections, store)
        return cls(collections, DocumentsService(embeddings, collections, store), search,
                   ReembedService(embeddings, collections, search, store, jobs), store,
                   CollectionMapService(collections, search, store))


def origin_of(request: Request) -> dict:
    """Who asked for a change, and how: the fields every audit record of it has."""
    return dict(key=key_name(request), method=request.method, route=request.scope["route"].path,
                path=request.url.path, request_id=request_id_of(request.scope))


Change = Callable[[Request, "str | None"], ContextManager[dict]]
"""Audits one change, however it ends: ``change(request, target)`` yields the record's details for the route to
fill (counts, ids)."""


def audited(audit: AuditTrail) -> Change:
    """The :data:`Change` of every route that changes something: collections, documents, aliases, batches."""

    @contextlib.contextmanager
    def change(request: Request, target: str | None) -> Iterator[dict]:
        details: dict = {}
        error: BaseException | None = None
        try:
            yield details
        except BaseException as raised:
            error = raised
            raise
        finally:
            audit.write(audit_record(**origin_of(request), target=details.pop("target", target), **details,
                                     outcome="ok" if error is None else f"failed {status_of(error)}"))

    return change


def add_collection_routes(app: FastAPI, service: EmbeddingService, services: CollectionServices,
                          audit: AuditTrail) -> None:
    collections = services.collections
    body_limit = service.config.server.max_request_bytes

    change = audited(audit)

    async def observed_call(endpoint: str, name: str, request: Request, schema: type, method,
                            counted: tuple[str, str] | None = None) -> Response:
        """Parse the body into ``schema``, run ``method(name, parsed)``, record it under the collection's model.
        ``counted``: (the body's list, the answer's count) of a change, audited with both counts."""
        with Observed(service, endpoint, lambda: service.metrics_label(collections.model_of(name))):
            with change(request, name) if counted else contextlib.nullcontext({}) as details:
                parsed = await parsed_body(request, schema, body_limit)
                if counted:
                    details["count"] = len(getattr(parsed, counted[0]))
                async with cancelled_if_client_leaves(request):
                    answer = await method(name, parsed)
                if counted:
                    details[counted[1]] = answer[counted[1]]
                return json_response(answer)

    async def created_or_existing(endpoint: str, request: Request, schema: type, method, model_of, target_of
                                  ) -> Response:
        """Parse the body, run ``method(parsed) -> (description, created)``: 201 when something was made,
        200 when it existed; recorded under ``model_of(parsed)`` (read after the call), audited as a change of
        ``target_of(parsed)``."""
        parsed = None
        with Observed(service, endpoint, lambda: service.metrics_label(model_of(parsed) if parsed else None)):
            with change(request, None) as details:
                parsed = await parsed_body(request, schema, body_limit)
                details.update(target_of(parsed))
                description, created = await method(parsed)
                details["created"] = created
                return json_response(description, 201 if created else 200)

    @app.get("/v1/collections", responses=answers(responses.CollectionList, errors=RETRY_LATER))
    async def list_collections(request: Request) -> Response:
        """Every collection the key may read, with its schema and size."""
        return json_response(await collections.list(partial(may_read, request)))

    @app.post("/v1/collections", status_code=201, openapi_extra=request_body(CollectionConfig), responses={
        **answers(responses.CollectionDescription, status=201, description="Created", errors={
            **CALLER_ERRORS, 409: "A collection of that name exists with a different config", **RETRY_LATER}),
        200: {"model": responses.CollectionDescription, "description": "It exists already, identical"}})
    async def create_collection(request: Request) -> Response:
        """Create a collection (the keys of a `collections:` entry in serve.yaml)."""
        return await created_or_existing("collections.create", request, CollectionConfig, collections.create,
                                         lambda config: config.model, lambda config: {"target": config.name})

    @app.get("/v1/collections/{name}", responses=answers(responses.CollectionDescription))
    async def get_collection(name: str) -> Response:
        """One collection: schema, model, document count."""
        return json_response(await collections.describe(name))

    @app.delete("/v1/collections/{name}", responses=answers(responses.CollectionDeleted, errors={
        **CALLER_ERRORS, 409: "An alias reaches it: remove or repoint the alias first", **RETRY_LATER}))
    async def drop_collection(name: str, request: Request) -> Response:
        """Drop a collection and its documents."""
        model = collections.model_of(name)  # known before the drop forgets it
        with Observed(service, "collections.drop", lambda: service.metrics_label(model)), change(request, name):
            return json_response(await collections.drop(name))

    @app.post("/v1/collections/{name}/documents", responses=answers(responses.DocumentsUpserted, errors={
        **CALLER_ERRORS, **RETRY_LATER, **STORE_FULL}), openapi_extra=request_body(DocumentsRequest))
    async def upsert_documents(name: str, request: Request) -> Response:
        """Embed and upsert documents by id; a batch with any invalid document is refused whole."""
        return await observed_call("documents.upsert", name, request, DocumentsRequest, services.documents.upsert,
                                   counted=("documents", "upserted"))

    @app.get("/v1/collections/{name}/documents", responses=answers(responses.DocumentPage))
    async def list_documents(name: str, limit: int = Query(DOCUMENT_PAGE_DEFAULT, ge=1, le=DOCUMENT_PAGE_MAX),
                             after: str | None = Query(None, description="A cursor: the documents after this id (the "
                                                       "last_id of the page before)"),
                             offset: int = Query(0, ge=0, description="Instead of after: skip this many (walks the "
                                                 "ids before it; after costs the same anywhere)")) -> Response:
        """A page of the collection's documents in the order of their ids, and how many there are."""
        with Observed(service, "documents.list", lambda: service.metrics_label(collections.model_of(name))):
            return json_response(await services.documents.page(name, limit, offset, after))

    @app.get("/v1/collections/{name}/map", responses=answers(responses.CollectionMap))
    async def collection_map(name: str, sample: int = Query(MAP_SAMPLE_DEFAULT, ge=1, le=MAP_SAMPLE_MAX),
                             color_by: str | None = Query(None, description="A metadata field to colour points by"),
                             query: str | None = Query(None, description="A text query placed on the map, with its hits"),
                             k: int = Query(10, ge=1, le=100, description="Hits of `query` placed"),
                             *, request: Request) -> Response:
        """A 2-D picture of the collection: a sample of its documents' vectors projected by PCA (the console's map)."""
        with Observed(service, "collections.map", lambda: service.metrics_label(collections.model_of(name))):
            async with cancelled_if_client_leaves(request):
                return json_response(await services.map(name, sample, color_by, query or None, k))

    @app.get("/v1/collections/{name}/documents/{document_id:path}", responses=answers(responses.Document))
    async def get_document(name: str, document_id: str, pieces: bool = Query(
            False, description="Also the pieces a chunked collection stores it as (index, start, text)")) -> Response:
        """One document by id."""
        return json_response(await services.documents.get_document(name, document_id, pieces))

    @app.delete("/v1/collections/{name}/documents", responses=answers(responses.DocumentsDeleted),
                openapi_extra=request_body(DeleteDocumentsRequest))
    async def delete_documents(name: str, request: Request) -> Response:
        """Delete documents by id."""
        return await observed_call("documents.delete", name, request, DeleteDocumentsRequest, services.documents.delete,
                                   counted=("ids", "deleted"))

    @app.post("/v1/collections/{name}/search", responses=answers(responses.SearchResults),
              openapi_extra=request_body(SearchRequest))
    async def search(name: str, request: Request) -> Response:
        """Dense, BM25 or hybrid search, with an optional Milvus filter."""
        return await observed_call("search", name, request, SearchRequest, services.search)

    @app.put("/v1/collections/{name}/search_defaults", openapi_extra=request_body(SearchDefaults),
             responses=answers(responses.CollectionDescription))
    async def apply_search_defaults(name: str, request: Request) -> Response:
        """Set the settings (mode, fusion, candidates, rerank) every search of the collection uses where it gives
        none, in place of its config's `search_defaults`; kept in the store, so a restart keeps them. Each search
        still sets any of them itself. `rayprism tune --apply` stores the settings it chose this way."""
        with (Observed(service, "collections.search_defaults", lambda: service.metrics_label(collections.model_of(name))),
              change(request, name) as details):
            parsed = await parsed_body(request, SearchDefaults, body_limit)
            details["search_defaults"] = parsed.model_dump(mode="json", exclude_none=True)
            return json_response(await collections.apply_search_defaults(name, parsed))

    @app.delete("/v1/collections/{name}/search_defaults", responses=answers(responses.CollectionDescription))
    async def remove_search_defaults(name: str, request: Request) -> Response:
        """Remove the search defaults applied to the collection: its config's `search_defaults` (or the built-in
        settings, without them) are in use again."""
        with (Observed(service, "collections.search_defaults", lambda: service.metrics_label(collections.model_of(name))),
              change(request, name)):
            return json_response(await collections.apply_search_defaults(name, None))

    @app.post("/v1/collections/{name}/reembed", status_code=202, openapi_extra=request_body(ReembedRequest),
              responses={**answers(responses.ReembedJob, status=202, description="Started", errors={
                  **CALLER_ERRORS, 409: "A job of this alias is running, or one of another model was interrupted",
                  **RETRY_LATER}),
                  200: {"model": responses.ReembedJob, "description": "An interrupted job of this model: resumed"}})
    async def reembed(name: str, request: Request) -> Response:
        """Embed an alias's collection again with another served model into a new physical collection, following
        the writes made meanwhile; once the evaluation gate passes, the alias moves there atomically. Answers
        the job at once: `GET /v1/reembed/{id}` follows it."""
        with (Observed(service, "collections.reembed", lambda: service.metrics_label(collections.model_of(name))),
              change(request, name) as details):
            parsed = await parsed_body(request, ReembedRequest, body_limit)
            details["model"] = parsed.model
            job, started = await services.reembed.start(name, parsed, origin_of(request))
            details.update(job=job.id, started=started)
            return json_response(job.model_dump(mode="json"), 202 if started else 200)

    @app.get("/v1/collections/{name}/reembed", responses=answers(responses.ReembedJobList))
    async def list_reembed_jobs(name: str) -> Response:
        """The re-embedding jobs of an alias, oldest first (rollbacks included)."""
        return json_response((await services.reembed.jobs_of(name)).model_dump(mode="json"))

    @app.get("/v1/reembed/{job_id}", responses=answers(responses.ReembedJob))
    async def get_reembed_job(job_id: str) -> Response:
        """One re-embedding job: its state, progress, gate and bridge."""
        return json_response((await services.reembed.job(job_id)).model_dump(mode="json"))

    @app.post("/v1/collections/{name}/rollback", status_code=202,
              openapi_extra=request_body(RollbackRequest, required=False), responses=answers(
                  responses.ReembedJob, status=202, description="Started", errors={
                      **CALLER_ERRORS, 409: "A job of this alias has not finished", **RETRY_LATER}))
    async def rollback(name: str, request: Request) -> Response:
        """Point the alias back at the collection its last re-embedding moved it from, after replaying the
        writes made since into that collection (a job, followed like a re-embedding). The body may be left out."""
        with (Observed(service, "collections.rollback", lambda: service.metrics_label(collections.model_of(name))),
              change(request, name) as details):
            body = await read_body(request, body_limit)
            parsed = parse_body(RollbackRequest, body) if body.strip() else RollbackRequest()
            job = await services.reembed.rollback(name, parsed, origin_of(request))
            details["job"] = job.id
            return json_response(job.model_dump(mode="json"), 202)

    @app.get("/v1/aliases", responses=answers(responses.AliasList, errors=RETRY_LATER))
    async def list_aliases(request: Request) -> Response:
        """Every alias the key may read, and the collection it reaches."""
        return json_response(await collections.list_aliases(partial(may_read, request)))

    @app.post("/v1/aliases", status_code=201, openapi_extra=request_body(AliasRequest), responses={
        **answers(responses.Alias, status=201, description="Created", errors={
            **CALLER_ERRORS, 409: "The name is a collection's, or the target is an alias", **RETRY_LATER}),
        200: {"model": responses.Alias, "description": "It existed: repointed (atomically)"}})
    async def point_alias(request: Request) -> Response:
        """Create an alias, or repoint it: every collection route accepts the alias as a collection name."""
        return await created_or_existing("aliases.point", request, AliasRequest, collections.point_alias,
                                         lambda alias: collections.model_of(alias.name),
                                         lambda alias: {"target": alias.name, "collection": alias.collection})

    @app.delete("/v1/aliases/{name}", responses=answers(responses.AliasDeleted))
    async def drop_alias(name: str, request: Request) -> Response:
        """Remove an alias; the collection it reached stays."""
        with change(request, name):
            return json_response(await collections.drop_alias(name))

    add_backup_routes(app, service, collections, services.store, change)
