"""Response bodies of the HTTP API: each shape defined once, as a TypedDict that handlers build their
bodies with and from which pydantic derives ``/openapi.json`` and ``/docs`` (and so the API fuzzer's
check that every answer fits it).

A TypedDict makes a plain dict, which orjson serialises as fast as any: building and serialising an
embeddings answer of 32 × 384 floats through pydantic models costs 35% more made with
``model_construct``, 13 times as much validated. Calling a TypedDict costs 0.25 µs more than a dict
literal, so the items of the two long lists (an embeddings answer's ``data``, a search's ``results``)
are literals annotated with their type instead. A key a body may leave out is ``NotRequired``; one typed
``T | None`` is always there, null at times. Extra keys are allowed, as in OpenAI's own schema.
A re-embedding job's body is built by a pydantic model instead (:meth:`ReembedJob.of`): from the job's record,
which holds more than callers see.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import NotRequired, TypedDict

from rayprism.platform.models.base import Modality
from rayprism.platform.reembed_record import JobProgress, ReembedRecord, State
from rayprism.platform.store.mirror_memory import MirrorMemory

documented = with_config(ConfigDict(use_attribute_docstrings=True))
"""A body's attribute docstrings become its schema's descriptions."""


class _Response(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)


@documented
class Embedding(TypedDict):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | list[int] | str
    """Floats, or base64 of little-endian float32 with ``encoding_format: base64``; integers with an
    ``output_dtype`` other than ``float`` (int8, uint8, or packed bits: binary, ubinary)."""


@documented
class Usage(TypedDict):
    prompt_tokens: int
    total_tokens: int


@documented
class EmbeddingResponse(TypedDict):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


@documented
class RerankDocument(TypedDict):
    text: str


@documented
class RerankResult(TypedDict):
    index: int
    """The document's position in the request's ``documents``."""
    relevance_score: float
    """The model's score of (query, document), its activation applied (for most rerankers a probability)."""
    document: NotRequired[RerankDocument]
    """With ``return_documents: true``."""


@documented
class RerankResponse(TypedDict):
    """Cohere's, Jina's and TEI's shape: results best first."""

    object: Literal["rerank"]
    model: str
    results: list[RerankResult]
    usage: Usage


