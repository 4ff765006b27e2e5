"""Every route of the service, once: each method builds its :class:`Call` (path, body checked by the service's own
request model, the answer's type) and the client it is read from sends it, :class:`~rayprism.client.Client` answering
the typed object and :class:`~rayprism.client.AsyncClient` an awaitable of it."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Awaitable, Callable, Generic, Iterable, Literal, ParamSpec, Protocol, TypeVar, overload
from urllib.parse import quote

from rayprism.client._calls import Call, body
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
from rayprism.platform.api.responses import (
    Alias,
    AliasDeleted,
    AliasList,
    CollectionDeleted,
    CollectionDescription,
    CollectionList,
    Document,
    DocumentsDeleted,
    DocumentsUpserted,
    EmbeddingResponse,
    Health,
    ModelDescription,
    ModelList,
    ReembedJob,
    ReembedJobList,
    RerankResponse,
    RowsRestored,
    SearchResults,
    Snapshot,
    SnapshotDeleted,
)
from rayprism.platform.config import CollectionConfig, SearchDefaults
from rayprism.platform.constants import ARROW_STREAM

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class SyncSender(Protocol):
    def send(self, call: Call[T]) -> T: ...


class AsyncSender(Protocol):
    def send(self, call: Call[T]) -> Awaitable[T]: ...


class route(Generic[P, T_co]):
    """A method of both clients, defined once: ``build(*args) -> Call``; read from a client, it sends the call."""

    def __init__(self, build: Callable[P, Call[T_co]]):
        self._build = build
        functools.update_wrapper(self, build)
        built = inspect.signature(build)  # help() shows what the method answers, not the Call it builds
        self._signature = built.replace(
            return_annotation=str(built.return_annotation).removeprefix("Call[").removesuffix("]"))

    @overload
    def __get__(self, client: None, owner: type) -> route[P, T_co]: ...
    @overload
    def __get__(self, client: SyncSender, owner: type) -> Callable[P, T_co]: ...
    @overload
    def __get__(self, client: AsyncSender, owner: type) -> Callable[P, Awaitable[T_co]]: ...

    def __get__(self, client, owner):
        if client is None:
            return self

        @functools.wraps(self._build)
        def send(*args: P.args, **kwargs: P.kwargs):
            return client.send(self._build(*args, **kwargs))

        send.__signature__ = self._signature
        return send


def _name(name: str) -> str:
    return quote(name, safe="")


class Routes:
    """The service's routes, as methods (both clients inherit them)."""

    @route
    def embeddings(input: str | list[str] | list[int] | list[list[int]], *, model: str | None = None,
                   **options: Any) -> Call[EmbeddingResponse]:
        """``POST /v1/embeddings``. ``options``: the request's other fields (``encoding_format``, ``dimensions``,
        ``modality``, ``prompt_name``, ``truncate``, ``user``)."""
        return Call("POST", "/v1/embeddings", body(EmbeddingRequest, input=input, model=model, **options),
                    EmbeddingResponse)

    @route
    def rerank(query: str, documents: list[str], *, model: str | None = None,
               **options: Any) -> Call[RerankResponse]:
        """``POST /v1/rerank``: the documents scored against ``query`` by a reranker, best first. ``options``:
        ``top_n``, ``return_documents``, ``truncate``."""
        return Call("POST", "/v1/rerank", body(RerankRequest, query=query, documents=documents, model=model,
                                                **options), RerankResponse)

    @route
    def models() -> Call[ModelList]:
        """``GET /v1/models``: every model with its state, modalities, dimensions and prompts."""
        return Call("GET", "/v1/models", answer=ModelList)

    @route
    def model(name: str) -> Call[ModelDescription]:
        """``GET /v1/models/{name}``."""
        return Call("GET", f"/v1/models/{_name(name)}", answer=ModelDescription)

    @route
    def health() -> Call[Health]:
        """``GET /health``: the service's readiness (``status``; ``errors`` says what is not ready). Not retried:
        a 503 here is an answer."""
        return Call("GET", "/health", answer=Health, accept=frozenset({503}))

    @route
    def metrics() -> Call[str]:
        """``GET /metrics``: one replica's Prometheus metrics, as text."""
        return Call("GET", "/metrics", answer=str)

    @route
    def collections() -> Call[CollectionList]:
        """``GET /v1/collections``."""
        return Call("GET", "/v1/collections", answer=CollectionList)

    @route
    def create_collection(name: str, **options: Any) -> Call[CollectionDescription]:
        """``POST /v1/collections``: ``options`` are the keys of a ``collections:`` entry in serve.yaml (``model``,
        ``fields``, ``bm25``, ``chunking``, ...). An identical collection that exists already is answered as is."""
        return Call("POST", "/v1/collections", body(CollectionConfig, name=name, **options), CollectionDescription)

    @route
    def collection(name: str) -> Call[CollectionDescription]:
        """``GET /v1/collections/{name}``: schema, model, document count (``name`` may be an alias)."""
        return Call("GET", f"/v1/collections/{_name(name)}", answer=CollectionDescription)

    @route
    def drop_collection(name: str) -> Call[CollectionDeleted]:
        """``DELETE /v1/collections/{name}``: the collection and its documents."""
        return Call("DELETE", f"/v1/collections/{_name(name)}", answer=CollectionDeleted)

    @route
    def upsert(collection: str, documents: list[dict[str, Any]]) -> Call[DocumentsUpserted]:
        """``POST /v1/collections/{name}/documents``: embed and write documents by id (a batch with an invalid
        document is refused whole: ``error.document_problems`` says which)."""
        return Call("POST", f"/v1/collections/{_name(collection)}/documents",
                    body(DocumentsRequest, documents=documents), DocumentsUpserted)

    @route
    def document(collection: str, id: str | int, *, pieces: bool = False) -> Call[Document]:
        """``GET /v1/collections/{name}/documents/{id}``: the whole document (ids may hold slashes); ``pieces``:
        with the pieces a chunked collection stores it as."""
        return Call("GET", f"/v1/collections/{_name(collection)}/documents/{quote(str(id), safe='/')}"
                           + ("?pieces=true" if pieces else ""), answer=Document)

    @route
    def delete_documents(collection: str, ids: Iterable[str | int]) -> Call[DocumentsDeleted]:
        """``DELETE /v1/collections/{name}/documents``."""
        return Call("DELETE", f"/v1/collections/{_name(collection)}/documents",
                    body(DeleteDocumentsRequest, ids=list(ids)), DocumentsDeleted)

    @route
    def search(collection: str, query: str | dict[str, str], *,
               mode: Literal["hybrid", "dense", "sparse", "multivector"] | None = None, k: int | None = None,
               filter: str | None = None, **options: Any) -> Call[SearchResults]:
        """``POST /v1/collections/{name}/search``. ``query``: text, or ``{"image": "data:..."}`` /
        ``{"audio": ...}``. ``options``: ``fusion``, ``candidates``, ``output_fields``, ``passages``, ``rerank``
        (a stage: ``{"model", "candidates", "weight"}``), ``model``. Settings left out (None) are the collection's
        search defaults (:meth:`set_search_defaults`); to turn a default rerank stage off, send the body yourself
        with ``"rerank": None`` (:meth:`request`)."""
        return Call("POST", f"/v1/collections/{_name(collection)}/search",
                    body(SearchRequest, query=query, mode=mode, k=k, filter=filter, **options), SearchResults)

    @route
    def set_search_defaults(collection: str, *, mode: Literal["hybrid", "dense", "sparse", "multivector"] | None = None,
                            fusion: dict | None = None, candidates: int | None = None,
                            rerank: dict | None = None) -> Call[CollectionDescription]:
        """``PUT /v1/collections/{name}/search_defaults``: the settings every search of the collection uses where it
        gives none, in place of its config's (settings left out here: the built-in ones). Answers the collection,
        its ``search_defaults`` the ones now in use."""
        return Call("PUT", f"/v1/collections/{_name(collection)}/search_defaults",
                    body(SearchDefaults, mode=mode, fusion=fusion, candidates=candidates, rerank=rerank),
                    CollectionDescription)

    @route
    def remove_search_defaults(collection: str) -> Call[CollectionDescription]:
        """``DELETE /v1/collections/{name}/search_defaults``: the collection's config's search defaults (or the
        built-in settings) are in use again."""
        return Call("DELETE", f"/v1/collections/{_name(collection)}/search_defaults", answer=CollectionDescription)

    @route
    def list_aliases() -> Call[AliasList]:
        """``GET /v1/aliases``."""
        return Call("GET", "/v1/aliases", answer=AliasList)

    @route
    def aliases() -> Call[dict[str, str]]:
        """Alias → the collection it reaches (``GET /v1/aliases``)."""
        return Call("GET", "/v1/aliases", answer=AliasList,
                    finish=lambda answer: {alias["name"]: alias["collection"] for alias in answer["data"]})

    @route
    def point_alias(name: str, collection: str) -> Call[Alias]:
        """``POST /v1/aliases``: create ``name`` pointing at ``collection``, or repoint it there in one step."""
        return Call("POST", "/v1/aliases", body(AliasRequest, name=name, collection=collection), Alias)

    @route
    def drop_alias(name: str) -> Call[AliasDeleted]:
        """``DELETE /v1/aliases/{name}``: the collection it reached stays."""
        return Call("DELETE", f"/v1/aliases/{_name(name)}", answer=AliasDeleted)

    @route
    def reembed(alias: str, model: str, *, evaluation: dict | None = None,
                batch_size: int | None = None) -> Call[ReembedJob]:
        """``POST /v1/collections/{alias}/reembed``: start (or resume) re-embedding the alias's collection with
        ``model``; answers the job (follow it with :meth:`reembed_job`)."""
        return Call("POST", f"/v1/collections/{_name(alias)}/reembed",
                    body(ReembedRequest, model=model, evaluation=evaluation, batch_size=batch_size), ReembedJob)

    @route
    def reembed_jobs(alias: str) -> Call[ReembedJobList]:
        """``GET /v1/collections/{alias}/reembed``: the alias's jobs, oldest first (rollbacks included)."""
        return Call("GET", f"/v1/collections/{_name(alias)}/reembed", answer=ReembedJobList)

    @route
    def reembed_job(job_id: str) -> Call[ReembedJob]:
        """``GET /v1/reembed/{id}``: a job's state, progress, gate and bridge."""
        return Call("GET", f"/v1/reembed/{_name(job_id)}", answer=ReembedJob)

    @route
    def rollback(alias: str, *, batch_size: int | None = None) -> Call[ReembedJob]:
        """``POST /v1/collections/{alias}/rollback``: start pointing ``alias`` back at the collection its last
        re-embedding moved it from."""
        return Call("POST", f"/v1/collections/{_name(alias)}/rollback",
                    body(RollbackRequest, batch_size=batch_size), ReembedJob)

    @route
    def snapshot(collection: str, *, page_rows: int | None = None) -> Call[Snapshot]:
        """``POST /v1/collections/{name}/snapshots``: a consistent snapshot of the collection for a backup (writes
        to it wait while the store copies its rows aside); read it with :meth:`snapshot_page`, then
        :meth:`drop_snapshot`."""
        return Call("POST", f"/v1/collections/{_name(collection)}/snapshots",
                    body(SnapshotRequest, page_rows=page_rows), Snapshot)

    @route
    def snapshot_page(snapshot_id: str, page: int) -> Call[bytes]:
        """``GET /v1/snapshots/{id}/pages/{page}``: one page of rows, an Arrow IPC stream."""
        return Call("GET", f"/v1/snapshots/{_name(snapshot_id)}/pages/{int(page)}", answer=bytes)

    @route
    def drop_snapshot(snapshot_id: str) -> Call[SnapshotDeleted]:
        """``DELETE /v1/snapshots/{id}``."""
        return Call("DELETE", f"/v1/snapshots/{_name(snapshot_id)}", answer=SnapshotDeleted)

    @route
    def restore_rows(collection: str, rows: bytes) -> Call[RowsRestored]:
        """``POST /v1/collections/{name}/rows``: rows as a snapshot page holds them (an Arrow IPC stream), written
        as they are into a collection made from the backup's config."""
        return Call("POST", f"/v1/collections/{_name(collection)}/rows", rows, RowsRestored,
                    content_type=ARROW_STREAM)
