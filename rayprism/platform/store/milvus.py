"""The collections at one Milvus URI: create or verify, write, read, search.

Written against pymilvus's ``MilvusClient`` only, so a Milvus Lite file and a
Milvus server behave the same. Writes schedule a flush shortly after the last
one: Milvus Lite re-indexes unsealed rows for BM25 on every query, which turns
a 24 ms search into seconds after a bulk load.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Literal

from pymilvus import AnnSearchRequest, MilvusClient, MilvusException, RRFRanker, WeightedRanker

from rayprism.platform.config import CollectionConfig, is_lite_uri
from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError, StoreError
from rayprism.platform.store.layout import Layout, create_collection, read_layout, stored_config

logger = logging.getLogger(__name__)
# pymilvus logs every failed RPC with a traceback; the errors raised here carry the message.
logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)

COLLECTION_NOT_FOUND = 100
COLLECTION_NOT_LOADED = 101

SearchMode = Literal["hybrid", "dense", "sparse"]


class MilvusStore:
    def __init__(self, uri: str, *, flush_after_s: float = 5.0):
        self.uri = uri
        if is_lite_uri(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self._client = MilvusClient(uri)
        self._flush_after_s = flush_after_s
        self._flush_timers: dict[str, threading.Timer] = {}
        self._timers_lock = threading.Lock()

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
        self._client.drop_collection(name)

    # --- documents ---------------------------------------------------------------------

    def upsert(self, name: str, rows: list[dict]) -> int:
        result = self._call(self._client.upsert, name, rows)
        self._schedule_flush(name)
        return int(result["upsert_count"])

    def delete(self, name: str, ids: list) -> int:
        result = self._call(self._client.delete, name, ids=ids)
        self._schedule_flush(name)
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
        dense = AnnSearchRequest(
            data=[dense_vector], anns_field="dense", param={"metric_type": metric}, limit=candidates, expr=filter
        )
        sparse = AnnSearchRequest(
            data=[query_text], anns_field="sparse", param={"metric_type": "BM25"}, limit=candidates, expr=filter
        )
        if mode == "hybrid":
            hits = self._call(
                self._client.hybrid_search, name, [dense, sparse], _ranker(fusion),
                limit=k, output_fields=output_fields, filtered=bool(filter),
            )
        else:
            request = dense if mode == "dense" else sparse
            hits = self._call(
                self._client.search, name, data=request.data, anns_field=request.anns_field,
                search_params=request.param, limit=k, filter=filter, output_fields=output_fields,
                filtered=bool(filter),
            )
        return [{"id": hit["id"], "score": float(hit["distance"]), "fields": hit.get("entity", {})} for hit in hits[0]]

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


def _ranker(fusion: dict | None):
    fusion = fusion or {"type": "rrf"}
    if fusion["type"] == "weighted":
        weights = fusion["weights"]
        return WeightedRanker(weights["dense"], weights["sparse"])
    return RRFRanker(fusion.get("k", 60))


def _is_expression_error(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in ("expr", "unexpected token", "parse", "unknown field", "field"))
