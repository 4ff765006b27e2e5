"""The store deployment: the one process that talks to Milvus, and the typed client replicas call it with.

A Milvus Lite file admits a single process, so every read and write of every
collection goes through this deployment (one replica for Lite; a Milvus server
has no such limit). Serving replicas embed text themselves and send vectors
here. Blocking pymilvus calls run in threads so a slow bulk write does not stall
searches.

Collections created at run time live in the service's own store (``store.uri``);
a collection in another store is declared in the config by whoever runs the
service, never chosen by a caller.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from ray import serve
from ray.exceptions import RayActorError

from rayprism.deployments.metrics import ServiceMetrics
from rayprism.platform.config import CollectionConfig, StoreConfig, is_lite_uri
from rayprism.platform.errors import InvalidInputError, NotFoundError, NotReadyError, RayprismError, unwrap
from rayprism.platform.store.milvus import MilvusStore, SearchQuery
from rayprism.platform.store.routes import Hits


class StoreReplica:
    def __init__(self, store: dict, collections: list[dict]):
        self._config = StoreConfig.model_validate(store)
        self._declared = {c["name"]: CollectionConfig.model_validate(c) for c in collections}
        self._stores: dict[str, MilvusStore] = {}
        self._opening = threading.Lock()

    def _store(self, uri: str) -> MilvusStore:
        """The store at ``uri``, opened once: concurrent first calls wait for the one opening it."""
        with self._opening:
            if uri not in self._stores:
                cache_rows = self._config.cache_max_rows if is_lite_uri(uri) else 0
                self._stores[uri] = MilvusStore(
                    uri, flush_after_s=self._config.flush_after_s, cache_max_rows=cache_rows
                )
            return self._stores[uri]

    def _uri_of(self, name: str) -> str:
        declared = self._declared.get(name)
        return (declared.uri if declared is not None else None) or self._config.uri

    def _at(self, name: str) -> MilvusStore:
        return self._store(self._uri_of(name))

    def _resolve(self, name: str) -> CollectionConfig:
        """A collection's config: declared in serve.yaml, or read back from the one Milvus made."""
        if name in self._declared:
            return self._declared[name]
        store = self._at(name)
        if not store.exists(name):
            raise NotFoundError(f"collection {name!r} does not exist")
        config = store.config_of(name)
        if config is None:
            raise InvalidInputError(
                f"collection {name!r} was not created by rayprism; declare it under collections: in the config"
            )
        return config

    async def ping(self) -> None:
        """Raises unless the service's own store answers (a cheap call: list its collections)."""
        await asyncio.to_thread(self._store(self._config.uri).names)

    async def resolve(self, name: str) -> dict:
        """The collection's config, without where it lives: callers never see server paths."""
        config = await asyncio.to_thread(self._resolve, name)
        return config.model_dump(mode="json", exclude={"uri"})

    async def ensure(self, config: dict, dimensions: int) -> dict:
        """Create the collection if missing; a different existing schema is a 409."""
        collection = CollectionConfig.model_validate(config)
        await asyncio.to_thread(self._at(collection.name).ensure, collection, dimensions)
        return collection.model_dump(mode="json", exclude={"uri"})

    async def names(self) -> list[str]:
        uris = {self._config.uri, *(self._uri_of(name) for name in self._declared)}
        found: set[str] = set(self._declared)
        for uri in uris:
            found.update(await asyncio.to_thread(self._store(uri).names))
        return sorted(found)

    async def describe(self, name: str) -> dict:
        def work() -> dict:
            config = self._resolve(name).model_dump(mode="json", exclude={"uri"})
            store = self._at(name)
            if not store.exists(name):  # declared but not created yet: created on first use
                return {**config, "count": 0, "dimensions": None, "created": False}
            return {
                **config,
                "count": store.count(name),
                "dimensions": store.layout(name).dimensions,
                "created": True,
                "mirror": store.memory(name),
            }

        return await asyncio.to_thread(work)

    async def drop(self, name: str) -> None:
        await asyncio.to_thread(self._at(name).drop, name)

    async def upsert(self, name: str, rows: list[dict]) -> int:
        return await asyncio.to_thread(self._at(name).upsert, name, rows)

    async def delete(self, name: str, ids: list) -> int:
        return await asyncio.to_thread(self._at(name).delete, name, ids)

    async def get(self, name: str, ids: list, output_fields: list[str]) -> list[dict]:
        return await asyncio.to_thread(self._at(name).get, name, ids, output_fields)

    async def flush(self, name: str) -> None:
        await asyncio.to_thread(self._at(name).flush, name)

    async def sparse_hits(self, name: str, text: str, limit: int, filter: str = "") -> Hits:
        return await asyncio.to_thread(self._at(name).sparse_hits, name, text, limit, filter)

    async def search(self, name: str, query: SearchQuery) -> list[dict]:
        return await asyncio.to_thread(self._at(name).search, name, query)


    def close(self) -> None:
        """Flush what is pending and let go of every store (and a Lite file's lock)."""
        with self._opening:
            for store in self._stores.values():
                store.close()
            self._stores.clear()


StoreDeployment = serve.deployment(StoreReplica, name="store")


class StoreClient:
    """The store deployment's methods, called through its Serve handle, with the store's own
    errors unwrapped from Ray's, a restarting store reported as 503, and every call's latency
    and failures in this replica's metrics."""

    def __init__(self, handle: Any, metrics: ServiceMetrics | None = None):
        self._handle = handle
        self._metrics = metrics

    async def _call(self, call: str, response) -> Any:
        started = time.perf_counter()
        try:
            return await response
        except RayActorError:
            error: Exception = NotReadyError("the store is restarting; retry shortly")
        except Exception as failure:  # a deployment call wraps the store's own error: raise that one
            error = unwrap(failure) or failure
        finally:
            if self._metrics is not None:
                self._metrics.store_latency(call).observe(time.perf_counter() - started)
        if self._metrics is not None:
            status = error.http_status if isinstance(error, RayprismError) else 500
            self._metrics.store_errors(call, str(status)).inc()
        raise error

    async def ping(self) -> None:
        return await self._call("ping", self._handle.ping.remote())

    async def resolve(self, name: str) -> dict:
        return await self._call("resolve", self._handle.resolve.remote(name))

    async def ensure(self, config: dict, dimensions: int) -> dict:
        return await self._call("ensure", self._handle.ensure.remote(config, dimensions))

    async def names(self) -> list[str]:
        return await self._call("names", self._handle.names.remote())

    async def describe(self, name: str) -> dict:
        return await self._call("describe", self._handle.describe.remote(name))

    async def drop(self, name: str) -> None:
        return await self._call("drop", self._handle.drop.remote(name))

    async def upsert(self, name: str, rows: list[dict]) -> int:
        return await self._call("upsert", self._handle.upsert.remote(name, rows))

    async def delete(self, name: str, ids: list) -> int:
        return await self._call("delete", self._handle.delete.remote(name, ids))

    async def get(self, name: str, ids: list, output_fields: list[str]) -> list[dict]:
        return await self._call("get", self._handle.get.remote(name, ids, output_fields))

    async def flush(self, name: str) -> None:
        return await self._call("flush", self._handle.flush.remote(name))

    async def sparse_hits(self, name: str, text: str, limit: int, filter: str = "") -> Hits:
        return await self._call("sparse_hits", self._handle.sparse_hits.remote(name, text, limit, filter))

    async def search(self, name: str, query: SearchQuery) -> list[dict]:
        return await self._call("search", self._handle.search.remote(name, query))
