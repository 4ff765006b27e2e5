"""The one actor of a batch job that writes to Milvus (a Lite file admits a single process)."""

from __future__ import annotations

from rayprism.platform.config import CollectionConfig
from rayprism.platform.store.milvus import MilvusStore


class MilvusSink:
    def __init__(self, uri: str, name: str, spec: dict | None, model: str):
        self._arguments = (uri, name, spec, model)
        self._ensured = False

    def open(self) -> dict:
        """Open the store and settle the collection's config (returned). ``spec`` None (the job named
        only the collection): adopt the existing collection's schema, or create one with no metadata
        fields; a full spec must match what exists. Errors surface here, as the job's own."""
        uri, name, spec, model = self._arguments
        self._store = MilvusStore(uri)
        if spec is not None:
            self.collection = CollectionConfig.model_validate(spec)
        else:
            existing = self._store.config_of(name) if self._store.exists(name) else None
            self.collection = existing or CollectionConfig(name=name, model=model)
        return self.collection.model_dump(mode="json")

    def upsert(self, rows: list[dict]) -> int:
        """Created (or checked) on the first write, when the vectors tell their dimension."""
        if not self._ensured:
            self._store.ensure(self.collection, len(rows[0]["dense"]))
            self._ensured = True
        return self._store.upsert(self.collection.name, rows)

    def close(self) -> int | None:
        """Flush, close, and report the collection's size."""
        count = None
        if self._ensured or self._store.exists(self.collection.name):
            self._store.flush(self.collection.name)
            count = self._store.count(self.collection.name)
        self._store.close()
        return count
