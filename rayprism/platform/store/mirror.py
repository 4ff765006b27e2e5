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
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from pymilvus import MilvusClient

from rayprism.platform.config import DENSE_FIELD, DOCUMENT_ID_FIELD, PIECE_INDEX_FIELD, SPARSE_FIELD
from rayprism.platform.store.compressed import CodeFiles, CodeRoute, FetchVectors, SavedCodes
from rayprism.platform.store.filter_compiler import Columns, FilterError, Unsupported, filter_mask
from rayprism.platform.store.flushing import FlushGate
from rayprism.platform.store.layout import Layout
from rayprism.platform.store.mirror_loading import PAGE_ROWS, collection_keys, rows_by_key
from rayprism.platform.store.mirror_memory import DenseTierMemory, MirrorMemory, TokenMemory
from rayprism.platform.store.pieces import is_opening
from rayprism.platform.store.routes import Bm25Route, DenseRoute, RowTable
from rayprism.platform.store.token_files import TokenFiles
from rayprism.platform.store.tokens import TOKENS_KEY, TokenRoute
from rayprism.platform.store.vocabulary import Hits

logger = logging.getLogger(__name__)

RETRY_S = 60.0
"""After a failed or declined build, the next attempt waits this long."""


class _WithoutAllocTimestampNoise(logging.Filter):
    """Milvus Lite's in-process server lacks AllocTimestamp; pymilvus's query iterator asks,
    falls back by itself, and the server logs a traceback each time. Keep the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Method not implemented" not in record.getMessage()


logging.getLogger("grpc._server").addFilter(_WithoutAllocTimestampNoise())


class Mirror:
    """One collection's routes over one row table: ``dense`` (a FLAT cosine/IP index, or the codes of a
    compressed tier), ``sparse`` (BM25) and ``tokens`` (a multi-vector collection's token vectors, for
    reranking), and the filterable fields as columns, so a filter becomes a mask over the same rows."""

    def __init__(self, layout: Layout, bm25_scoring: dict | None, fetch_vectors: FetchVectors, *,
                 capacity: int = 1024):
        """``bm25_scoring``: :class:`Bm25Route`'s arguments (see :func:`lite_bm25_scoring`), None without BM25;
        ``fetch_vectors``: float vectors from Milvus, for rescoring a compressed tier's candidates;
        ``capacity``: rows the arrays hold before they grow (a build knows its count: no doubling, no slack)."""
        self.rows = RowTable(capacity)
        self.text_field = layout.text_field
        self.routes: dict[str, DenseRoute | CodeRoute | Bm25Route | TokenRoute] = {}
        normalise = layout.metric == "COSINE"
        if layout.compression is not None:
            self.routes[DENSE_FIELD] = CodeRoute(self.rows, layout.dimensions, layout.compression["type"],
                                           layout.compression["rescore_multiplier"], normalise=normalise,
                                           ranges=layout.int8_ranges)
        elif layout.index_type == "FLAT" and layout.metric in ("COSINE", "IP"):
            self.routes[DENSE_FIELD] = DenseRoute(self.rows, layout.dimensions, normalise=normalise)
        if bm25_scoring is not None:
            self.routes[SPARSE_FIELD] = Bm25Route(self.rows, **bm25_scoring)
        if layout.multivector is not None:
            self.routes[TOKENS_KEY] = TokenRoute(self.rows)
        ids = ({"id": "varchar", DOCUMENT_ID_FIELD: layout.id_type, PIECE_INDEX_FIELD: "int64"} if layout.chunking
               else {"id": layout.id_type})
        self.columns = Columns({**ids, **layout.fields}, capacity)
        self._fetch_vectors = fetch_vectors
        self._chunked = layout.chunking is not None
        self._token = uuid.uuid4().hex
        self._writes = 0
        self._document_keys: tuple[int, list] | None = None
        """:meth:`document_keys` as of the write count beside them."""
        self.codes_read_back = False
        """Whether the compressed tier's codes came from their file rather than from encoding vectors."""

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def code_route(self) -> CodeRoute | None:
        route = self.routes.get(DENSE_FIELD)
        return route if isinstance(route, CodeRoute) else None

    @property
    def token_route(self) -> TokenRoute | None:
        route = self.routes.get(TOKENS_KEY)
        return route if isinstance(route, TokenRoute) else None

    def _sources(self) -> dict[str, str]:
        """The record key each route is built from (token vectors are no Milvus field: see build_mirror)."""
        return {DENSE_FIELD: DENSE_FIELD, SPARSE_FIELD: self.text_field, TOKENS_KEY: TOKENS_KEY}

    def output_fields(self, *, with_vectors: bool = True) -> list[str]:
        """The stored fields a build reads: every route's source and the filterable fields."""
        sources = [self._sources()[name] for name in self.routes
                   if (with_vectors or name != DENSE_FIELD) and name != TOKENS_KEY]
        return list(dict.fromkeys([*sources, *(name for name in self.columns.field_types if name != "id")]))

    def upsert(self, records: list[dict], codes: np.ndarray | None = None) -> None:
        """Write ``records``; ``codes``: the compressed tier's codes for them, already encoded."""
        sources = self._sources()
        prepared = {
            name: codes if codes is not None and name == DENSE_FIELD else route.prepare([record[sources[name]] for record in records])
            for name, route in self.routes.items()
        }
        with self.rows.lock:
            self._writes += 1
            rows, retired = self.rows.assign([record["id"] for record in records])
            for name, route in self.routes.items():
                route.retire(retired)
                route.write(rows, prepared[name])
            self.columns.write(rows, records)
            self._compact_if_worth_it()

    def delete(self, ids: list) -> None:
        with self.rows.lock:
            self._writes += 1
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

    def memory(self) -> MirrorMemory:
        """What the dense tier costs per document, for the collection's description."""
        dense = self.routes.get(DENSE_FIELD)
        kind = self.code_route.kind if self.code_route else "float32"
        memory = MirrorMemory(rows=len(self.rows), dense=None if dense is None else
                              DenseTierMemory(kind=kind, bytes_per_document=dense.bytes_per_document))
        if self.token_route is not None:
            memory["tokens"] = TokenMemory(kind="float32", bytes_per_document=self.token_route.bytes_per_document)
        return memory

    def hits(self, route: str, query: Any, k: int, filter: str = "") -> Hits | None:
        """The route's hits among the rows ``filter`` matches, or None when the mirror cannot answer:
        no such route, or a filter it does not evaluate (then Milvus evaluates it, and is the one
        to refuse a malformed one, so the answer never depends on whether a mirror is built).
        A compressed tier's candidates are rescored with vectors from Milvus, outside the lock."""
        found = self.routes.get(route)
        if found is None or isinstance(found, TokenRoute):
            return None
        with self.rows.lock:  # the mask and the search see the same rows
            try:
                allowed = filter_mask(filter, self.columns) if filter else None
            except (Unsupported, FilterError):
                return None
            if not isinstance(found, CodeRoute):
                return found.top_k(query, k, allowed)
            candidates = found.top_k(query, k * found.rescore_multiplier, allowed)
        return found.rescore(query, [doc for doc, _ in candidates], k, self._fetch_vectors)

    def count(self, filter: str = "") -> int | None:
        """Live rows that ``filter`` matches (all without one); None for a filter the mirror does not evaluate."""
        with self.rows.lock:
            try:
                allowed = filter_mask(filter, self.columns) if filter else None
            except (Unsupported, FilterError):
                return None
            return int(np.count_nonzero(self.rows.eligible(allowed)))

    @property
    def version(self) -> str:
        """Changes with every write (and is another mirror's never): what was read at one version holds until it changes."""
        return f"{self._token}-{self._writes}"

    def document_keys(self) -> list:
        """The live documents' keys (a chunked collection's: its first pieces', ``{id}#0``) in the order Milvus keeps
        its primary keys: sorted once per :attr:`version`, outside the lock. Shared: read it, never change it."""
        with self.rows.lock:
            writes = self._writes
            if self._document_keys is not None and self._document_keys[0] == writes:
                return self._document_keys[1]
            keys = list(self.rows.row_of)
        keys = sorted(key for key in keys if is_opening(key)) if self._chunked else sorted(keys)
        with self.rows.lock:
            if self._writes == writes:
                self._document_keys = (writes, keys)
        return keys

    def dense_vectors(self, keys: list) -> dict | None:
        """The float dense route's vectors of those ``keys`` that are live, by key, as the route keeps them (unit
        length for a cosine collection); None without such a route (a compressed tier keeps codes)."""
        route = self.routes.get(DENSE_FIELD)
        if not isinstance(route, DenseRoute):
            return None
        with self.rows.lock:
            found = [key for key in keys if key in self.rows.row_of]
            rows = np.array([self.rows.row_of[key] for key in found], dtype=np.int64)
            return dict(zip(found, route.vectors(rows))) if found else {}

    def rerank(self, query_tokens: Any, candidates: list, k: int) -> Hits:
        """The ``k`` best ``candidates`` (ids) by exact MaxSim (a multi-vector collection's mirror)."""
        return self.token_route.rerank(query_tokens, candidates, k)


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
                 count: Callable[[str], int], fetch_vectors: Callable[[str], FetchVectors],
                 codes: CodeFiles | None = None, tokens: TokenFiles | None = None, gate: FlushGate | None = None):
        """``fetch_vectors(name)``: the collection's float vectors by id; ``codes``: where compressed
        tiers keep their codes between runs; ``tokens``: where multi-vector collections keep their
        token vectors; ``gate``: keeps a build's reads apart from flushes."""
        self._client = client
        self._max_rows = max_rows
        self._layout = layout
        self._count = count
        self._fetch_vectors = fetch_vectors
        self._codes = codes
        self._tokens = tokens
        self._gate = gate or FlushGate()
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

    def await_mirror(self, name: str, timeout_s: float) -> Mirror | None:
        """Start the collection's mirror and wait (at most ``timeout_s``) until it is built or declined:
        until then a search goes to Milvus Lite's slow path. Blocking; run in a thread."""
        deadline = time.monotonic() + timeout_s
        while (mirror := self.mirror(name)) is None and time.monotonic() < deadline:
            with self._lock:
                slot = self._slots.get(name)
                if slot is None or not slot.building:  # declined (too many rows) or failed: Milvus answers
                    return None
            time.sleep(0.05)
        return mirror

    def built(self, name: str) -> Mirror | None:
        """The collection's mirror if it is ready, without starting a build."""
        with self._lock:
            slot = self._slots.get(name)
            return slot.mirror if slot is not None else None

    def saved_codes(self, name: str) -> SavedCodes | None:
        """The compressed tier's codes to save, None unless the mirror is ready (and compressed)."""
        mirror = self.built(name)
        return mirror.code_route.saved() if mirror is not None and mirror.code_route is not None else None

    def saved_tokens(self, name: str) -> tuple[list, list] | None:
        """A multi-vector collection's live token vectors to save, None unless the mirror is ready."""
        mirror = self.built(name)
        return mirror.token_route.saved() if mirror is not None and mirror.token_route is not None else None

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
        saved = self._codes.load(name) if self._codes is not None and layout.compression else None
        tokens = self._tokens.load(name) if self._tokens is not None and layout.multivector else None
        with self._gate.call():
            mirror = build_mirror(self._client, name, layout, self._fetch_vectors(name), saved, tokens)
        if mirror is not None and mirror.code_route is not None and not mirror.codes_read_back and self._codes:
            self._codes.save(name, mirror.code_route.saved, always=True)
        return mirror


