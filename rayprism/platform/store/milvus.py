"""The collections at one Milvus URI: create or verify, write, read, search.

Written against pymilvus's ``MilvusClient`` only, so a Milvus Lite file and a
Milvus server behave the same (a Lite store may add an in-memory mirror for unfiltered
searches). Writes schedule a flush shortly after the last one: Milvus Lite re-indexes
unsealed rows for BM25 on every query, which turns a 24 ms search into seconds after a
bulk load.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pymilvus import MilvusClient, MilvusException

from rayprism.platform.config import CollectionConfig, is_lite_uri
from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError, StoreError
from rayprism.platform.store.bm25_cache import Bm25Cache
from rayprism.platform.store.dense_cache import DenseCache
from rayprism.platform.store.fusion import Hits, fuse
from rayprism.platform.store.layout import Layout, create_collection, read_layout, stored_config
from rayprism.platform.store.mirror import Mirror, lite_bm25_scoring

logger = logging.getLogger(__name__)
# pymilvus logs every failed RPC with a traceback; the errors raised here carry the message.
logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)

COLLECTION_NOT_FOUND = 100
COLLECTION_NOT_LOADED = 101
MIRROR_RETRY_S = 60.0

SearchMode = Literal["hybrid", "dense", "sparse"]


class MilvusStore:
    def __init__(self, uri: str, *, flush_after_s: float = 5.0, cache_max_rows: int = 0):
        """``cache_max_rows`` > 0 mirrors collections up to that size in memory for unfiltered
        searches (:mod:`~rayprism.platform.store.mirror`; only sound where this process is the
        sole writer, as with a Milvus Lite file)."""
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
        self._cache_max_rows = cache_max_rows
        self._mirrors: dict[str, _MirrorState] = {}
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
            self._mirrors.pop(name, None)
        self._client.drop_collection(name)

    # --- documents ---------------------------------------------------------------------

    def upsert(self, name: str, rows: list[dict]) -> int:
        result = self._call(self._client.upsert, name, rows)
        self._schedule_flush(name)
        self._mirror_write(name, "upsert", rows)
        return int(result["upsert_count"])

    def delete(self, name: str, ids: list) -> int:
        result = self._call(self._client.delete, name, ids=ids)
        self._schedule_flush(name)
        self._mirror_write(name, "delete", ids)
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
        sparse_hits: Hits | None = None,
    ) -> list[dict]:
        """Hits best first, ``score`` higher is better in every mode.

        Hybrid search runs the dense and the sparse search (``candidates`` each) and fuses
        them here (:mod:`~rayprism.platform.store.fusion`), the same way on Lite and on a
        server. ``sparse_hits`` from an earlier :meth:`sparse_hits` call stand in for the
        sparse search (callers start it while they embed the query). Fields are fetched
        once, for the final hits only.
        """
        limit = candidates if mode == "hybrid" else k
        dense = self._dense_hits(name, dense_vector, limit, metric, filter) if mode != "sparse" else []
        if mode == "dense":
            sparse = []
        elif sparse_hits is not None:
            sparse = [(doc_id, score) for doc_id, score in sparse_hits]
        else:
            sparse = self.sparse_hits(name, query_text, limit, filter)
        if mode == "hybrid":
            hits = fuse(dense, sparse, fusion)[:k]
        else:
            hits = dense or sparse
        fields = self._fields(name, [doc_id for doc_id, _ in hits], output_fields) if output_fields else {}
        return [{"id": doc_id, "score": score, "fields": fields.get(doc_id, {})} for doc_id, score in hits]

    def _dense_hits(self, name: str, vector, limit: int, metric: str, filter: str) -> Hits:
        mirror = None if filter else self._mirror(name)
        if mirror is not None and mirror.dense is not None:
            return mirror.dense.top_k(vector, limit)
        results = self._call(
            self._client.search, name, data=[vector], anns_field="dense", limit=limit,
            search_params={"metric_type": metric}, filter=filter, filtered=bool(filter),
        )
        sign = -1.0 if metric == "L2" else 1.0  # L2 is a distance: flip it so higher is better
        return [(hit["id"], sign * float(hit["distance"])) for hit in results[0]]

    def sparse_hits(self, name: str, text: str, limit: int, filter: str = "") -> Hits:
        """BM25 hits as ``(id, score)``, best first."""
        mirror = None if filter else self._mirror(name)
        if mirror is not None and mirror.bm25 is not None:
            return mirror.bm25.top_k(text, limit)
        results = self._call(
            self._client.search, name, data=[text], anns_field="sparse", limit=limit,
            search_params={"metric_type": "BM25"}, filter=filter, filtered=bool(filter),
        )
        # BM25 scores are positive; Milvus Lite reports them negated, as a distance.
        return [(hit["id"], abs(float(hit["distance"]))) for hit in results[0]]

    def _fields(self, name: str, ids: list, output_fields: list[str]) -> dict:
        found = self._call(self._client.get, name, ids=ids, output_fields=output_fields) if ids else []
        return {row["id"]: {field: row.get(field) for field in output_fields} for row in found}

    # --- in-memory mirror (Milvus Lite) ------------------------------------------------

    def _mirror(self, name: str) -> Mirror | None:
        """The collection's in-memory mirror when ready; starts building one when there is none."""
        if not self._cache_max_rows:
            return None
        with self._cache_lock:
            state = self._mirrors.setdefault(name, _MirrorState())
            if state.mirror is None and not state.building and time.monotonic() >= state.retry_at:
                state.building = True
                threading.Thread(target=self._build_mirror, args=(name, state), daemon=True).start()
            return state.mirror

    def _build_mirror(self, name: str, state: _MirrorState) -> None:
        try:
            mirror = self._empty_mirror(name)
            if mirror is not None:
                fields = (["dense"] if mirror.dense is not None else []) + (
                    [mirror.text_field] if mirror.bm25 is not None else [])
                iterator = self._client.query_iterator(name, batch_size=4096, output_fields=fields)
                while rows := iterator.next():
                    mirror.upsert(rows)
                iterator.close()
        except Exception:
            logger.exception("building the in-memory mirror of %r failed; searching in Milvus", name)
            mirror = None
        with self._cache_lock:
            state.building = False
            if mirror is not None:
                for operation, payload in state.pending:  # writes that raced the build
                    mirror.upsert(payload) if operation == "upsert" else mirror.delete(payload)
                state.mirror = mirror
            else:
                state.retry_at = time.monotonic() + MIRROR_RETRY_S
            state.pending.clear()
        if mirror is not None:
            logger.info("in-memory mirror of %r ready: %d rows", name, mirror.rows)

    def _empty_mirror(self, name: str) -> Mirror | None:
        """What is worth mirroring: FLAT cosine/IP vectors (exact either way) and BM25 text."""
        layout = self.layout(name)
        self._client.load_collection(name)  # after a restart collections come back released
        if self.count(name) > self._cache_max_rows:
            return None  # big collections stay in Milvus
        dense = None
        if layout.index_type == "FLAT" and layout.metric in ("COSINE", "IP"):
            dense = DenseCache(layout.dimensions, normalise=layout.metric == "COSINE")
        bm25 = Bm25Cache(**lite_bm25_scoring(self._client, name, layout.text_field)) if layout.bm25 else None
        if dense is None and bm25 is None:
            return None
        return Mirror(dense, bm25, layout.text_field)

    def _mirror_write(self, name: str, operation: str, payload: list) -> None:
        with self._cache_lock:
            state = self._mirrors.get(name)
            if state is None:
                return
            if state.building:
                state.pending.append((operation, payload))
            elif state.mirror is not None:
                state.mirror.upsert(payload) if operation == "upsert" else state.mirror.delete(payload)
                if state.mirror.rows > self._cache_max_rows:  # outgrew the limit: Milvus searches it
                    state.mirror = None
                    state.retry_at = time.monotonic() + MIRROR_RETRY_S

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
class _MirrorState:
    mirror: Mirror | None = None
    building: bool = False
    retry_at: float = 0.0
    """After a failed or declined build, the next attempt waits until then."""
    pending: list = field(default_factory=list)
    """Writes made while building, replayed onto the finished mirror."""


def _is_expression_error(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in ("expr", "unexpected token", "parse", "unknown field", "field"))
