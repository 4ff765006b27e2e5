"""The store replica: the one process that talks to Milvus (its client is :mod:`~rayprism.deployments.store_client`).

A Milvus Lite file admits a single process, so every read and write of every
collection goes through this deployment (one replica for Lite; with a Milvus server
``store.replicas`` runs several, which share a coordinator for what must be single:
:mod:`~rayprism.deployments.store_coordinator`). Serving replicas embed text themselves
and send vectors here. Blocking pymilvus calls run in threads so a slow bulk write does
not stall searches.

Collections created at run time live in the service's own store (``store.uri``);
a collection in another store is declared in the config by whoever runs the
service, never chosen by a caller.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from typing import Any, Callable

from rayprism.deployments.metrics import StoreMetrics
from rayprism.deployments.store_reembed import ReembedLedger
from rayprism.deployments.store_snapshots import SnapshotSpools
from rayprism.platform.config import DOCUMENT_ID_FIELD, CollectionConfig, SearchDefaults, StoreConfig, is_lite_uri
from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError, RayprismError, unwrap
from rayprism.platform.store.aliases import Aliases
from rayprism.platform.store.milvus import MilvusStore, SearchHits, SearchQuery, StoredPage
from rayprism.platform.store.vocabulary import Hits


class CollectionMovedError(RayprismError):
    """A write resolved its alias before a re-embedding moved it: resolve again and write there."""

    http_status = 503


METRICS_REPORT_S = 1.0
"""How often, at most, a store replica of several reports its metrics to the coordinator (on its next call)."""


def check_not_moved(physical_of: Callable[[str], str], name: str, via: str | None, physical: str) -> None:
    """A write to ``name`` that its caller reached through ``via`` (an alias) is refused if ``via`` reaches
    another collection now: :class:`CollectionMovedError` says to resolve again."""
    if via is not None and via != name and physical_of(via) != physical:
        raise CollectionMovedError(f"{via!r} now reaches {physical_of(via)!r}")


def public_coroutines(cls: type) -> dict[str, Callable]:
    """The store's calls on ``cls``: every public coroutine method (its own and its mixins')."""
    return {name: method for name, method in inspect.getmembers(cls, inspect.iscoroutinefunction)
            if not name.startswith("_")}


async def _answered(response: Any) -> Any:
    """A coordinator call's answer; its own error raised as itself."""
    try:
        return await response
    except Exception as failure:
        raise (unwrap(failure) or failure) from None


def _ledger_in_coordinator(replica: type) -> type:
    """``replica`` with each re-embedding ledger method run by the coordinator where there is one (several
    store replicas): the ledger must be single, and a swap must hold every replica's writes off."""
    def passed_on(name: str, method: Callable) -> Callable:
        @functools.wraps(method)
        async def call(self, *args: Any, **kwargs: Any) -> Any:
            if self._coordinator is None:
                return await method(self, *args, **kwargs)
            return await _answered(getattr(self._coordinator, name).remote(*args, **kwargs))
        return call

    for name, method in public_coroutines(ReembedLedger).items():
        setattr(replica, name, passed_on(name, method))
    return replica


