"""Response bodies of the HTTP API, as models for ``/openapi.json`` and ``/docs``.

Handlers build their bodies as plain dicts and serialise them with orjson (the fast
path); these models describe those bodies so clients can be generated and API fuzzers
can check every answer against them. Extra keys are allowed, as in OpenAI's own schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Response(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)


class ErrorDetail(_Response):
    message: str
    type: str
    """``invalid_request_error``, ``rate_limit_error``, ``service_unavailable`` or ``server_error``."""
    param: str | None
    """The request field at fault, when one is."""
    code: str | None
    errors: list[dict[str, Any]] | None = None
    """For a batch of documents refused whole: one ``{index, field, message}`` per problem."""


class ErrorResponse(_Response):
    """Every error, from every route: OpenAI's error shape."""

    error: ErrorDetail


class Embedding(_Response):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str
    """Floats, or base64 of little-endian float32 with ``encoding_format: base64``."""


class Usage(_Response):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(_Response):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


class RerankDocument(_Response):
    text: str


class RerankResult(_Response):
    index: int
    """The document's position in the request's ``documents``."""
    relevance_score: float
    """The model's score of (query, document), its activation applied (for most rerankers a probability)."""
    document: RerankDocument | None = None
    """With ``return_documents: true``."""


class RerankResponse(_Response):
    """Cohere's, Jina's and TEI's shape: results best first."""

    object: Literal["rerank"]
    model: str
    results: list[RerankResult]
    usage: Usage


class ModelDescription(_Response):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    kind: Literal["embedder", "reranker"]
    state: Literal["loading", "ready", "failed", "idle"]
    """``idle``: in a model group scaled to zero, started by the first request."""
    modality: str
    backend: str
    dimensions: int | None = None
    """Once the model is loaded."""
    max_input_tokens: int | None = None
    prompts: list[str] | None = None
    """Names accepted as ``prompt_name``."""
    modalities: list[str] | None = None
    """What the model embeds (``text``, ``image``, ``audio``), into one space."""


class ModelList(_Response):
    object: Literal["list"]
    data: list[ModelDescription]


class Health(_Response):
    status: Literal["ok", "loading", "unavailable", "error"]
    """``error``: start-up failed (a model, a declared collection); ``unavailable``: a part is down and
    coming back (the store restarting)."""
    models: dict[str, str]
    store: Literal["ok", "unavailable"] | None = None
    """The collections' store, where the service has one."""
    errors: dict[str, str] | None = None
    """What keeps the service from being ready, by subject."""
    replica: str
    """The serving replica that answered (several may share the port): start-up waits until each has
    said it is ready."""


class DenseTierMemory(_Response):
    kind: Literal["float32", "binary", "int8"]
    bytes_per_document: int
    """What each document's dense vector costs in memory (float vectors of a compressed tier stay in Milvus)."""


class TokenMemory(_Response):
    kind: Literal["float32"]
    bytes_per_document: int
    """What a multi-vector document's token vectors cost in memory, on average."""


class MirrorMemory(_Response):
    rows: int
    dense: DenseTierMemory | None
    tokens: TokenMemory | None = None
    """A multi-vector collection's token vectors, kept for the MaxSim rerank."""


class CollectionDescription(_Response):
    object: Literal["collection"]
    name: str
    model: str
    text_field: str
    id_type: Literal["varchar", "int64"]
    fields: dict[str, str]
    bm25: bool
    index: dict[str, Any]
    compression: dict[str, Any] | None = None
    multivector: dict[str, Any] | None = None
    count: int
    dimensions: int | None
    created: bool
    """Whether the collection exists in the store (a declared one is created on first use); in the
    answer to a create: whether that call created it."""
    mirror: MirrorMemory | None = None
    """The in-memory mirror that answers searches of a Milvus Lite collection (absent until it is
    built, and for a Milvus server)."""


class CollectionList(_Response):
    object: Literal["list"]
    data: list[CollectionDescription]


class CollectionDeleted(_Response):
    object: Literal["collection.deleted"]
    name: str
    deleted: bool


class DocumentsUpserted(_Response):
    object: Literal["documents.upserted"]
    collection: str
    upserted: int
    """Documents written."""
    unchanged: int
    """Documents already stored with the same text and fields: left as they were, not embedded."""
    tokens: int
    """Tokens embedded (documents with their own ``vector`` cost none)."""


class DocumentsDeleted(_Response):
    object: Literal["documents.deleted"]
    collection: str
    deleted: int


class Document(_Response):
    """The document's id, its text and its metadata fields."""

    model_config = ConfigDict(extra="allow")
    object: Literal["document"]
    id: str | int


class Hit(_Response):
    id: str | int
    score: float
    """The fused (or single route's) score; with a ``rerank`` stage, the reranker's relevance score (its
    ``weight`` below 1: that score fused with ``retrieval_score``)."""
    fields: dict[str, Any]
    retrieval_score: float | None = None
    """With a ``rerank`` stage: the score the hit had before it (fused, or its route's)."""
    rerank_score: float | None = None
    """With a ``rerank`` stage: the reranker's relevance score."""


class SearchBridge(_Response):
    job: str
    """The re-embedding job whose bridge mapped the query."""
    model: str
    """The model that embedded the query (the job's new model)."""
    method: str


class SearchResults(_Response):
    object: Literal["search.results"]
    collection: str
    mode: str
    results: list[Hit]
    bridge: SearchBridge | None = None
    """Present when the query, embedded by a re-embedding's new model, searched the old index through its bridge."""


class Alias(_Response):
    object: Literal["alias"]
    name: str
    collection: str
    """The physical collection the alias reaches."""
    previous: str | None = None
    """In the answer to a repoint: the collection it reached before (None when it was created)."""


class AliasList(_Response):
    object: Literal["list"]
    data: list[Alias]


class AliasDeleted(_Response):
    object: Literal["alias.deleted"]
    name: str
    collection: str
    deleted: bool


class ReembedJob(_Response):
    object: Literal["reembed.job"]
    id: str
    alias: str
    source: str
    """The physical collection read (the one the alias reached when the job began)."""
    target: str
    """The physical collection written, where the alias moves on success."""
    model: str
    """The model the target is embedded by."""
    source_model: str
    direction: Literal["forward", "rollback"]
    state: Literal["running", "interrupted", "done", "refused", "failed"]
    """``interrupted``: its worker is gone; POST the same reembed again to resume it."""
    phase: str
    """copying, following (replaying writes made meanwhile), evaluating, swapping, swapped or evaluated."""
    documents_total: int | None
    documents_done: int
    documents_embedded: int
    """Documents embedded by the new model over every run (copies and replayed writes)."""
    embedded_this_run: int
    changes_applied: int
    changes_pending: int = 0
    """Writes logged since the job began that it has not replayed yet."""
    gate: dict[str, Any] | None
    """The evaluation: metric, old and new score, threshold, passed."""
    bridge: dict[str, Any] | None
    """A linear map from the new space to the old, fitted on sampled documents, and its quality; until the
    swap it answers searches that ask for the new model (``"model"`` in the search body)."""
    error: str | None
    runs: int
    created: float
    updated: float


class ReembedJobList(_Response):
    object: Literal["list"]
    data: list[ReembedJob]
