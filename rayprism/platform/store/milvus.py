"""The collections at one Milvus URI: create or verify, write, read, search.

Written against pymilvus's ``MilvusClient`` only, so a Milvus Lite file and a
Milvus server behave the same. A Lite store adds in-memory mirrors for unfiltered
searches (:mod:`~rayprism.platform.store.mirror`) and seals fresh rows once writes
pause (:mod:`~rayprism.platform.store.flushing`). On a server every read sees the writes made
before it without waiting for the newest ones (Session reads, :mod:`~rayprism.platform.store.session_reads`),
and a collection the server's version cannot hold is refused before it is made
(:mod:`~rayprism.platform.store.server_versions`).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pymilvus import MilvusClient, MilvusException
from pymilvus.client.types import Status
from pymilvus.exceptions import ErrorCode

from rayprism.platform.config import (
    BITS_FIELD,
    DEFAULT_MIN_FREE_MB,
    DENSE_FIELD,
    DOCUMENT_ID_FIELD,
    PIECE_COUNT_FIELD,
    PIECE_INDEX_FIELD,
    PIECE_START_FIELD,
    SPARSE_FIELD,
    CollectionConfig,
    SearchDefaults,
    is_lite_uri,
)
from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError, StoreError
from rayprism.platform.projection import sample_ids
from rayprism.platform.store.aliases import Aliases
from rayprism.platform.store.compressed import CodeFiles, FetchVectors, encode_bits, exact_rescore
from rayprism.platform.store.filters import ids_filter, renamed_field, string_literal
from rayprism.platform.store.flushing import FlushGate, FlushScheduler
from rayprism.platform.store.fusion import DEFAULT_FUSION, Fusion, fuse, weighted
from rayprism.platform.store.layout import (
    SEARCH_DEFAULTS_PROPERTY,
    Layout,
    applied_search_defaults,
    create_collection,
    read_layout,
    stored_config,
)
from rayprism.platform.store.lite_disk import DiskGuard, check_lite_store, disk_full_error, is_disk_full
from rayprism.platform.store.mirror import MirrorManager
from rayprism.platform.store.mirror_loading import PAGE_ROWS, collection_keys, rows_by_key
from rayprism.platform.store.mirror_memory import MirrorMemory
from rayprism.platform.store.pieces import (
    PIECE_READ_FIELDS,
    best_pieces,
    by_document,
    document_of,
    documents_from_pieces,
    is_opening,
    piece_key,
    stale_keys,
    whole_documents,
)
from rayprism.platform.store.server_versions import check_rows_fit, check_server_supports
from rayprism.platform.store.session_reads import SESSION_READS, SessionClock
from rayprism.platform.store.token_files import TokenFiles
from rayprism.platform.store.tokens import TOKENS_KEY
from rayprism.platform.store.vocabulary import DEFAULT_CANDIDATES, Hits, Metric, SearchMode
from rayprism.platform.vectors import normalised

logger = logging.getLogger(__name__)
# pymilvus logs every failed RPC with a traceback; the errors raised here carry the message.
logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)

COLLECTION_NOT_LOADED = 101
"""Milvus's ``ErrCollectionNotLoaded`` (pymilvus names no constant for it)."""
PARAMETER_INVALID = 1100
"""Milvus's ``ErrParameterInvalid``: how a server refuses a bad filter expression."""
CALLER_MISTAKES = {Status.ILLEGAL_ARGUMENT, Status.ILLEGAL_RANGE, PARAMETER_INVALID}
"""Codes that, on a filtered call, mean the filter is wrong (Milvus Lite answers ``ILLEGAL_RANGE``)."""
UNPARSABLE_FILTER = "failed to create query plan"
"""How a Milvus 2.3 server refuses a filter it cannot parse: with this message and a generic code."""

PIECES_PER_DOCUMENT = 4
"""A chunked collection's routes take this many pieces per document they are asked for, so that after grouping
pieces by document there are still enough documents (a long document may hold several of the best pieces)."""
FIRST_PIECE = f"{PIECE_INDEX_FIELD} == 0"
"""One row per document of a chunked collection: what counting and listing its documents read, and the openings
route of its hybrid search searches."""
OPENING_WEIGHT = 0.25
"""The share of a chunked collection's hybrid document score that its opening's match gets (the rest: its best
piece's fused score). On the manual pages' description queries (first 1,000 pages, 179 queries, bench/
document_scoring.py) best-piece fusion alone scored MRR@10 0.814 against 0.839 for one embedding of each page's first
256 tokens; with the openings route (dense and BM25 fused) at 0.15 to 0.35 it scored 0.852 to 0.853 (R@10 0.955 →
0.978), and on the deep queries it keeps the page in the top 10 (docs/benchmarks.md)."""
QUERY_MAX_ROWS = 16384
"""The most rows one Milvus query answers (``offset + limit``)."""
WARM_TIMEOUT_S = 120.0
"""How long start-up waits for a collection's in-memory mirror (a large one is built meanwhile, and
searches go to Milvus until it is)."""