@_ledger_in_coordinator
class StoreReplica(ReembedLedger, SnapshotSpools):
    def __init__(self, store: dict, collections: list[dict], coordinator: Any = None):
        """``coordinator``: with several store replicas, the handle of the
        :class:`~rayprism.deployments.store_coordinator.StoreCoordinator` they share."""
        self._config = StoreConfig.model_validate(store)
        self._declared = {c["name"]: CollectionConfig.model_validate(c) for c in collections}
        self._stores: dict[str, MilvusStore] = {}
        self._opening = threading.Lock()
        self._coordinator = coordinator
        self._metrics: StoreMetrics | None = None
        self._reported = 0.0
        if coordinator is None:
            self._open_ledger(self._config.uri)
        else:
            from ray import serve

            self._metrics = StoreMetrics(serve.get_replica_context().replica_id.unique_id)
            self._loop = asyncio.get_running_loop()  # Serve runs the constructor on the loop its methods run on

    def _ask(self, call: Callable[[Any], Any]) -> Any:
        """``call(coordinator)``'s answer, from a worker thread: the call is made on the replica's event loop,
        where its handles route (Serve runs a replica's routers on that loop)."""
        async def asked() -> Any:
            return await _answered(call(self._coordinator))

        return asyncio.run_coroutine_threadsafe(asked(), self._loop).result()

    def _store(self, uri: str) -> MilvusStore:
        """The store at ``uri``, opened once: concurrent first calls wait for the one opening it."""
        with self._opening:
            if uri not in self._stores:
                cache_rows = self._config.cache_max_rows if is_lite_uri(uri) else 0
                self._stores[uri] = MilvusStore(
                    uri, flush_after_s=self._config.flush_after_s, cache_max_rows=cache_rows,
                    min_free_mb=self._config.min_free_mb,
                )
            return self._stores[uri]

    def _aliases(self) -> Aliases:
        """Aliases live in the service's own store (``store.uri``); with several store replicas, the
        coordinator keeps their table and makes every change."""
        return self._store(self._config.uri).aliases

    def _alias_table(self) -> dict[str, str]:
        if self._coordinator is not None:
            return self._ask(lambda coordinator: coordinator.aliases.remote())
        return self._aliases().table()

    def _physical(self, name: str) -> str:
        """The collection ``name`` reaches: every call resolves an alias here, so the mirror, flushes
        and codes of a collection are the same whichever name reached it."""
        if self._coordinator is not None:
            return self._ask(lambda coordinator: coordinator.target.remote(name))
        return self._aliases().target(name)

    def _uri_of(self, name: str) -> str:
        declared = self._declared.get(name)
        return (declared.uri if declared is not None else None) or self._config.uri

    def _at(self, name: str) -> tuple[MilvusStore, str]:
        """The store holding ``name``'s collection, and that collection's own name; with several store
        replicas, read after the newest write any of them made to it."""
        if self._coordinator is None:
            physical = self._physical(name)
            return self._store(self._uri_of(physical)), physical
        physical, newest = self._ask(lambda coordinator: coordinator.reading.remote(name))
        store = self._store(self._uri_of(physical))
        store.read_after(physical, newest)
        return store, physical

    def _resolve(self, name: str) -> CollectionConfig:
        """A collection's config: declared in serve.yaml, or read back from the one Milvus made; its
        ``search_defaults`` the block in use (:meth:`_resolve_defaults`)."""
        return self._resolve_defaults(name)[0]

    def _resolve_defaults(self, name: str) -> tuple[CollectionConfig, bool]:
        """(:meth:`_resolve`'s config, whether its ``search_defaults`` were applied to the live collection).
        Applied defaults replace the config's block whole: the config's own (declared, or given at creation)
        is in use again once they are removed."""
        name = self._physical(name)
        store, _ = self._at(name)
        if name in self._declared:
            config = self._declared[name]
            if not store.exists(name):  # created on first use: nothing applied yet
                return config, False
        else:
            if not store.exists(name):
                raise NotFoundError(f"collection {name!r} does not exist")
            config = store.config_of(name)
            if config is None:
                raise InvalidInputError(
                    f"collection {name!r} was not created by rayprism; declare it under collections: in the config"
                )
        applied = store.applied_search_defaults(name)
        if applied is None:
            return config, False
        return config.model_copy(update={"search_defaults": applied}), True

    async def ping(self) -> None:
        """Raises unless the service's own store answers (a cheap call: list its collections)."""
        await asyncio.to_thread(self._store(self._config.uri).names)

    async def target(self, name: str) -> str:
        """The physical collection ``name`` reaches now (itself unless it is an alias)."""
        return await asyncio.to_thread(self._physical, name)

    async def resolve(self, name: str) -> dict:
        """The config of the collection ``name`` reaches (its ``name`` the physical one), without where
        it lives: callers never see server paths."""
        config = await asyncio.to_thread(self._resolve, name)
        return config.model_dump(mode="json", exclude={"uri"})

    async def ensure(self, config: dict, dimensions: int) -> dict:
        """Create the collection if missing; a different existing schema is a 409."""
        collection = CollectionConfig.model_validate(config)

        def work() -> None:
            if collection.name in self._alias_table():
                raise ConflictError(f"{collection.name!r} is an alias; a collection needs a name of its own",
                                    param="name")
            self._store(self._uri_of(collection.name)).ensure(collection, dimensions)

        await asyncio.to_thread(work)
        return collection.model_dump(mode="json", exclude={"uri"})

    async def names(self) -> list[str]:
        uris = {self._config.uri, *(self._uri_of(name) for name in self._declared)}
        found: set[str] = set(self._declared)
        for uri in uris:
            found.update(await asyncio.to_thread(self._store(uri).names))
        return sorted(found)

    async def describe(self, name: str) -> dict:
        def work() -> dict:
            resolved, applied = self._resolve_defaults(name)
            config = {**resolved.model_dump(mode="json", exclude={"uri"}), "search_defaults_applied": applied}
            store, physical = self._at(name)
            if not store.exists(physical):  # declared but not created yet: created on first use
                return {**config, "count": 0, "dimensions": None, "created": False}
            return {
                **config,
                "count": store.count(physical),
                "dimensions": store.layout(physical).dimensions,
                "created": True,
                "mirror": store.memory(physical),
            }

        return await asyncio.to_thread(work)

    async def search_defaults(self, name: str) -> dict | None:
        """The search defaults in use by the collection ``name`` reaches: applied ones, else its config's."""
        defaults = (await asyncio.to_thread(self._resolve, name)).search_defaults
        return defaults.model_dump(mode="json", exclude_none=True) if defaults is not None else None

    async def apply_search_defaults(self, name: str, defaults: dict | None) -> None:
        """Keep ``defaults`` (checked by the caller against the collection and the served models) as the search
        defaults of the collection ``name`` reaches, in place of its config's; None removes them."""
        parsed = SearchDefaults.model_validate(defaults) if defaults is not None else None
        await asyncio.to_thread(self._call_at, name, MilvusStore.apply_search_defaults, parsed)

    async def drop(self, name: str) -> None:
        await asyncio.to_thread(self._call_at, name, MilvusStore.drop)

    async def upsert(self, name: str, rows: list[dict], via: str | None = None) -> int:
        """``via``: the name the caller resolved to ``name`` (an alias); if it reaches another
        collection now, nothing is written and :class:`CollectionMovedError` says to resolve again."""
        ids = list(dict.fromkeys(row.get(DOCUMENT_ID_FIELD, row["id"]) for row in rows))  # a piece's document
        return await self._writing(name, via, ids, MilvusStore.upsert, rows)

    async def delete(self, name: str, ids: list, via: str | None = None) -> int:
        return await self._writing(name, via, ids, MilvusStore.delete, ids)

    async def _writing(self, name: str, via: str | None, ids: list, method, *args) -> Any:
        """A write, once a re-embedding's freeze or a backup's hold of its collection ends, with its ids in the collection's change
        log while a re-embedding follows it; with several store replicas, the coordinator keeps both."""
        if self._coordinator is None:
            admitted = await self._admitted(name)
            try:
                return await asyncio.to_thread(self._write, name, via, ids, method, *args)
            finally:
                await self._write_ended(admitted, ids)
        lease, physical = await _answered(self._coordinator.write_begin.remote(name, via))
        written, store = [], None
        try:
            store = await asyncio.to_thread(self._store, self._uri_of(physical))
            result = await asyncio.to_thread(self._observed, method, store, physical, *args)
            written = ids
            return result
        finally:
            timestamp = store.last_write(physical) if store is not None else 0
            await _answered(self._coordinator.write_end.remote(lease, physical, written, timestamp))

    def _write(self, name: str, via: str | None, ids: list, method, *args) -> Any:
        with self._swap_lock.write():
            store, physical = self._at(name)
            check_not_moved(self._physical, name, via, physical)
            result = method(store, physical, *args)
            self._changes.record(physical, ids)
            return result

    # A snapshot's watch and hold of a collection's writes, kept by the coordinator where there is one.

    async def _watched(self, name: str) -> str:
        if self._coordinator is None:
            return await self._watch_writes(name)
        return await _answered(self._coordinator.writes_watch.remote(name))

    async def _held(self, physical: str, seconds: float) -> list:
        """Hold new writes to ``physical`` (those under way end first); the documents written since the watch."""
        if self._coordinator is None:
            await self._hold_writes(physical, seconds)
            return self._watched_ids(physical)
        return await _answered(self._coordinator.writes_hold.remote(physical, seconds))

    async def _released(self, physical: str) -> bool:
        if self._coordinator is None:
            return await self._release_writes(physical)
        return await _answered(self._coordinator.writes_release.remote(physical))

    async def _unwatched(self, physical: str) -> None:
        if self._coordinator is None:
            self._watched_ids(physical)
        else:
            await _answered(self._coordinator.writes_unwatch.remote(physical))

    async def ids(self, name: str) -> list:
        """Every document id of the collection ``name`` reaches."""
        return await asyncio.to_thread(self._call_at, name, MilvusStore.ids)

    async def get(self, name: str, ids: list, output_fields: list[str]) -> list[dict]:
        return await asyncio.to_thread(self._call_at, name, MilvusStore.get, ids, output_fields)

    async def pieces(self, name: str, document_id: Any) -> list[dict]:
        """A chunked collection's document as stored: its pieces (index, start, text), in order."""
        return await asyncio.to_thread(self._call_at, name, MilvusStore.pieces, document_id)

    async def document_page(self, name: str, limit: int, output_fields: list[str], after: Any = None,
                            offset: int = 0) -> StoredPage:
        """A page of the collection's documents in the order of their keys, after the id ``after`` or from ``offset``."""
        return await asyncio.to_thread(self._call_at, name, MilvusStore.document_page, limit, output_fields, after,
                                       offset)

    async def document_id_sample(self, name: str, size: int) -> tuple[int, list, str | None]:
        """For the console's map: how many documents there are, a sample of ``size`` of their ids, and the version of
        the in-memory mirror they were read from (None without one)."""
        return await asyncio.to_thread(self._call_at, name, MilvusStore.document_id_sample, size)

    async def document_sample(self, name: str, ids: list, fields: list[str], preview_chars: int
                              ) -> tuple[list, Any, list[dict]]:
        """For the console's map: these documents' ids, vectors (one matrix) and fields with a text preview."""
        return await asyncio.to_thread(self._call_at, name, MilvusStore.document_sample, ids, fields, preview_chars)

    async def document_hashes(self, name: str, ids: list) -> dict:
        """Of a chunked collection's documents ``ids``, those stored whole, with their digests."""
        return await asyncio.to_thread(self._call_at, name, MilvusStore.document_hashes, ids)

    async def flush(self, name: str) -> None:
        await asyncio.to_thread(self._call_at, name, MilvusStore.flush)

    async def sparse_hits(self, name: str, text: str, limit: int, filter: str = "") -> Hits:
        return await asyncio.to_thread(self._call_at, name, MilvusStore.sparse_hits, text, limit, filter)

    async def search(self, name: str, query: SearchQuery) -> SearchHits:
        return await asyncio.to_thread(self._call_at, name, MilvusStore.search, query)

    async def warm(self, name: str) -> None:
        """Build the collection's in-memory mirror and run one search (see ``MilvusStore.warm``)."""
        await asyncio.to_thread(self._call_at, name, MilvusStore.warm)

    def _call_at(self, name: str, method, *args) -> Any:
        """``method(store, collection, *args)`` on the collection ``name`` reaches, in its store."""
        store, physical = self._at(name)
        return self._observed(method, store, physical, *args)

    def _observed(self, method, store: MilvusStore, physical: str, *args) -> Any:
        """``method``'s call, in this replica's metrics where there are several store replicas (reported to the
        coordinator at most every :data:`METRICS_REPORT_S`)."""
        if self._metrics is None:
            return method(store, physical, *args)
        started = time.perf_counter()
        try:
            return method(store, physical, *args)
        finally:
            self._metrics.observe(method.__name__, time.perf_counter() - started)
            if time.monotonic() - self._reported >= METRICS_REPORT_S:
                self._reported = time.monotonic()
                exposition = self._metrics.exposition()
                self._loop.call_soon_threadsafe(self._coordinator.report.remote, self._metrics.replica, exposition)

    async def metrics(self) -> bytes:
        """With several store replicas, the metrics of each (as the coordinator last heard them); else none."""
        if self._coordinator is None:
            return b""
        return await _answered(self._coordinator.exposition.remote())

    # --- aliases -----------------------------------------------------------------------

    async def aliases(self) -> dict[str, str]:
        """Alias → collection."""
        return await asyncio.to_thread(self._alias_table)

    async def point_alias(self, alias: str, collection: str) -> str | None:
        """Create or atomically repoint ``alias``; returns the collection it pointed at before, if any."""
        def work() -> str | None:
            if alias in self._declared:
                raise ConflictError(f"{alias!r} is a collection; an alias needs a name of its own", param="name")
            if self._coordinator is not None:
                return self._ask(lambda coordinator: coordinator.point_alias.remote(alias, collection))
            return self._aliases().point(alias, collection)

        return await asyncio.to_thread(work)

    async def drop_alias(self, alias: str) -> str:
        """Remove ``alias`` (its collection stays); returns the collection it pointed at."""
        if self._coordinator is not None:
            return await _answered(self._coordinator.drop_alias.remote(alias))
        return await asyncio.to_thread(self._aliases().remove, alias)

    def close(self) -> None:
        """Flush what is pending and let go of every store (and a Lite file's lock)."""
        with self._opening:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
