"""The collections at one Milvus URI: create or verify, write, read, search.

Written against pymilvus's ``MilvusClient`` only, so a Milvus Lite file and a
Milvus server behave the same (a Lite store may add an in-memory dense cache). Writes schedule a flush shortly after the last
one: Milvus Lite re-indexes unsealed rows for BM25 on every query, which turns
a 24 ms search into seconds after a bulk load.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pymilvus import MilvusClient, MilvusException

from rayprism.platform.config import CollectionConfig, is_lite_uri
from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError, StoreError
from rayprism.platform.store.dense_cache import DenseCache
from rayprism.platform.store.fusion import Hits, fuse
from rayprism.platform.store.layout import Layout, create_collection, read_layout, stored_config

logger = logging.getLogger(__name__)
# pymilvus logs every failed RPC with a traceback; the errors raised here carry the message.
logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)

COLLECTION_NOT_FOUND = 100
COLLECTION_NOT_LOADED = 101

SearchMode = Literal["hybrid", "dense", "sparse"]


class MilvusStore:
    def __init__(self, uri: str, *, flush_after_s: float = 5.0, dense_cache_max_rows: int = 0):
        """``dense_cache_max_rows`` > 0 keeps an exact in-memory copy of the dense vectors of
        FLAT-indexed collections up to that size (only sound where this process is the sole
        writer, as with a Milvus Lite file)."""
        self.uri = uri
        if is_lite_uri(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client = MilvusClient(uri)
        except MilvusException as error:
            hint = (" A Milvus Lite file is held by the one process that opened it until that process exits:"
                    " is a `rayprism serve` or `rayprism embed` using it?") if is_lite_uri(uri) else ""
            raise StoreError(f"cannot open Milvus at {uri}: {getattr(error, 'message', error)}.{hint}") from None
        self._flush_after_s = flush_after_s
        self._flush_timers: dict[str, threading.Timer] = {}
        self._timers_lock = threading.Lock()
        self._dense_cache_max_rows = dense_cache_max_rows
        self._caches: dict[str, _CacheState] = {}
        self._cache_lock = threading.Lock()

    # --- collections -------------------------------------------------------------------

    def ensure(self, config: CollectionConfig, dimensions: int) -> Layout:
        """Create the collection, or check that the existing one matches ``config``."""
        wanted = Layout.from_config(config, dimensions)
        if not self._client.has_collection(config.name):
            create_collection(self._client, config, dimensions)
            return wanted
        differences = wanted.differences(self.layout(config.name))
        if differences:
            raise ConflictError(
                f"collection {config.name!r} in {self.uri} exists with a different schema: " + "; ".join(differences)
            )
        return wanted

    def names(self) -> list[str]:
        return sorted(self._client.list_collections())

    def exists(self, name: str) -> bool:
        return self._client.has_collection(name)

    def _describe(self, name: str) -> dict:
        if not self._client.has_collection(name):
            raise NotFoundError(f"collection {name!r} does not exist in {self.uri}")
        return self._client.describe_collection(name)

    def layout(self, name: str) -> Layout:
        return read_layout(self._client, name, self._describe(name))

    def config_of(self, name: str) -> CollectionConfig | None:
        """The config a collection was created with, or None if rayprism did not create it."""
        return stored_config(self._describe(name))

    def count(self, name: str) -> int:
        rows = self._call(self._client.query, name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def drop(self, name: str) -> None:
        self._describe(name)
        self._cancel_flush(name)
        with self._cache_lock:
            self._caches.pop(name, None)
        self._client.drop_collection(name)

    # --- documents ---------------------------------------------------------------------

    def upsert(self, name: str, rows: list[dict]) -> int:
        result = self._call(self._client.upsert, name, rows)
        self._schedule_flush(name)
        self._cache_write(name, "upsert", [row["id"] for row in rows], np.array([row["dense"] for row in rows]))
        return int(result["upsert_count"])

    def delete(self, name: str, ids: list) -> int:
        result = self._call(self._client.delete, name, ids=ids)
        self._schedule_flush(name)
        self._cache_write(name, "delete", ids)
        return int(result["delete_count"]) if isinstance(result, dict) else len(result)

    def get(self, name: str, ids: list, output_fields: list[str]) -> list[dict]:
        return list(self._call(self._client.get, name, ids=ids, output_fields=output_fields))

    def flush(self, name: str) -> None:
        self._cancel_flush(name)
        if self._client.has_collection(name):
            self._client.flush(name)

    # --- search ------------------------------------------------------------------------

    def search(
        self,
        name: str,
        *,
        mode: SearchMode,
        k: int,
        dense_vector: list[float] | None = None,
        query_text: str | None = None,
        metric: str = "COSINE",
        candidates: int = 50,
        filter: str = "",
        fusion: dict | None = None,
        output_fields: list[str] | None = None,
    ) -> list[dict]:
        """Hits best first, ``score`` higher is better in every mode.

        Hybrid search runs the dense and the sparse search (``candidates`` each) and fuses
        them here (:mod:`~rayprism.platform.store.fusion`), the same way on Lite and on a
        server. Fields are fetched once, for the final hits only.
        """
        limit = candidates if mode == "hybrid" else k
        dense = self._dense_hits(name, dense_vector, limit, metric, filter) if mode != "sparse" else []
        sparse = self._sparse_hits(name, query_text, limit, filter) if mode != "dense" else []
        if mode == "hybrid":
            hits = fuse(dense, sparse, fusion)[:k]
        else:
            hits = dense or sparse
        fields = self._fields(name, [doc_id for doc_id, _ in hits], output_fields) if output_fields else {}
        return [{"id": doc_id, "score": score, "fields": fields.get(doc_id, {})} for doc_id, score in hits]

    def _dense_hits(self, name: str, vector, limit: int, metric: str, filter: str) -> Hits:
        cache = None if filter else self._dense_cache(name, metric)
        if cache is not None:
            return cache.top_k(vector, limit)
        results = self._call(
            self._client.search, name, data=[vector], anns_field="dense", limit=limit,
            search_params={"metric_type": metric}, filter=filter, filtered=bool(filter),
        )
        sign = -1.0 if metric == "L2" else 1.0  # L2 is a distance: flip it so higher is better
        return [(hit["id"], sign * float(hit["distance"])) for hit in results[0]]

    def _sparse_hits(self, name: str, text: str, limit: int, filter: str) -> Hits:
        results = self._call(
            self._client.search, name, data=[text], anns_field="sparse", limit=limit,
            search_params={"metric_type": "BM25"}, filter=filter, filtered=bool(filter),
        )
        # BM25 scores are positive; Milvus Lite reports them negated, as a distance.
        return [(hit["id"], abs(float(hit["distance"]))) for hit in results[0]]

    def _fields(self, name: str, ids: list, output_fields: list[str]) -> dict:
        found = self._call(self._client.get, name, ids=ids, output_fields=output_fields) if ids else []
        return {row["id"]: {field: row.get(field) for field in output_fields} for row in found}

    # --- dense cache (Milvus Lite) ----------------------------------------------------

    def _dense_cache(self, name: str, metric: str) -> DenseCache | None:
        """The collection's in-memory copy when ready; the first call starts building it."""
        if not self._dense_cache_max_rows or metric not in ("COSINE", "IP"):
            return None
        with self._cache_lock:
            state = self._caches.get(name)
            if state is None:
                self._caches[name] = state = _CacheState()
                threading.Thread(target=self._build_cache, args=(name, metric), daemon=True).start()
            return state.cache

    def _build_cache(self, name: str, metric: str) -> None:
        try:
            layout = self.layout(name)
            if layout.index_type != "FLAT" or self.count(name) > self._dense_cache_max_rows:
                return  # approximate indexes keep their own semantics; big collections stay in Milvus

            def batches():
                iterator = self._client.query_iterator(name, batch_size=4096, output_fields=["dense"])
                while rows := iterator.next():
                    yield rows
                iterator.close()

            cache = DenseCache.build(layout.dimensions, metric == "COSINE", batches)
        except Exception:
            logger.exception("building the dense cache of %r failed; searching in Milvus", name)
            return
        with self._cache_lock:
            state = self._caches.get(name)
            if state is None:  # dropped meanwhile
                return
            for operation, ids, vectors in state.pending:  # writes that raced the build
                cache.upsert(ids, vectors) if operation == "upsert" else cache.delete(ids)
            state.pending.clear()
            state.cache = cache
        logger.info("dense cache of %r ready: %d vectors", name, len(cache))

    def _cache_write(self, name: str, operation: str, ids: list, vectors=None) -> None:
        with self._cache_lock:
            state = self._caches.get(name)
            if state is None:
                return
            if state.cache is None:
                state.pending.append((operation, ids, vectors))
            elif operation == "upsert":
                state.cache.upsert(ids, vectors)
            else:
                state.cache.delete(ids)

    # --- plumbing ----------------------------------------------------------------------

    def _call(self, method, name: str, *args, filtered: bool = False, **kwargs) -> Any:
        """Run a client call, turning Milvus failures into errors that say whose fault they are."""
        try:
            try:
                return method(name, *args, **kwargs)
            except MilvusException as error:
                if getattr(error, "code", None) != COLLECTION_NOT_LOADED:
                    raise
                self._client.load_collection(name)  # collections come back released after a restart
                return method(name, *args, **kwargs)
        except MilvusException as error:
            message = getattr(error, "message", str(error))
            if getattr(error, "code", None) == COLLECTION_NOT_FOUND:
                raise NotFoundError(f"collection {name!r} does not exist in {self.uri}") from None
            if filtered and _is_expression_error(message):
                raise InvalidInputError(f"filter: {message}", param="filter") from None
            raise StoreError(f"Milvus at {self.uri} failed: {message}") from error

    def _schedule_flush(self, name: str) -> None:
        with self._timers_lock:
            pending = self._flush_timers.pop(name, None)
            if pending is not None:
                pending.cancel()
            timer = threading.Timer(self._flush_after_s, self._flush_quietly, args=(name,))
            timer.daemon = True
            self._flush_timers[name] = timer
            timer.start()

    def _cancel_flush(self, name: str) -> None:
        with self._timers_lock:
            pending = self._flush_timers.pop(name, None)
        if pending is not None:
            pending.cancel()

    def _flush_quietly(self, name: str) -> None:
        try:
            self.flush(name)
        except Exception:  # a failed background flush must not kill the timer thread silently
            logger.exception("background flush of %r failed", name)

    def close(self) -> None:
        with self._timers_lock:
            names = list(self._flush_timers)
        for name in names:
            self.flush(name)
        self._client.close()


@dataclass
class _CacheState:
    cache: DenseCache | None = None
    pending: list = field(default_factory=list)


def _is_expression_error(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in ("expr", "unexpected token", "parse", "unknown field", "field"))