def build_mirror(client: MilvusClient, name: str, layout: Layout, fetch_vectors: FetchVectors,
                 saved: SavedCodes | None = None, tokens: dict | None = None, *,
                 page_rows: int = PAGE_ROWS) -> Mirror | None:
    """A loaded collection's mirror, filled from Milvus (its keys, then its rows by key, ``page_rows`` at a
    time: see :mod:`~rayprism.platform.store.mirror_loading`); None if nothing in it is worth mirroring
    (FLAT cosine/IP vectors, exact either way, a compressed tier's codes, BM25 text and a
    multi-vector collection's token vectors are).

    With ``saved`` codes the float vectors are not read at all, unless the saved ids turn out
    not to be the collection's: then the codes are encoded afresh from the vectors. ``tokens``
    (a multi-vector collection's, by id, from its files) join the rows read from Milvus; a
    document without any is never a search hit (a warning says how many there are).
    """
    def new_mirror(capacity: int) -> Mirror:
        return Mirror(layout, lite_bm25_scoring(client, name, layout.text_field) if layout.bm25 else None,
                      fetch_vectors, capacity=capacity)

    if not new_mirror(0).routes:
        return None
    keys = collection_keys(client.query, name)
    mirror = new_mirror(len(keys))
    if saved is not None and mirror.code_route is not None:
        if _filled_from_saved(client, name, mirror, saved, keys, page_rows):
            return mirror
        logger.info("the saved codes of %r do not match its documents; encoding them again", name)
        mirror = new_mirror(len(keys))
    missing: list = []
    for records in rows_by_key(client.query, name, keys, mirror.output_fields(), page_rows):
        if mirror.token_route is not None:
            missing += _with_tokens(records, tokens or {})
        mirror.upsert(records)
    if missing:
        logger.warning("%d documents of %r have no token vectors (written outside the document API?), e.g. %r; "
                       "multi-vector search leaves them out until they are upserted again", len(missing), name,
                       missing[:3])
    return mirror