@dataclass(frozen=True)
class SearchQuery:
    """One search of one collection, as the serving replica hands it to the store."""

    mode: SearchMode
    k: int
    dense_vector: np.ndarray | None = None
    """The query's vector: a multi-vector search's is the query's MUVERA encoding."""
    query_tokens: np.ndarray | None = None
    """A multi-vector search's query token vectors (float32[t, width]), for the MaxSim rerank."""
    text: str | None = None
    metric: Metric = "COSINE"
    """The collection's dense metric."""
    candidates: int = DEFAULT_CANDIDATES
    """Hits taken from each route before fusion (hybrid mode), or reranked (multivector mode)."""
    filter: str = ""
    fusion: Fusion = DEFAULT_FUSION
    output_fields: list[str] | None = None
    sparse_hits: Hits | None = None
    """BM25 hits computed earlier (the replica starts them while it embeds the query)."""
    passages: int = 1
    """A chunked collection's hits each show this many of their best pieces (0: none)."""


@dataclass(frozen=True)
class SearchHits:
    """The store's answer to a :class:`SearchQuery`, best first, in columns: ``ids[i]`` scored ``scores[i]``
    (higher is better in every mode) and has ``fields[i]`` (those asked for). One record crosses the process
    boundary, not one per hit: a named tuple per hit pickles about four times slower than these lists."""

    ids: list
    scores: list[float]
    fields: list[dict[str, Any]]
    passages: list[list[dict[str, Any]]] | None = None
    """A chunked collection's hits: each one's best pieces, ``{"index", "text", "score", "start"}``, best first."""

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class StoredPage:
    """One page of a collection's documents, as :meth:`MilvusStore.document_page` reads it."""

    rows: list[dict]
    """The documents, each with the fields asked for, in the order of their keys."""
    total: int
    """Documents in the collection."""
    has_more: bool
    """Whether documents follow the last of ``rows``."""


