"""Aliases: names that point at a physical collection, kept by Milvus itself (Lite and server alike).

Milvus resolves an alias in its own calls, but rayprism keys its in-memory mirrors, flush
timers and code files by collection, so every name is resolved here first, through
:meth:`Aliases.target`: the one place the rule lives. The table is read from Milvus once
and then kept by the store's writes (the store deployment is the collections' only writer).
"""

from __future__ import annotations

import threading
from typing import Callable

from pymilvus import MilvusClient

from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError


class Aliases:
    def __init__(self, client: MilvusClient, call: Callable):
        """``call``: the store's wrapper that turns Milvus failures into rayprism errors."""
        self._client = client
        self._call = call
        self._lock = threading.Lock()
        self._table: dict[str, str] | None = None

    def _loaded(self) -> dict[str, str]:
        if self._table is None:
            table = {}
            for collection in self._client.list_collections():
                for alias in self._client.list_aliases(collection)["aliases"]:
                    table[alias] = collection
            self._table = table
        return self._table

    def target(self, name: str) -> str:
        """The physical collection ``name`` reaches: itself unless it is an alias."""
        table = self._table  # read without the lock: the table is replaced whole, never changed in place
        if table is None:
            with self._lock:
                table = self._loaded()
        return table.get(name, name)

    def table(self) -> dict[str, str]:
        """Alias → collection."""
        with self._lock:
            return dict(self._loaded())

    def pointing_at(self, collection: str) -> list[str]:
        with self._lock:
            return sorted(alias for alias, target in self._loaded().items() if target == collection)

    def point(self, alias: str, collection: str) -> str | None:
        """Create ``alias`` or repoint it (atomically, in Milvus) at ``collection``; returns where it
        pointed before, None if it is new."""
        with self._lock:
            table = self._loaded()
            if alias in self._client.list_collections():
                raise ConflictError(f"{alias!r} is a collection; an alias needs a name of its own", param="name")
            if collection in table:
                raise InvalidInputError(f"{collection!r} is an alias (of {table[collection]!r}); point an alias "
                                        "at a collection", param="collection")
            if not self._client.has_collection(collection):
                raise NotFoundError(f"collection {collection!r} does not exist", param="collection")
            previous = table.get(alias)
            if previous == collection:
                return previous
            if previous is None:
                self._call(self._client.create_alias, collection, alias)
            else:
                self._call(self._client.alter_alias, collection, alias)
            self._table = {**table, alias: collection}  # one assignment: readers see the old or the new table
            return previous

    def remove(self, alias: str) -> str:
        """Drop ``alias``; returns the collection it pointed at."""
        with self._lock:
            table = self._loaded()
            if alias not in table:
                raise NotFoundError(f"alias {alias!r} does not exist")
            self._call(self._client.drop_alias, alias)
            self._table = {name: target for name, target in table.items() if name != alias}
            return table[alias]

