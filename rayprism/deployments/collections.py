"""Collections on the serving replica: validate, embed here, then write or search via the store.

Text is embedded by this replica's own model runners (the same batching as
``/v1/embeddings``); only vectors and rows travel to the store deployment.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray.exceptions import RayActorError

from rayprism.deployments.schemas import DeleteDocumentsRequest, DocumentsRequest, SearchRequest
from rayprism.deployments.service import EmbeddingService
from rayprism.platform.config import CollectionConfig
from rayprism.platform.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    unwrap,
)
from rayprism.platform.store.documents import normalise_id, validate_documents
from rayprism.platform.store.filters import check_filter

DEFAULT_CANDIDATES = 50


class CollectionsService:
    def __init__(self, embeddings: EmbeddingService, store: Any):
        """``store`` is a handle to the store deployment (or anything with the same async methods)."""
        self._embeddings = embeddings
        self._store = store
        self._known: dict[str, CollectionConfig] = {}

    async def _call(self, method: str, *args, **kwargs):
        try:
            return await getattr(self._store, method).remote(*args, **kwargs)
        except RayActorError:
            raise NotReadyError("the store is restarting; retry shortly") from None
        except Exception as error:  # a deployment call wraps the store's own error: raise that one
            original = unwrap(error)
            if original is not None:
                raise original from None
            raise

    async def _call_on(self, name: str, method: str, *args, **kwargs):
        """A call about one collection; a collection gone from the store is forgotten here too."""
        try:
            return await self._call(method, name, *args, **kwargs)
        except NotFoundError:
            self._known.pop(name, None)
            raise

    def model_of(self, name: str) -> str | None:
        known = self._known.get(name)
        return known.model if known else None

    async def collection(self, name: str) -> CollectionConfig:
        """The collection's config, created in Milvus on first use."""
        known = self._known.get(name)
        if known is None:
            config = CollectionConfig.model_validate(await self._call("resolve", name))
            known = await self._ensure(config)
        return known

    async def _ensure(self, config: CollectionConfig) -> CollectionConfig:
        runner = self._embeddings.runner(config.model)
        ensured = CollectionConfig.model_validate(
            await self._call("ensure", config.model_dump(mode="json"), runner.encoder.dimensions)
        )
        self._known[config.name] = ensured
        return ensured

    # --- collections -------------------------------------------------------------------

    async def list(self) -> dict:
        names = await self._call("names")
        return {"object": "list", "data": [await self.describe(name) for name in names]}

    async def describe(self, name: str) -> dict:
        return {"object": "collection", **(await self._call("describe", name))}

    async def create(self, config: CollectionConfig) -> tuple[dict, bool]:
        """(description, created): an identical existing collection is fine, a different one a 409."""
        if config.model not in self._embeddings.runners:
            raise InvalidInputError(
                f"model {config.model!r} is not served here; models: {sorted(self._embeddings.runners)}", param="model"
            )
        try:
            existing = CollectionConfig.model_validate(await self._call("resolve", config.name))
        except NotFoundError:
            existing = None
        if existing is not None:
            wanted = config.model_copy(update={"uri": existing.uri if config.uri is None else config.uri})
            if wanted != existing:
                raise ConflictError(f"collection {config.name!r} exists with a different config: {existing.model_dump()}")
        await self._ensure(config)
        return await self.describe(config.name), existing is None

    async def drop(self, name: str) -> dict:
        self._known.pop(name, None)
        await self._call("drop", name)
        return {"object": "collection.deleted", "name": name, "deleted": True}

    # --- documents ---------------------------------------------------------------------

    async def upsert(self, name: str, request: DocumentsRequest) -> dict:
        limit = self._embeddings.config.server.max_inputs_per_request
        if len(request.documents) > limit:
            raise PayloadTooLargeError(f"too many documents: {len(request.documents)} (at most {limit} per request)")
        config = await self.collection(name)
        rows = validate_documents(config, request.documents)
        embedded = await self._embeddings.runner(config.model).embed([row[config.text_field] for row in rows])
        for row, vector in zip(rows, embedded.vectors):
            row["dense"] = vector
        count = await self._call_on(name, "upsert", rows)
        return {"object": "documents.upserted", "collection": name, "upserted": count, "tokens": sum(embedded.token_counts)}

    async def delete(self, name: str, request: DeleteDocumentsRequest) -> dict:
        config = await self.collection(name)
        ids = []
        for index, value in enumerate(request.ids):
            try:
                ids.append(normalise_id(config, value))
            except ValueError as error:
                raise InvalidInputError(f"ids[{index}] {error}", param=f"ids[{index}]") from None
        count = await self._call_on(name, "delete", ids)
        return {"object": "documents.deleted", "collection": name, "deleted": count}

    async def get_document(self, name: str, document_id: str) -> dict:
        config = await self.collection(name)
        try:
            key = normalise_id(config, int(document_id) if config.id_type == "int64" else document_id)
        except ValueError as error:
            raise InvalidInputError(f"id {error}", param="id") from None
        found = await self._call_on(name, "get", [key], ["id", config.text_field, *config.fields])
        if not found:
            raise NotFoundError(f"document {document_id!r} is not in collection {name!r}")
        return {"object": "document", **found[0]}

    # --- search ------------------------------------------------------------------------

    async def search(self, name: str, request: SearchRequest) -> dict:
        config = await self.collection(name)
        mode = request.mode or ("hybrid" if config.bm25 else "dense")
        if mode != "dense" and not config.bm25:
            raise InvalidInputError(f"mode {mode!r} needs BM25, which collection {name!r} does not have", param="mode")
        readable = ["id", config.text_field, *config.fields]
        output_fields = request.output_fields if request.output_fields is not None else readable[1:]
        for field in output_fields:
            if field not in readable:
                raise InvalidInputError(f"output_fields: unknown field {field!r}; fields are {readable}", param="output_fields")
        filter_expression = check_filter(request.filter, readable) if request.filter else ""
        candidates = request.candidates or max(DEFAULT_CANDIDATES, request.k)
        if candidates < request.k:
            raise InvalidInputError(f"candidates ({candidates}) must be ≥ k ({request.k})", param="candidates")
        dense_vector = sparse_hits = None
        if mode == "hybrid":  # BM25 runs in the store while this replica embeds the query
            dense_vector, sparse_hits = await asyncio.gather(
                self._embed_query(config, request.query),
                self._call_on(name, "sparse_hits", request.query, candidates, filter_expression),
            )
        elif mode == "dense":
            dense_vector = await self._embed_query(config, request.query)
        results = await self._call_on(
            name, "search", mode=mode, k=request.k, dense_vector=dense_vector, query_text=request.query,
            metric=config.index.metric, candidates=candidates, filter=filter_expression,
            fusion=request.fusion.model_dump(), output_fields=output_fields, sparse_hits=sparse_hits,
        )
        return {"object": "search.results", "collection": name, "mode": mode, "results": results}

    async def _embed_query(self, config: CollectionConfig, query: str) -> list[float]:
        embedded = await self._embeddings.runner(config.model).embed([query])
        return embedded.vectors[0]
