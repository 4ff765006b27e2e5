"""How a batch job's rows reach its collection: the job's sink actor, and the writers its encoder actors hold.

A Milvus Lite file admits a single process, so a job either owns the store (no service may
hold it) or hands its documents, vectors included, to the service that does: every row then goes
through the one sink actor (:class:`SinkWriter`). A Milvus server takes writes from every worker
(:class:`ServerWriter`); the sink actor then only settles the collection before the units run and
flushes and counts it after (which one: :attr:`~rayprism.platform.config.jobs.OutputConfig.workers_write`).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Iterator

from rayprism.client import Client
from rayprism.jobs.records import ServerWrite
from rayprism.platform.codecs.wire import to_base64
from rayprism.platform.config import DENSE_FIELD, DOCUMENT_VECTOR_KEY, CollectionConfig
from rayprism.platform.errors import ConfigError, NotFoundError
from rayprism.platform.store.milvus import MilvusStore


class MilvusSink:
    def __init__(self, uri: str, name: str, spec: CollectionConfig | None, model: str):
        self._arguments = (uri, name, spec, model)
        self._ensured = False

    def open(self) -> CollectionConfig:
        """Open the store and settle the collection's config (returned). ``spec`` None (the job named
        only the collection): adopt the existing collection's schema, or create one with no metadata
        fields; a full spec must match what exists. Errors surface here, as the job's own."""
        uri, name, spec, model = self._arguments
        self._store = MilvusStore(uri)
        if spec is not None:
            self.collection = spec
        else:
            existing = self._store.config_of(name) if self._store.exists(name) else None
            self.collection = existing or CollectionConfig(name=name, model=model)
        return self.collection

    def ensure(self, dimensions: int) -> None:
        """Create the collection, or check the existing one, for vectors of ``dimensions``."""
        self._store.ensure(self.collection, dimensions)
        self._ensured = True

    def upsert(self, rows: list[dict]) -> int:
        """Created (or checked) on the first write, when the vectors tell their dimension."""
        if not self._ensured:
            self.ensure(len(rows[0][DENSE_FIELD]))
        return self._store.upsert(self.collection.name, rows)

    def close(self, read_after: int = 0) -> int | None:
        """Flush, close, and report the collection's size, counted once the server holds every write up to
        ``read_after`` (the newest timestamp of the workers' own writes, :class:`ServerWriter`)."""
        count = None
        if self._ensured or self._store.exists(self.collection.name):
            self._store.flush(self.collection.name)
            self._store.read_after(self.collection.name, read_after)
            count = self._store.count(self.collection.name)
        self._store.close()
        return count


class ServiceSink:
    """Upserts into a running service's collection through its documents API, each document with
    its ``vector``: the service stores without embedding again, and searches see the rows at once.
    A chunked collection's documents come without one (:func:`~rayprism.jobs.records.service_embeds`):
    the service cuts and embeds them."""

    def __init__(self, url: str, name: str, spec: CollectionConfig | None, model: str):
        self._arguments = (url, name, spec, model)

    def open(self) -> CollectionConfig:
        """The service's collection (created from ``spec`` if missing; an existing one must match it and
        be embedded by the job's model)."""
        url, name, spec, model = self._arguments
        self._client = Client(url)
        if spec is not None:  # 201 new, 200 identical, 409 different
            self._client.create_collection(**spec.model_dump(mode="json"))
        try:
            description = self._client.collection(name)
        except NotFoundError:
            raise ConfigError(f"the service at {url} has no collection {name!r}; give output.collection "
                              "as a full spec to create it") from None
        if description["model"] != model:
            raise ConfigError(f"collection {name!r} at {url} is embedded by model {description['model']!r}, "
                              f"this job's model is {model!r}: its vectors would not match")
        self.collection = CollectionConfig.model_validate(
            {key: value for key, value in description.items() if key in CollectionConfig.model_fields})
        return self.collection

    def upsert(self, rows: list[dict]) -> int:
        written = 0
        for part in _requests([_document(row) for row in rows]):
            result = self._client.upsert(self.collection.name, part)
            written += result["upserted"] + result["unchanged"]
        return written

    def close(self, read_after: int = 0) -> int:
        """The collection's size, as the service counts it (``read_after``: the sinks' one signature; the service
        wrote every row itself, so its reads see them)."""
        count = self._client.collection(self.collection.name)["count"]
        self._client.close()
        return count


class SinkWriter:
    """A worker's rows handed to the job's one sink actor, which writes them."""

    def __init__(self, sink: Any):
        self._sink = sink

    def upsert(self, rows: list[dict]) -> None:
        import ray

        ray.get(self._sink.upsert.remote(rows))


class ServerWriter:
    """A worker's own connection to the job's Milvus server, opened on its first write in the worker's process.

    The collection is settled before any unit runs (:meth:`MilvusSink.ensure`), so workers only upsert. A unit's
    rows are upserted by primary key before the worker marks the unit done: a unit redone after a worker died
    overwrites its rows, never adds them twice."""

    def __init__(self, uri: str, name: str):
        self._uri, self._name = uri, name

    @functools.cached_property
    def _store(self) -> MilvusStore:
        return MilvusStore(self._uri)

    def upsert(self, rows: list[dict]) -> ServerWrite:
        self._store.upsert(self._name, rows)
        return ServerWrite(os.getpid(), self._store.last_write(self._name))


REQUEST_MAX_BYTES = 2 << 20
"""Documents sent in one request, about: a quarter of the service's default body limit (8 MiB), so whole
documents (a chunked collection's) fit as well as a unit of vectors."""


def _document(row: dict) -> dict:
    """A collection row as the documents API takes it: its vector, if it has one, as base64."""
    document = {key: value for key, value in row.items() if key != DENSE_FIELD}
    if DENSE_FIELD in row:
        document[DOCUMENT_VECTOR_KEY] = to_base64(row[DENSE_FIELD])
    return document


def _requests(documents: list[dict]) -> Iterator[list[dict]]:
    """``documents`` in consecutive parts of about :data:`REQUEST_MAX_BYTES` of JSON (a larger document alone)."""
    part: list[dict] = []
    size = 0
    for document in documents:
        document_size = len(json.dumps(document, ensure_ascii=False).encode())
        if part and size + document_size > REQUEST_MAX_BYTES:
            yield part
            part, size = [], 0
        part.append(document)
        size += document_size
    if part:
        yield part
