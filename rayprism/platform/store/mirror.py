"""In-memory mirrors of Milvus Lite collections, and their lifecycle.

Milvus Lite searches in Python, row by row: tens of milliseconds per query on 10k rows,
for dense and for BM25 alike. The store process is a Lite file's only writer (the file
is locked to it), so copies it keeps up to date with its own upserts and deletes stay
exact. A :class:`Mirror` holds one collection's routes (:mod:`~rayprism.platform.store.routes`);
:class:`MirrorManager` builds mirrors in the background, replays writes that raced a
build, and gives up on collections that outgrow the row limit.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pymilvus import MilvusClient

from rayprism.platform.config import VECTOR_FIELDS
from rayprism.platform.store.filter_compiler import Columns, FilterError, Unsupported, filter_mask
from rayprism.platform.store.layout import Layout
from rayprism.platform.store.routes import Bm25Route, DenseRoute, Hits, RowTable

logger = logging.getLogger(__name__)

DENSE, SPARSE = VECTOR_FIELDS
RETRY_S = 60.0
"""After a failed or declined build, the next attempt waits this long."""


class _WithoutAllocTimestampNoise(logging.Filter):
    """Milvus Lite's in-process server lacks AllocTimestamp; pymilvus's query iterator asks,
    falls back by itself, and the server logs a traceback each time. Keep the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Method not implemented" not in record.getMessage()


logging.getLogger("grpc._server").addFilter(_WithoutAllocTimestampNoise())


class Mirror:
    """One collection's routes over one row table: ``dense`` (a FLAT cosine/IP index) and ``sparse``
    (BM25), and the filterable fields as columns, so a filter becomes a mask over the same rows."""

    def __init__(self, layout: Layout, bm25_scoring: dict | None):
        """``bm25_scoring``: :class:`Bm25Route`'s arguments (see :func:`lite_bm25_scoring`), None without BM25."""
        self.rows = RowTable()
        self.text_field = layout.text_field
        self.routes: dict[str, DenseRoute | Bm25Route] = {}
        if layout.index_type == "FLAT" and layout.metric in ("COSINE", "IP"):
            self.routes[DENSE] = DenseRoute(self.rows, layout.dimensions, normalise=layout.metric == "COSINE")
        if bm25_scoring is not None:
            self.routes[SPARSE] = Bm25Route(self.rows, **bm25_scoring)
        self.columns = Columns({"id": layout.id_type, layout.text_field: "varchar", **layout.fields})

    def __len__(self) -> int:
        return len(self.rows)

    def _sources(self) -> dict[str, str]:
        """The stored field each route is built from."""
        return {DENSE: DENSE, SPARSE: self.text_field}

    @property
    def output_fields(self) -> list[str]:
        fields = [name for name in self.columns.field_types if name != "id"]
        return list(dict.fromkeys([*(self._sources()[name] for name in self.routes), *fields]))

    def upsert(self, records: list[dict]) -> None:
        sources = self._sources()
        prepared = {name: route.prepare([record[sources[name]] for record in records])
                    for name, route in self.routes.items()}
        with self.rows.lock:
            rows, retired = self.rows.assign([record["id"] for record in records])
            for name, route in self.routes.items():
                route.retire(retired)
                route.write(rows, prepared[name])
            self.columns.write(rows, records)
            self._compact_if_worth_it()

    def delete(self, ids: list) -> None:
        with self.rows.lock:
            retired = self.rows.remove(ids)
            for route in self.routes.values():
                route.retire(retired)
            self._compact_if_worth_it()

    def _compact_if_worth_it(self) -> None:
        if self.rows.worth_compacting():
            keep = self.rows.compact()
            for route in self.routes.values():
                route.compact(keep)
            self.columns = self.columns.take(keep)

    def route(self, name: str) -> DenseRoute | Bm25Route | None:
        return self.routes.get(name)

    def hits(self, route: str, query: Any, k: int, filter: str = "") -> Hits | None:
        """The route's hits among the rows ``filter`` matches, or None when the mirror cannot answer:
        no such route, or a filter it does not evaluate (then Milvus evaluates it, and is the one
        to refuse a malformed one, so the answer never depends on whether a mirror is built)."""
        found = self.routes.get(route)
        if found is None:
            return None
        with self.rows.lock:  # the mask and the search see the same rows
            try:
                allowed = filter_mask(filter, self.columns) if filter else None
            except (Unsupported, FilterError):
                return None
            return found.top_k(query, k, allowed)


@dataclass
class _Slot:
    mirror: Mirror | None = None
    building: bool = False
    retry_at: float = 0.0
    pending: list = field(default_factory=list)
    """Writes made while building, replayed onto the finished mirror."""