def _with_tokens(records: list[dict], tokens: dict) -> list:
    """Give each record its token vectors (none where it has none); returns the ids that have none."""
    missing = []
    for record in records:
        matrix = tokens.get(record["id"])
        if matrix is None:
            missing.append(record["id"])
        record[TOKENS_KEY] = matrix if matrix is not None else np.zeros((0, 0), dtype=np.float32)
    return missing


def _filled_from_saved(client: MilvusClient, name: str, mirror: Mirror, saved: SavedCodes, keys: list,
                       page_rows: int) -> bool:
    """Fill ``mirror`` with the stored fields and the saved codes; False if the codes are not exactly the
    documents' (some key has none, or a document went missing meanwhile)."""
    row_of = {doc: row for row, doc in enumerate(saved.ids)}
    if len(keys) != len(row_of) or any(key not in row_of for key in keys):
        return False
    mirror.code_route.ranges = saved.ranges
    for records in rows_by_key(client.query, name, keys, mirror.output_fields(with_vectors=False), page_rows):
        rows = np.asarray([row_of[record["id"]] for record in records], dtype=np.int64)
        mirror.upsert(records, codes=saved.codes[rows])
    mirror.codes_read_back = len(mirror) == len(row_of)
    return mirror.codes_read_back


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
    index_params = client.describe_index(name, SPARSE_FIELD)
    return {
        "analyze": lambda value: compute_tf(analyzer.analyze(value)),
        "k1": float(index_params.get("bm25_k1", 1.5)),  # Milvus Lite's defaults
        "b": float(index_params.get("bm25_b", 0.75)),
    }