@documented
class ModelDescription(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    kind: Literal["embedder", "reranker"]
    state: Literal["loading", "ready", "failed", "idle"]
    """``idle``: in a model group scaled to zero, started by the first request."""
    modality: str
    backend: str
    max_input_tokens: NotRequired[int]
    """Once the model is loaded, as the three keys below."""
    modalities: NotRequired[list[str]]
    """What the model embeds (``text``, ``image``, ``audio``), into one space."""
    dimensions: NotRequired[int]
    """An embedding model's."""
    prompts: NotRequired[list[str]]
    """An embedding model's names accepted as ``prompt_name``."""


@documented
class ModelList(TypedDict):
    object: Literal["list"]
    data: list[ModelDescription]


@documented
class Health(TypedDict):
    status: Literal["ok", "loading", "unavailable", "error"]
    """``error``: start-up failed (a model, a declared collection); ``unavailable``: a part is down and
    coming back (the store restarting)."""
    models: dict[str, str]
    replica: str
    """The serving replica that answered (several may share the port): start-up waits until each has
    said it is ready."""
    errors: NotRequired[dict[str, str]]
    """What keeps the service from being ready, by subject."""
    store: NotRequired[Literal["ok", "unavailable"]]
    """The collections' store, where the service has one."""


@documented
class CollectionDescription(TypedDict):
    object: Literal["collection"]
    name: str
    model: str
    text_field: str
    id_type: Literal["varchar", "int64"]
    fields: dict[str, str]
    bm25: bool
    index: dict[str, Any]
    compression: dict[str, Any] | None
    multivector: dict[str, Any] | None
    modality: Modality
    """What a document's vector is made from."""
    chunking: dict[str, Any] | None
    """A chunked collection's ``max_tokens``, ``overlap_tokens`` and ``markdown``."""
    media_field: str | None
    """An image or audio collection's document key for the item, as configured (null: the modality's name)."""
    search_defaults: dict[str, Any] | None
    """The settings a search of the collection uses where it gives none (``mode``, ``fusion``, ``candidates``,
    ``rerank``): those applied to it (``PUT .../search_defaults``), else its config's; null: the built-in ones."""
    search_defaults_applied: bool
    """Whether ``search_defaults`` were applied to the live collection (then they replace its config's block until
    ``DELETE .../search_defaults`` removes them)."""
    count: int
    dimensions: int | None
    created: bool
    """Whether the collection exists in the store (a declared one is created on first use); in the
    answer to a create: whether that call created it."""
    mirror: NotRequired[MirrorMemory | None]
    """The in-memory mirror that answers searches of a Milvus Lite collection (null until it is built,
    and for a Milvus server; absent until the collection is created)."""


@documented
class CollectionList(TypedDict):
    object: Literal["list"]
    data: list[CollectionDescription]


@documented
class CollectionDeleted(TypedDict):
    object: Literal["collection.deleted"]
    name: str
    deleted: bool


@documented
class Snapshot(TypedDict):
    object: Literal["snapshot"]
    id: str
    """Read its pages with ``GET /v1/snapshots/{id}/pages/{page}``, then ``DELETE /v1/snapshots/{id}``."""
    collection: str
    """The physical collection (an alias named in the request is resolved)."""
    config: dict[str, Any]
    """The collection's config as created: a restore makes the collection from it."""
    dimensions: int
    rows: int
    """Stored rows (a chunked collection's pieces)."""
    documents: int
    pages: int
    aliases: list[str]
    """The aliases that reached the collection at the snapshot."""
    created: float
    """Unix time of the snapshot: every write acknowledged before it is in it, none after it."""


@documented
class SnapshotDeleted(TypedDict):
    object: Literal["snapshot.deleted"]
    id: str
    deleted: bool


@documented
class RowsRestored(TypedDict):
    object: Literal["rows.restored"]
    collection: str
    restored: int
    """Rows written as they were stored (nothing embedded)."""


@documented
class DocumentsUpserted(TypedDict):
    object: Literal["documents.upserted"]
    collection: str
    upserted: int
    """Documents written."""
    unchanged: int
    """Documents already stored with the same text and fields: left as they were, not embedded."""
    tokens: int
    """Tokens embedded (documents with their own ``vector`` cost none)."""


@documented
class DocumentsDeleted(TypedDict):
    object: Literal["documents.deleted"]
    collection: str
    deleted: int


@documented
class DocumentPiece(TypedDict):
    """One piece of a chunked collection's document, as stored and embedded."""

    index: int
    start: int
    """Where the piece starts in the document's text (a character offset)."""
    text: str


@with_config(ConfigDict(use_attribute_docstrings=True, extra="allow"))
class Document(TypedDict):
    """The document's id, its text and its metadata fields."""

    object: Literal["document"]
    id: str | int
    pieces: NotRequired[list[DocumentPiece]]
    """With ``?pieces=true`` (a chunked collection): the pieces it is stored as, in order."""


@documented
class DocumentPage(TypedDict):
    """One page of a collection's documents, in the order of their ids (a chunked collection's: of its documents'
    first pieces' keys, ``{id}#0``). The next page is the one ``after`` this page's ``last_id``."""

    object: Literal["list"]
    collection: str
    total: int
    """Documents in the collection."""
    after: str | int | None
    """The cursor the page was asked for: it holds the documents after this id (null: from ``offset``)."""
    offset: int | None
    """With ``offset``: the position of the page's first document (null with ``after``)."""
    limit: int
    data: list[Document]
    first_id: str | int | None
    last_id: str | int | None
    """The cursor of the next page (``after``); null for an empty page."""
    has_more: bool
    """Whether documents follow this page."""


@documented
class MapPoint(TypedDict):
    id: str | int
    x: float
    y: float
    value: Any
    """The value of the field the map is coloured by (null without ``color_by``)."""
    text: str
    """The start of the document's text (a chunked document's first piece's)."""


@documented
class MapHit(TypedDict):
    id: str | int
    x: float
    y: float
    score: float
    rank: int
    """From 1, best first."""


@documented
class MapQuery(TypedDict):
    text: str
    x: float
    y: float
    """The query's own vector, on the same axes."""
    hits: list[MapHit]
    """The collection's search answer to the query (its default mode), placed on the map."""


@documented
class CollectionMap(TypedDict):
    """A 2-D picture of a collection: a sample of its documents' vectors projected onto their first two
    principal components (PCA)."""

    object: Literal["collection.map"]
    collection: str
    count: int
    """Documents in the collection; ``points`` holds a sample of at most ``sample`` of them."""
    color_by: str | None
    explained_variance: list[float]
    """The share of the sample's variance along x and along y."""
    points: list[MapPoint]
    query: NotRequired[MapQuery]
    """With ``query``: where it and its hits fall."""


@documented
class KeyDescription(TypedDict):
    """The API key a request presented, and what it may do (``GET /v1/keys/me``)."""

    object: Literal["key"]
    name: str | None
    """Null when the service takes no keys."""
    scopes: list[str]
    """``embed``, ``admin``, ``read:GLOB``, ``write:GLOB``; a service without keys lets every caller do
    everything, so ``["admin"]``."""
    keys_required: bool
    """Whether the service asks for a key at all."""


@documented
class Passage(TypedDict):
    index: int
    """The piece's place in its document, from 0."""
    text: str
    score: float
    """The piece's score in the search (fused, or its route's); the hit's score is its best piece's."""
    start: int
    """Where the piece's text starts in the document, in characters."""


@documented
class Hit(TypedDict):
    id: str | int
    score: float
    """The fused (or single route's) score; with a ``rerank`` stage, the reranker's relevance score (its
    ``weight`` below 1: that score fused with ``retrieval_score``)."""
    fields: dict[str, Any]
    retrieval_score: NotRequired[float]
    """With a ``rerank`` stage: the score the hit had before it (fused, or its route's)."""
    rerank_score: NotRequired[float]
    """With a ``rerank`` stage: the reranker's relevance score."""
    passages: NotRequired[list[Passage]]
    """A chunked collection's hits: the document's best pieces (``passages`` of the request), best first."""


@documented
class SearchBridge(TypedDict):
    job: str
    """The re-embedding job whose bridge mapped the query."""
    model: str
    """The model that embedded the query (the job's new model)."""
    method: str


@documented
class SearchResults(TypedDict):
    object: Literal["search.results"]
    collection: str
    mode: str
    results: list[Hit]
    bridge: NotRequired[SearchBridge]
    """Present when the query, embedded by a re-embedding's new model, searched the old index through its bridge."""


@documented
class Alias(TypedDict):
    object: Literal["alias"]
    name: str
    collection: str
    """The physical collection the alias reaches."""
    previous: NotRequired[str | None]
    """In the answer to a repoint: the collection it reached before (null when it was created)."""


@documented
class AliasList(TypedDict):
    object: Literal["list"]
    data: list[Alias]


@documented
class AliasDeleted(TypedDict):
    object: Literal["alias.deleted"]
    name: str
    collection: str
    deleted: bool


class ReembedJob(JobProgress):
    """A re-embedding job as callers see it: its progress (the evaluation asked for, the batch size, the
    worker's name and where the change log started stay inside the record)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)  # always in the body
    object: Literal["reembed.job"]
    state: State
    """``interrupted``: its worker is gone; POST the same reembed again to resume it."""
    changes_pending: int = 0
    """Writes logged since the job began that it has not replayed yet."""
    rolls_back: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """A rollback's: the re-embedding it undoes."""

    @classmethod
    def of(cls, record: ReembedRecord, *, interrupted: bool = False) -> ReembedJob:
        """The body for ``record``: the fields declared here; ``interrupted``: its worker is gone while the record
        still says running."""
        return cls.model_validate({**dict(record), "object": "reembed.job",
                                   "state": "interrupted" if interrupted else record.state})


class ReembedJobList(_Response):
    object: Literal["list"]
    data: list[ReembedJob]