class MirrorManager:
    """The mirrors of one Milvus Lite file: built on first use in a background thread, fed by
    the store's writes, dropped when a collection outgrows ``max_rows`` (Milvus searches it then)."""

    def __init__(self, client: MilvusClient, max_rows: int, *, layout: Callable[[str], Layout],
                 count: Callable[[str], int]):
        self._client = client
        self._max_rows = max_rows
        self._layout = layout
        self._count = count
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()

    def mirror(self, name: str) -> Mirror | None:
        """The collection's mirror when it is ready (None: search Milvus); starts a build when there is none."""
        if not self._max_rows:
            return None
        with self._lock:
            slot = self._slots.setdefault(name, _Slot())
            if slot.mirror is None and not slot.building and time.monotonic() >= slot.retry_at:
                slot.building = True
                threading.Thread(target=self._build, args=(name, slot), daemon=True).start()
            return slot.mirror

    def hits(self, name: str, route: str, query: Any, k: int, filter: str = "") -> Hits | None:
        """Hits from the mirror, or None when the caller must ask Milvus."""
        mirror = self.mirror(name)
        return mirror.hits(route, query, k, filter) if mirror is not None else None

    def upsert(self, name: str, records: list[dict]) -> None:
        self._write(name, "upsert", records)

    def delete(self, name: str, ids: list) -> None:
        self._write(name, "delete", ids)

    def drop(self, name: str) -> None:
        with self._lock:
            self._slots.pop(name, None)

    def ready(self, name: str) -> bool:
        """Whether the collection's mirror is built; starts a build when there is none."""
        return self.mirror(name) is not None

    def _write(self, name: str, operation: str, payload: list) -> None:
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                return
            if slot.building:
                slot.pending.append((operation, payload))
            elif slot.mirror is not None:
                _apply(slot.mirror, operation, payload)
                if len(slot.mirror) > self._max_rows:
                    slot.mirror = None
                    slot.retry_at = time.monotonic() + RETRY_S

    def _build(self, name: str, slot: _Slot) -> None:
        try:
            mirror = self._filled_mirror(name)
        except Exception:
            logger.exception("building the in-memory mirror of %r failed; searching in Milvus", name)
            mirror = None
        with self._lock:
            slot.building = False
            if mirror is not None:
                for operation, payload in slot.pending:
                    _apply(mirror, operation, payload)
                slot.mirror = mirror
            else:
                slot.retry_at = time.monotonic() + RETRY_S
            slot.pending.clear()
        if mirror is not None:
            logger.info("in-memory mirror of %r ready: %d rows", name, len(mirror))

    def _filled_mirror(self, name: str) -> Mirror | None:
        layout = self._layout(name)
        self._client.load_collection(name)  # after a restart collections come back released
        if self._count(name) > self._max_rows:
            return None
        return build_mirror(self._client, name, layout)


def build_mirror(client: MilvusClient, name: str, layout: Layout) -> Mirror | None:
    """A loaded collection's mirror, filled from Milvus; None if nothing in it is worth mirroring
    (only FLAT cosine/IP vectors, exact either way, and BM25 text are)."""
    mirror = Mirror(layout, lite_bm25_scoring(client, name, layout.text_field) if layout.bm25 else None)
    if not mirror.routes:
        return None
    iterator = client.query_iterator(name, batch_size=4096, output_fields=mirror.output_fields)
    while records := iterator.next():
        mirror.upsert(records)
    iterator.close()
    return mirror


def _apply(mirror: Mirror, operation: str, payload: list) -> None:
    mirror.upsert(payload) if operation == "upsert" else mirror.delete(payload)


def lite_bm25_scoring(client: MilvusClient, name: str, text_field: str) -> dict:
    """The analyzer and BM25 parameters Milvus Lite uses for ``name``: Bm25Route's arguments."""
    from milvus_lite.analyzer import compute_tf, create_analyzer

    text = next(f for f in client.describe_collection(name)["fields"] if f["name"] == text_field)
    analyzer_params = text.get("params", {}).get("analyzer_params")
    if isinstance(analyzer_params, str):
        analyzer_params = json.loads(analyzer_params)
    analyzer = create_analyzer(analyzer_params)
    index_params = client.describe_index(name, SPARSE)
    return {
        "analyze": lambda value: compute_tf(analyzer.analyze(value)),
        "k1": float(index_params.get("bm25_k1", 1.5)),  # Milvus Lite's defaults
        "b": float(index_params.get("bm25_b", 0.75)),
    }