class MilvusStore:
    def __init__(self, uri: str, *, flush_after_s: float = 5.0, cache_max_rows: int = 0,
                 min_free_mb: int = DEFAULT_MIN_FREE_MB):
        """``cache_max_rows`` > 0 mirrors collections up to that size in memory for unfiltered
        searches (only sound where this process is the sole writer, as with a Milvus Lite file).
        ``min_free_mb``: a Lite store refuses writes while its disk has less free (see lite_disk)."""
        self.uri = uri
        if is_lite_uri(uri):
            check_lite_store(Path(uri))
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client = MilvusClient(uri)
            self._client.list_collections()  # a damaged store fails here, not at its first request
        except MilvusException as error:
            hint = (" A Milvus Lite store is held by the one process that opened it until that process exits"
                    " (is a `rayprism serve` or `rayprism embed` using it?); a damaged one is restored from a"
                    " backup (`rayprism restore`) into a new path") if is_lite_uri(uri) else ""
            logger.error("cannot open Milvus at %s: %s", uri, getattr(error, "message", error))
            raise StoreError(f"cannot open the store (store.uri): {self._redact(getattr(error, 'message', error))}."
                             f"{hint}") from None
        self._flushes = FlushScheduler(self.flush, flush_after_s)
        self._gate = FlushGate()
        self._lite = is_lite_uri(uri)
        self._disk = DiskGuard(Path(uri).parent, min_free_mb << 20) if self._lite else None
        self._reads = {} if self._lite else SESSION_READS
        self._key_order = {"iterator": "True"} if self._lite else {}
        """What makes a query with a limit answer rows in key order (see :meth:`_keys_after`)."""
        self._clock = None if self._lite else SessionClock(self._client)
        self.codes = CodeFiles(Path(f"{uri}.codes")) if self._lite else None
        """Where a Lite store's compressed collections keep their codes between runs."""
        self.tokens = TokenFiles(Path(f"{uri}.tokens")) if self._lite else None
        """Where a Lite store's multi-vector collections keep their token vectors."""
        self._fixed: dict[str, Layout] = {}
        self._creating = threading.Lock()
        """Held while a collection is created: Milvus Lite's own create races with itself."""
        self.aliases = Aliases(self._client, self._call)
        self.mirrors = MirrorManager(self._client, cache_max_rows, layout=self.layout, count=self.count,
                                     fetch_vectors=self._vectors, codes=self.codes, tokens=self.tokens,
                                     gate=self._gate)

    # --- collections -------------------------------------------------------------------

    def ensure(self, config: CollectionConfig, dimensions: int) -> Layout:
        """Create the collection, or check that the existing one matches ``config``. Every API
        replica ensures the declared collections as it starts, so calls race: one creates, the
        others compare (another process's create, on a server, is recognised after the fact)."""
        wanted = Layout.from_config(config, dimensions)
        with self._creating:
            created = self._create_if_missing(config, dimensions)
        if created:
            return wanted
        differences = wanted.differences(self.layout(config.name))
        if differences:
            raise ConflictError(
                f"collection {config.name!r} exists with a different schema: " + "; ".join(differences)
                + ". Give the configured one another name, or drop the stored one (its documents are lost) and start "
                "again; a Milvus Lite store is the file at store.uri"
            )
        return wanted

    def _create_if_missing(self, config: CollectionConfig, dimensions: int) -> bool:
        """Whether this call created the collection (False: it existed, maybe made a moment ago)."""
        if self._client.has_collection(config.name):
            return False
        compression = config.compression.type if config.compression else None
        if compression == "int8" and not self._lite:
            raise InvalidInputError(
                "int8 compression runs in Milvus Lite's in-memory mirror; on a Milvus server use binary"
                " (a BINARY_VECTOR field searched by Milvus)", param="compression")
        ranges = config.compression.int8_ranges if config.compression else None
        if ranges is not None and len(ranges[0]) != dimensions:
            raise InvalidInputError(f"compression.int8_ranges give {len(ranges[0])} dimensions; the collection's model "
                                    f"gives {dimensions}", param="compression")
        if config.multivector is not None and not self._lite:
            raise InvalidInputError(
                "multivector collections keep their token vectors beside a Milvus Lite file, for the in-memory"
                " MaxSim rerank; a Milvus server has no such place: use a Lite store (a collection's uri)",
                param="multivector")
        if not self._lite:
            check_server_supports(config, self.server_version)
        try:
            create_collection(self._client, config, dimensions, bits_field=compression == "binary" and not self._lite)
        except MilvusException:
            if self._client.has_collection(config.name):  # another store replica created it meanwhile
                return False
            raise
        self._fixed.pop(config.name, None)
        return True

    @functools.cached_property
    def server_version(self) -> str:
        """The Milvus server's version (``v2.3.5``, ...), asked once."""
        return self._client.get_server_version()

    def names(self) -> list[str]:
        return sorted(self._client.list_collections())

    def exists(self, name: str) -> bool:
        return self._client.has_collection(name)

    def _describe(self, name: str) -> dict:
        if not self._client.has_collection(name):
            raise NotFoundError(f"collection {name!r} does not exist")
        return self._client.describe_collection(name)

    def layout(self, name: str) -> Layout:
        return read_layout(self._client, name, self._describe(name))

    def config_of(self, name: str) -> CollectionConfig | None:
        """The config a collection was created with, or None if rayprism did not create it."""
        return stored_config(self._describe(name))

    def applied_search_defaults(self, name: str) -> SearchDefaults | None:
        """The search defaults applied to the collection (:meth:`apply_search_defaults`), None if none are."""
        return applied_search_defaults(self._describe(name))

    def apply_search_defaults(self, name: str, defaults: SearchDefaults | None) -> None:
        """Keep ``defaults`` with the collection (a property of it, so a restart keeps them); None removes
        them (an empty value: Milvus servers before 2.5 cannot drop a property)."""
        self._describe(name)
        value = defaults.model_dump_json(exclude_none=True) if defaults is not None else ""
        self._call(self._client.alter_collection_properties, name, properties={SEARCH_DEFAULTS_PROPERTY: value})

    def count(self, name: str) -> int:
        """Documents (a chunked collection's first pieces): counted in the in-memory mirror when there is one
        (Milvus Lite counts a filter's matches by reading them all)."""
        filter = FIRST_PIECE if self.chunked(name) else ""
        mirror = self.mirrors.built(name)
        counted = mirror.count(filter) if mirror is not None else None
        if counted is not None:
            return counted
        rows = self._call(self._client.query, name, filter=filter, output_fields=["count(*)"], **self._reads)
        return int(rows[0]["count(*)"])

    def drop(self, name: str) -> None:
        self._describe(name)
        aliases = self.aliases.pointing_at(name)
        if aliases:
            raise ConflictError(f"collection {name!r} is reached through the aliases {aliases}: delete or repoint "
                                "them first")
        self._flushes.cancel(name)
        self.mirrors.drop(name)
        self._client.drop_collection(name)
        self._fixed.pop(name, None)
        if self.codes is not None:
            self.codes.drop(name)
        if self.tokens is not None:
            self.tokens.drop(name)

    def _fixed_layout(self, name: str) -> Layout:
        """The collection's layout, read once: it is fixed when a collection is made."""
        if name not in self._fixed:
            self._fixed[name] = self.layout(name)
        return self._fixed[name]

    def compression(self, name: str) -> dict | None:
        """The collection's compression block."""
        return self._fixed_layout(name).compression

    def multivector(self, name: str) -> bool:
        """Whether the collection is a multi-vector one (its rows carry token vectors)."""
        return self._fixed_layout(name).multivector is not None

    def chunked(self, name: str) -> bool:
        """Whether the collection's rows are pieces of documents (:mod:`~rayprism.platform.store.pieces`)."""
        return self._fixed_layout(name).chunking is not None

    def warm(self, name: str, timeout_s: float = WARM_TIMEOUT_S) -> None:
        """What the first search of ``name`` would otherwise pay for, paid now: the in-memory mirror
        built (until then a Lite collection is searched row by row) and one search on each of its routes
        (their kernels loaded). Blocking; a collection not created yet has nothing to warm."""
        if not self.exists(name):
            return
        self.mirrors.await_mirror(name, timeout_s)
        layout = self.layout(name)
        if layout.multivector:
            return  # its route needs query token vectors: the first real search brings them
        mode = "hybrid" if layout.bm25 else "dense"
        self.search(name, SearchQuery(mode=mode, k=1, dense_vector=np.ones(layout.dimensions, dtype=np.float32),
                                      text="warm up", metric=layout.metric, output_fields=[]))

    def int8_ranges(self, name: str, timeout_s: float = WARM_TIMEOUT_S) -> list | None:
        """The buckets an int8 tier's mirror encodes with (waiting for a mirror being built), None without them:
        no int8 tier, nothing written yet, or no mirror (more rows than ``cache_max_rows``: no codes either)."""
        mirror = self.mirrors.await_mirror(name, timeout_s)
        route = mirror.code_route if mirror is not None else None
        return route.ranges.tolist() if route is not None and route.ranges is not None else None

    def memory(self, name: str) -> MirrorMemory | None:
        """The in-memory mirror's size (rows, dense bytes per document), None while there is none."""
        mirror = self.mirrors.built(name)
        return mirror.memory() if mirror is not None else None

    # --- documents ---------------------------------------------------------------------

    def upsert(self, name: str, rows: list[dict]) -> int:
        """Rows of a multi-vector collection carry their token vectors (``tokens``): logged in the
        collection's token files before Milvus gets the rest. A chunked collection's rows are pieces of
        documents, written whole: once they are, the pieces past each document's new count are deleted, and
        the count returned is of documents."""
        if self._disk is not None:
            self._disk.check()
        compression = self.compression(name)
        stored = rows
        if not self._lite:
            check_rows_fit(rows, list(self.layout(name).fields), self.server_version)
        if compression and compression["type"] == "binary" and not self._lite:
            codes = encode_bits(np.asarray([row[DENSE_FIELD] for row in rows], dtype=np.float32))
            stored = rows = [{**row, BITS_FIELD: code.tobytes()} for row, code in zip(rows, codes)]
        multivector = self.multivector(name)
        if multivector:
            stored = [{key: value for key, value in row.items() if key != TOKENS_KEY} for row in rows]
        with self._writing(name, compression, multivector):
            if multivector:
                self.tokens.append(name, [row["id"] for row in rows], [row[TOKENS_KEY] for row in rows])
            result = self._call(self._client.upsert, name, stored)
            self._flushes.schedule(name)
            self.mirrors.upsert(name, rows)
        if self.chunked(name):
            counts = {row[DOCUMENT_ID_FIELD]: row[PIECE_COUNT_FIELD] for row in rows}
            self._delete_keys(name, stale_keys(self._pieces_of(name, list(counts), PIECE_READ_FIELDS), counts))
            return len(counts)
        return int(result["upsert_count"])

    def delete(self, name: str, ids: list) -> int:
        """How many of ``ids`` existed (Milvus counts every id it was given); a chunked collection's ids are its
        documents', each deleted with all its pieces."""
        if self.chunked(name):
            pieces = self._pieces_of(name, ids, ["id", DOCUMENT_ID_FIELD])
            self._delete_keys(name, [row["id"] for row in pieces])
            return len({row[DOCUMENT_ID_FIELD] for row in pieces})
        return self._delete_keys(name, [row["id"] for row in self._by_ids(name, ids, ["id"])])

    def _delete_keys(self, name: str, existing: list) -> int:
        """Delete the rows of these primary keys, which exist."""
        if existing:
            multivector = self.multivector(name)
            with self._writing(name, self.compression(name), multivector):
                if multivector:
                    self.tokens.delete(name, existing)
                self._call(self._client.delete, name, filter=ids_filter(existing))
                if self._clock is not None:
                    self._clock.deleted(name)
                self._flushes.schedule(name)
                self.mirrors.delete(name, existing)
        return len(existing)

    def document_hashes(self, name: str, ids: list) -> dict:
        """A chunked collection's documents among ``ids`` whose pieces are stored whole, with their digests
        (:func:`~rayprism.platform.store.pieces.whole_documents`): an upsert leaves those alone if unchanged."""
        return whole_documents(self._pieces_of(name, ids, PIECE_READ_FIELDS))

    def pieces(self, name: str, document_id: Any) -> list[dict]:
        """A chunked collection's document as it is stored: its pieces in order, each with its index, where it
        starts in the document's text, and its text."""
        text_field = self._fixed_layout(name).text_field
        rows = self._pieces_of(name, [document_id], [PIECE_INDEX_FIELD, PIECE_START_FIELD, text_field])
        return [{"index": row[PIECE_INDEX_FIELD], "start": row[PIECE_START_FIELD], "text": row[text_field]}
                for row in sorted(rows, key=lambda row: row[PIECE_INDEX_FIELD])]

    def _pieces_of(self, name: str, ids: list, output_fields: list[str] | tuple[str, ...]) -> list[dict]:
        """Every stored piece of these documents (read in pages: a long document has many)."""
        if not ids:
            return []
        return self._pages(name, ids_filter(ids, DOCUMENT_ID_FIELD), list(output_fields))

    def _pages(self, name: str, filter: str, output_fields: list[str]) -> list[dict]:
        """Every row matching ``filter``: one query, or pages if there are more than one query answers."""
        rows = self._call(self._client.query, name, filter=filter, output_fields=output_fields, limit=QUERY_MAX_ROWS,
                          **self._reads)
        if len(rows) < QUERY_MAX_ROWS:
            return list(rows)
        return [row for page in self._row_pages(name, filter, output_fields, PAGE_ROWS) for row in page]

    def row_pages(self, name: str, output_fields: list[str], page_rows: int) -> Iterator[list[dict]]:
        """Every row of the collection, ``page_rows`` at a time (never all in memory)."""
        return self._row_pages(name, "", output_fields, page_rows)

    def _row_pages(self, name: str, filter: str, output_fields: list[str], page_rows: int) -> Iterator[list[dict]]:
        """The rows matching ``filter``, ``page_rows`` at a time, in key order. Lite: the keys in one query, then
        the rows by key (its query iterator's pages cost O(N) each: :mod:`~rayprism.platform.store.mirror_loading`).
        A server: keyset pages (:meth:`_rows_after`), never pymilvus's query iterator, which resumes from an id it
        does not escape (an id holding ``"`` or ``\\`` broke it)."""
        if self._lite:
            query = functools.partial(self._call, self._client.query)
            keys = collection_keys(query, name, filter)
            if output_fields == ["id"]:
                yield from ([{"id": key} for key in keys[start : start + page_rows]]
                            for start in range(0, len(keys), page_rows))
            else:
                yield from rows_by_key(query, name, keys, output_fields, page_rows)
            return
        cursor = None
        while page := self._rows_after(name, filter, cursor, page_rows, output_fields):
            yield page
            cursor = page[-1]["id"]

    def stored_rows(self, name: str, ids: list, output_fields: list[str]) -> list[dict]:
        """The stored rows of these documents (a chunked collection's: all their pieces), those that exist."""
        if self.chunked(name):
            return self._pieces_of(name, ids, output_fields)
        return [row for start in range(0, len(ids), QUERY_MAX_ROWS)
                for row in self._by_ids(name, ids[start : start + QUERY_MAX_ROWS], output_fields)]

    def document_page(self, name: str, limit: int, output_fields: list[str], after: Any = None,
                      offset: int = 0) -> StoredPage:
        """``limit`` documents in the order of their keys, with the ``output_fields`` of :meth:`get`: those after the
        document ``after`` (a cursor: any id, stored or not), else those from position ``offset``.

        Keyset paging, never every id read from Milvus: the in-memory mirror's keys, sorted once per write
        (:meth:`~rayprism.platform.store.mirror.Mirror.document_keys`), where there is one; else Milvus reads the keys
        that follow the cursor in its primary-key order (``id > cursor``, with a limit). The two orders are the same,
        so a cursor from one holds in the other. A document stored throughout a walk is on exactly one of its pages,
        whatever is written meanwhile. ``offset`` walks the keys before it (from Milvus: ids only). A chunked
        collection's documents are in the order of their first pieces' keys, ``{id}#0``: the order of their ids,
        unless those are numbers or hold a character that sorts before ``#``."""
        chunked = self.chunked(name)
        cursor = None if after is None else piece_key(after, 0) if chunked else after
        mirror = self.mirrors.built(name)
        if mirror is not None:
            keys = mirror.document_keys()
            start = (bisect.bisect_right(keys, cursor) if cursor is not None else 0) + offset
            chosen, total = keys[start : start + limit + 1], len(keys)
        else:
            skipped = self._keys_after(name, cursor, offset) if offset else []
            cursor = skipped[-1]["id"] if skipped else cursor
            chosen = [] if len(skipped) < offset else [row["id"] for row in self._keys_after(name, cursor, limit + 1)]
            total = self.count(name)
        id_type = self._fixed_layout(name).id_type
        ids = [document_of(key, id_type) if chunked else key for key in chosen[:limit]]
        by_id = {row["id"]: row for row in self.get(name, ids, output_fields)} if ids else {}
        return StoredPage([by_id[key] for key in ids if key in by_id],  # one deleted since its key was read: left out
                          total, len(chosen) > limit)

    def _keys_after(self, name: str, cursor: Any, count: int) -> list[dict]:
        """The first ``count`` documents after the key ``cursor`` (from the first without one) in primary-key order
        (a chunked collection's first pieces), with their key."""
        return self._rows_after(name, FIRST_PIECE if self.chunked(name) else "", cursor, count, ["id"])

    def _rows_after(self, name: str, filter: str, cursor: Any, count: int, output_fields: list[str]) -> list[dict]:
        """The first ``count`` rows matching ``filter`` after the key ``cursor`` (from the first without one) in
        primary-key order. A server answers a query with a limit in key order (it merges its segments' rows by
        key); Milvus Lite does only for pymilvus's query iterator's queries (flagged ``iterator``), a flag a 2.3
        server must not get: its answer right after a write then takes its growing segment's rows out of key
        order."""
        found: list[dict] = []
        while len(found) < count:
            conditions = [f"({filter})"] if filter else []
            if cursor is not None:
                conditions.append(f"id > {string_literal(cursor) if isinstance(cursor, str) else int(cursor)}")
            rows = self._call(self._client.query, name, filter=" and ".join(conditions),
                              output_fields=list(dict.fromkeys(["id", *output_fields])),
                              limit=min(count - len(found), QUERY_MAX_ROWS), **self._key_order, **self._reads)
            if not rows:
                break
            found += rows
            cursor = rows[-1]["id"]
        return found

    def document_id_sample(self, name: str, size: int) -> tuple[int, list, str | None]:
        """How many documents the collection holds, :func:`~rayprism.platform.projection.sample_ids` of their ids,
        and the in-memory mirror's :attr:`~rayprism.platform.store.mirror.Mirror.version` they were read at (None:
        without a mirror, every id was read from Milvus, and the next call may differ with no sign of it)."""
        mirror = self.mirrors.built(name)
        if mirror is None:
            ids = self.ids(name)
            return len(ids), sample_ids(ids, size), None
        version = mirror.version
        keys = mirror.document_keys()
        if self.chunked(name):
            id_type = self._fixed_layout(name).id_type
            keys = [document_of(key, id_type) for key in keys]
        return len(keys), sample_ids(keys, size), version

    def document_sample(self, name: str, ids: list, fields: list[str], preview_chars: int
                        ) -> tuple[list, np.ndarray, list[dict]]:
        """What a picture of the collection shows of these documents (those that exist, in the order of ``ids``):
        their ids; their vectors as one float32 matrix, as the collection's metric sees them (unit length for
        cosine; a chunked document's: the mean of its pieces'), from the in-memory mirror when it holds them; and
        each one's ``fields`` with ``text``, its text (a chunked document's first piece's) cut to ``preview_chars``."""
        layout = self._fixed_layout(name)
        chunked = self.chunked(name)
        if not ids:
            return [], np.zeros((0, layout.dimensions), dtype=np.float32), []
        if chunked:
            openings = self._call(self._client.query, name, filter=f"{ids_filter(ids, DOCUMENT_ID_FIELD)} and {FIRST_PIECE}",
                                  output_fields=[DOCUMENT_ID_FIELD, PIECE_COUNT_FIELD, layout.text_field, *fields],
                                  **self._reads)
            shown = {row[DOCUMENT_ID_FIELD]: row for row in openings}
        else:
            shown = {row["id"]: row for row in self._by_ids(name, ids, ["id", layout.text_field, *fields])}
        found = [document for document in ids if document in shown]
        keys_of = {document: [piece_key(document, index) for index in range(shown[document][PIECE_COUNT_FIELD])]
                   if chunked else [document] for document in found}
        keys = [key for document in found for key in keys_of[document]]
        vectors = self._document_vectors(name, layout, keys)
        found = [document for document in found if all(key in vectors for key in keys_of[document])]
        if not found:
            return [], np.zeros((0, layout.dimensions), dtype=np.float32), []
        matrix = np.stack([np.mean([vectors[key] for key in keys_of[document]], axis=0) if chunked
                           else vectors[document] for document in found]).astype(np.float32, copy=False)
        return found, matrix, [
            {"text": str(shown[document].get(layout.text_field) or "")[:preview_chars],
             **{field: shown[document].get(field) for field in fields}} for document in found]

    def _document_vectors(self, name: str, layout: Layout, keys: list) -> dict:
        """The dense vectors of these row keys, by key (those stored): the mirror's, else read from Milvus, and
        made unit length for a cosine collection as the mirror keeps them."""
        mirror = self.mirrors.built(name)
        vectors = mirror.dense_vectors(keys) if mirror is not None else None
        if vectors is not None and len(vectors) == len(keys):
            return vectors
        rows = [row for start in range(0, len(keys), QUERY_MAX_ROWS)
                for row in self._by_ids(name, keys[start : start + QUERY_MAX_ROWS], ["id", DENSE_FIELD])]
        if not rows:
            return {}
        matrix = np.asarray([row[DENSE_FIELD] for row in rows], dtype=np.float32)
        return dict(zip([row["id"] for row in rows], normalised(matrix) if layout.metric == "COSINE" else matrix))

    def _writing(self, name: str, compression: dict | None, multivector: bool) -> contextlib.ExitStack:
        """Around a write: a compressed collection's saved codes are stale from before it starts, and a
        multi-vector collection's token files are not compacted until it ends."""
        stack = contextlib.ExitStack()
        if compression and self.codes is not None:
            stack.enter_context(self.codes.writing(name))
        if multivector and self.tokens is not None:
            stack.enter_context(self.tokens.writing(name))
        return stack

    def ids(self, name: str) -> list:
        """Every document id of the collection."""
        self._describe(name)
        if self.chunked(name):
            return [row[DOCUMENT_ID_FIELD] for row in self._pages(name, FIRST_PIECE, [DOCUMENT_ID_FIELD])]
        return [row["id"] for row in self._pages(name, "", ["id"])]

    def get(self, name: str, ids: list, output_fields: list[str]) -> list[dict]:
        """The documents of these ids that exist; a chunked collection's joined from their pieces."""
        if not self.chunked(name):
            return self._by_ids(name, ids, output_fields)
        layout = self._fixed_layout(name)
        fields = [field for field in output_fields if field not in ("id", layout.text_field)]
        pieces = self._pieces_of(name, ids, [DOCUMENT_ID_FIELD, PIECE_INDEX_FIELD, PIECE_START_FIELD,
                                             layout.text_field, *fields])
        documents = documents_from_pieces(pieces, layout.text_field, fields)
        return [{key: document[key] for key in output_fields} for document in documents]

    def _by_ids(self, name: str, ids: list, output_fields: list[str]) -> list[dict]:
        """The rows of these ids (those that exist), read with a filter that quotes each id safely."""
        if not ids:
            return []
        return list(self._call(self._client.query, name, filter=ids_filter(ids), output_fields=output_fields,
                               **self._reads))

    def flush(self, name: str) -> None:
        """Seal fresh rows, and save a compressed collection's codes once its writes pause."""
        self._flushes.cancel(name)
        if self._client.has_collection(name):
            with self._gate.flush() if self._lite else contextlib.nullcontext():
                self._client.flush(name)
            if self.codes is not None and self.compression(name):
                self.codes.save(name, lambda: self.mirrors.saved_codes(name))
            if self.tokens is not None and self.multivector(name):
                self.tokens.compact_if_grown(name, lambda: self.mirrors.saved_tokens(name))

    def last_write(self, name: str) -> int:
        """A server's timestamp of the newest write to ``name`` made through this process (0: none, or Lite)."""
        return self._clock.last_write(name) if self._clock is not None else 0

    def read_after(self, name: str, timestamp: int) -> None:
        """Reads of ``name`` from now on see the writes up to ``timestamp``, another process's
        :meth:`last_write` (Lite: one process makes every write)."""
        if self._clock is not None and timestamp:
            self._clock.read_after(name, timestamp)

    # --- search ------------------------------------------------------------------------

    def search(self, name: str, query: SearchQuery) -> SearchHits:
        """Hits best first, ``score`` higher is better in every mode.

        Hybrid search runs the dense and the sparse search (``candidates`` each) and fuses
        them here (:mod:`~rayprism.platform.store.fusion`), the same way on Lite and on a
        server. Fields are fetched once, for the final hits only.
        """
        mode, filter = query.mode, query.filter
        if mode == "multivector":
            return self._with_fields(name, self._multivector_hits(name, query), query.output_fields)
        chunked = self.chunked(name)
        if chunked:
            filter = self._piece_filter(filter)
        limit = self._route_limit(name, query.candidates if mode == "hybrid" else query.k)
        dense = self.hits(name, DENSE_FIELD, query.dense_vector, limit, filter, metric=query.metric) if mode != "sparse" else []
        if mode == "dense":
            sparse = []
        elif query.sparse_hits is not None:
            sparse = query.sparse_hits
        else:
            sparse = self.hits(name, SPARSE_FIELD, query.text, limit, filter)
        hits = fuse(dense, sparse, query.fusion) if mode == "hybrid" else dense or sparse
        if chunked:
            documents = self._ranked_documents(name, hits, sparse, filter, query)
            return self._documents_with_fields(name, documents, hits, query)
        return self._with_fields(name, hits[: query.k], query.output_fields)

    def _ranked_documents(self, name: str, pieces: Hits, sparse: Hits, filter: str, query: SearchQuery) -> Hits:
        """A chunked collection's ``k`` best documents, each scored by its best piece (``pieces``: hybrid fuses per
        piece). A hybrid search also ranks the documents' openings (a third route, over first pieces only: by
        meaning, fused with the first pieces among the ``sparse`` piece hits as the pieces are) and fuses that in at
        :data:`OPENING_WEIGHT`: what a document is about is said at its start, which is all an unchunked collection
        embeds, and best-piece scores alone lost to that on the manual pages' descriptions (docs/benchmarks.md)."""
        id_type = self._fixed_layout(name).id_type
        documents = by_document(pieces, id_type)
        if query.mode != "hybrid":
            return documents[: query.k]
        first_pieces = f"({filter}) and {FIRST_PIECE}" if filter else FIRST_PIECE
        openings_dense = self.hits(name, DENSE_FIELD, query.dense_vector, query.candidates, first_pieces,
                                   metric=query.metric)
        openings = fuse(openings_dense, [hit for hit in sparse if is_opening(hit[0])], query.fusion)
        return weighted([documents, by_document(openings, id_type)], [1 - OPENING_WEIGHT, OPENING_WEIGHT])[: query.k]

    def _route_limit(self, name: str, documents: int) -> int:
        """Hits a route takes for ``documents`` documents: a chunked collection's routes rank pieces."""
        return documents * PIECES_PER_DOCUMENT if self.chunked(name) else documents

    def _piece_filter(self, filter: str) -> str:
        """A filter on documents as one on their pieces, which carry every field but call their document's id
        ``doc_id`` (their own ``id`` is the piece's key)."""
        return renamed_field(filter, "id", DOCUMENT_ID_FIELD) if filter else filter

    def _documents_with_fields(self, name: str, documents: Hits, pieces: Hits, query: SearchQuery) -> SearchHits:
        """``documents`` (best first), each with its best piece's fields (the text field: that piece's text) and
        its best ``passages`` pieces, ranked by their own (fused) score among ``pieces``."""
        layout = self._fixed_layout(name)
        passages_of = best_pieces(pieces, [document_id for document_id, _ in documents], max(1, query.passages),
                                  layout.id_type)
        wanted = list(query.output_fields or [])
        read = [field for field in dict.fromkeys([*wanted, layout.text_field, PIECE_INDEX_FIELD, PIECE_START_FIELD])
                if field != "id"]
        keys = [key for found in passages_of for key, _ in found]
        rows = {row["id"]: row for row in self._by_ids(name, keys, read)} if keys else {}
        fields, passages = [], []
        for (document_id, _), found in zip(documents, passages_of):
            best = rows.get(found[0][0], {})
            fields.append({field: document_id if field == "id" else best.get(field) for field in wanted})
            passages.append([{"index": rows[key][PIECE_INDEX_FIELD], "text": rows[key][layout.text_field],
                              "score": score, "start": rows[key][PIECE_START_FIELD]}
                             for key, score in found[: query.passages] if key in rows])
        return SearchHits([document_id for document_id, _ in documents], [score for _, score in documents], fields,
                          passages)

    def _with_fields(self, name: str, hits: Hits, output_fields: list[str] | None) -> SearchHits:
        ids = [doc_id for doc_id, _ in hits]
        fields = self._fields(name, ids, output_fields) if output_fields else {}
        return SearchHits(ids, [score for _, score in hits], [fields.get(doc_id, {}) for doc_id in ids])

    def _multivector_hits(self, name: str, query: SearchQuery) -> Hits:
        """``candidates`` documents by their MUVERA encodings (the mirror's, or Milvus's for a filter the
        mirror does not evaluate), reranked by exact MaxSim with the token vectors in the mirror."""
        mirror = self.mirrors.mirror(name)
        if mirror is None or mirror.token_route is None:
            raise NotReadyError(f"the token vectors of collection {name!r} are not in memory yet (loading; or the "
                                "collection has more documents than store.cache_max_rows keeps in memory)")
        candidates = self.hits(name, DENSE_FIELD, query.dense_vector, query.candidates, query.filter, metric="IP")
        return mirror.rerank(query.query_tokens, [doc_id for doc_id, _ in candidates], query.k)

    def sparse_hits(self, name: str, text: str, limit: int, filter: str = "") -> Hits:
        """BM25 hits as ``(id, score)``, best first: for a chunked collection, its pieces' (the search groups them)."""
        if self.chunked(name):
            return self.hits(name, SPARSE_FIELD, text, self._route_limit(name, limit), self._piece_filter(filter))
        return self.hits(name, SPARSE_FIELD, text, limit, filter)

    def hits(self, name: str, route: str, query: Any, limit: int, filter: str = "", *, metric: str = "BM25") -> Hits:
        """One route's hits: from the in-memory mirror when it can answer, else from Milvus."""
        mirrored = self.mirrors.hits(name, route, query, limit, filter)
        if mirrored is not None:
            return mirrored
        compression = self.compression(name) if route == DENSE_FIELD and not self._lite else None
        if compression:  # a server's binary tier: Hamming candidates from Milvus, rescored here
            coarse = self._call(
                self._client.search, name, data=[encode_bits(np.asarray(query, dtype=np.float32)[None, :])[0].tobytes()],
                anns_field=BITS_FIELD, limit=limit * compression["rescore_multiplier"],
                search_params={"metric_type": "HAMMING"}, filter=filter, filtered=bool(filter), **self._reads,
            )
            return exact_rescore(query, [hit["id"] for hit in coarse[0]], limit, self._vectors(name),
                                 normalise=metric == "COSINE")
        metric = "BM25" if route == SPARSE_FIELD else metric
        results = self._call(
            self._client.search, name, data=[query], anns_field=route, limit=limit,
            search_params={"metric_type": metric}, filter=filter, filtered=bool(filter), **self._reads,
        )
        # Higher is better everywhere: L2 is a distance, and Milvus Lite reports BM25 scores negated.
        if metric == "L2":
            return [(hit["id"], -float(hit["distance"])) for hit in results[0]]
        if metric == "BM25":
            return [(hit["id"], abs(float(hit["distance"]))) for hit in results[0]]
        return [(hit["id"], float(hit["distance"])) for hit in results[0]]

    def _vectors(self, name: str) -> FetchVectors:
        """The collection's float vectors by id, read from Milvus (for rescoring a compressed tier)."""
        def fetch(ids: list) -> dict:
            rows = self._by_ids(name, ids, [DENSE_FIELD])
            return {row["id"]: row[DENSE_FIELD] for row in rows}

        return fetch

    def _fields(self, name: str, ids: list, output_fields: list[str]) -> dict:
        found = self._by_ids(name, ids, output_fields)
        return {row["id"]: {field: row.get(field) for field in output_fields} for row in found}

    # --- plumbing ----------------------------------------------------------------------

    def _call(self, method, name: str, *args, filtered: bool = False, **kwargs) -> Any:
        """Run a client call, turning Milvus failures into errors that say whose fault they are."""
        try:
            with self._gate.call():
                try:
                    return method(name, *args, **kwargs)
                except MilvusException as error:
                    if error.code != COLLECTION_NOT_LOADED:
                        raise
                    self._client.load_collection(name)  # collections come back released after a restart
                    return method(name, *args, **kwargs)
        except MilvusException as error:
            if error.code == ErrorCode.COLLECTION_NOT_FOUND:
                raise NotFoundError(f"collection {name!r} does not exist") from None
            if filtered and (error.code in CALLER_MISTAKES or UNPARSABLE_FILTER in str(error.message)):
                raise InvalidInputError(f"filter: {error.message}", param="filter") from None
            logger.warning("Milvus at %s failed on %r: %s", self.uri, name, error.message)
            if is_disk_full(str(error.message)):
                raise disk_full_error("Milvus could not write") from None
            raise StoreError(f"the store failed: {self._redact(error.message)}") from None

    def _redact(self, message: object) -> str:
        """Callers see collection names, never where the store lives on this machine or network."""
        text = str(message)
        for secret in {self.uri, str(Path(self.uri).expanduser().resolve().parent)} if is_lite_uri(self.uri) else {self.uri}:
            text = text.replace(secret, "<store>")
        return text

    def close(self) -> None:
        for name in self._flushes.pending():
            self.flush(name)
        self._client.close()
