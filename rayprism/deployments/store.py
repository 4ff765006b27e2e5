"""The store deployment: the one process that talks to Milvus.

A Milvus Lite file admits a single process, so every read and write of every
collection goes through this deployment (one replica for Lite; a Milvus server
has no such limit). Serving replicas embed text themselves and send vectors
here. Blocking pymilvus calls run in threads so a slow bulk write does not stall
searches.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve

from rayprism.platform.config import CollectionConfig, StoreConfig, is_lite_uri
from rayprism.platform.errors import InvalidInputError, NotFoundError
from rayprism.platform.store.milvus import MilvusStore


class StoreReplica:
    def __init__(self, store: dict, collections: list[dict]):
        self._config = StoreConfig.model_validate(store)
        self._declared = {c["name"]: CollectionConfig.model_validate(c) for c in collections}
        self._stores: dict[str, MilvusStore] = {}
        self._created_at_uri: dict[str, str] = {}

    def _store(self, uri: str) -> MilvusStore:
        if uri not in self._stores:
            cache_rows = self._config.cache_max_rows if is_lite_uri(uri) else 0
            self._stores[uri] = MilvusStore(uri, flush_after_s=self._config.flush_after_s, cache_max_rows=cache_rows)
        return self._stores[uri]

    def _uri_of(self, name: str) -> str:
        declared = self._declared.get(name)
        if declared is not None:
            return declared.uri or self._config.uri
        return self._created_at_uri.get(name, self._config.uri)

    def _resolve(self, name: str) -> CollectionConfig:
        """A collection's config: declared in serve.yaml, or read back from the one Milvus made."""
        uri = self._uri_of(name)
        if name in self._declared:
            return self._declared[name].model_copy(update={"uri": uri})
        store = self._store(uri)
        if not store.exists(name):
            raise NotFoundError(f"collection {name!r} does not exist")
        config = store.config_of(name)
        if config is None:
            raise InvalidInputError(
                f"collection {name!r} in {uri} was not created by rayprism; declare it under collections: in the config"
            )
        return config.model_copy(update={"uri": uri})

    async def resolve(self, name: str) -> dict:
        config = await asyncio.to_thread(self._resolve, name)
        return config.model_dump(mode="json")

    async def ensure(self, config: dict, dimensions: int, *, create_only: bool = False) -> dict:
        """Create the collection if missing; a different existing schema is a 409."""
        collection = CollectionConfig.model_validate(config)
        uri = collection.uri or self._config.uri
        collection = collection.model_copy(update={"uri": uri})
        await asyncio.to_thread(self._store(uri).ensure, collection, dimensions)
        if collection.name not in self._declared:
            self._created_at_uri[collection.name] = uri
        return collection.model_dump(mode="json")

    async def names(self) -> list[str]:
        uris = {self._config.uri, *self._created_at_uri.values(), *(self._uri_of(n) for n in self._declared)}
        found: set[str] = set(self._declared)
        for uri in uris:
            found.update(await asyncio.to_thread(self._store(uri).names))
        return sorted(found)

    async def describe(self, name: str) -> dict:
        def work() -> dict:
            config = self._resolve(name)
            store = self._store(config.uri)
            if not store.exists(name):  # declared but not created yet: created on first use
                return {**config.model_dump(mode="json"), "count": 0, "dimensions": None, "created": False}
            layout = store.layout(name)
            return {
                **config.model_dump(mode="json"),
                "count": store.count(name),
                "dimensions": layout.dimensions,
                "created": True,
            }

        return await asyncio.to_thread(work)

    async def drop(self, name: str) -> None:
        def work() -> None:
            uri = self._uri_of(name)
            self._store(uri).drop(name)
            self._created_at_uri.pop(name, None)

        await asyncio.to_thread(work)

    async def upsert(self, name: str, rows: list[dict]) -> int:
        return await asyncio.to_thread(self._store(self._uri_of(name)).upsert, name, rows)

    async def delete(self, name: str, ids: list) -> int:
        return await asyncio.to_thread(self._store(self._uri_of(name)).delete, name, ids)

    async def get(self, name: str, ids: list, output_fields: list[str]) -> list[dict]:
        return await asyncio.to_thread(self._store(self._uri_of(name)).get, name, ids, output_fields)

    async def flush(self, name: str) -> None:
        await asyncio.to_thread(self._store(self._uri_of(name)).flush, name)

    async def sparse_hits(self, name: str, text: str, limit: int, filter: str = "") -> list[tuple]:
        return await asyncio.to_thread(self._store(self._uri_of(name)).sparse_hits, name, text, limit, filter)

    async def search(self, name: str, **kwargs: Any) -> list[dict]:
        return await asyncio.to_thread(self._store(self._uri_of(name)).search, name, **kwargs)


StoreDeployment = serve.deployment(StoreReplica, name="store")
