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
import contextlib
import functools
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve
from ray.exceptions import RayActorError

from rayprism.deployments.metrics import ServiceMetrics
from rayprism.platform.config import CollectionConfig, StoreConfig, is_lite_uri
from rayprism.platform.constants import STORE_DEPLOYMENT_NAME
from rayprism.platform.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    RayprismError,
    unwrap,
)
from rayprism.platform.gates import SharedExclusiveGate
from rayprism.platform.store.aliases import Aliases
from rayprism.platform.store.changes import ChangeLogs, JobRecords
from rayprism.platform.store.milvus import MilvusStore, SearchQuery
from rayprism.platform.store.routes import Hits

replica_log = logging.getLogger("ray.serve")
"""Serve's own logger: what a replica logs there lands in its log file with the request's id."""


class CollectionMovedError(RayprismError):
    """A write resolved its alias before a re-embedding moved it: resolve again and write there."""

    http_status = 503


class SwapLock(SharedExclusiveGate):
    """Writes hold it together; the swap at the end of a re-embedding holds it alone, so it sees every
    write either wholly before it (written and logged) or wholly after (reaching the new collection)."""

    write = SharedExclusiveGate.shared
    swap = SharedExclusiveGate.exclusive


def reembed_directory(uri: str) -> Path:
    """Where a store keeps its re-embedding jobs and change logs: beside a Lite file, else ``./data/reembed``."""
    return Path(f"{uri}.reembed") if is_lite_uri(uri) else Path("data", "reembed").resolve()


class StoreReplica:
    def __init__(self, store: dict, collections: list[dict]):
        self._config = StoreConfig.model_validate(store)
        self._declared = {c["name"]: CollectionConfig.model_validate(c) for c in collections}
        self._stores: dict[str, MilvusStore] = {}
        self._opening = threading.Lock()
        self._swap_lock = SwapLock()
        self._frozen: dict[str, tuple[asyncio.Event, float]] = {}
        """Sources whose writes wait while a job replays its last writes: collection → (thawed, until)."""
        directory = reembed_directory(self._config.uri)
        self._changes = ChangeLogs(directory)
        self._jobs = JobRecords(directory)
        self._bridges: dict[tuple[str, str], str] = {
            (job["source"], job["model"]): job["id"] for job in self._jobs.all()
            if job["state"] == "running" and job["direction"] == "forward" and job.get("bridge")}
        """(source collection, new model) → the running job whose bridge answers that model's searches there."""

    def _store(self, uri: str) -> MilvusStore:
        """The store at ``uri``, opened once: concurrent first calls wait for the one opening it."""
        with self._opening:
            if uri not in self._stores:
                cache_rows = self._config.cache_max_rows if is_lite_uri(uri) else 0
                self._stores[uri] = MilvusStore(
                    uri, flush_after_s=self._config.flush_after_s, cache_max_rows=cache_rows
                )
            return self._stores[uri]

    def _aliases(self) -> Aliases:
        """Aliases live in the service's own store (``store.uri``)."""
        return self._store(self._config.uri).aliases

    def _physical(self, name: str) -> str:
        """The collection ``name`` reaches: every call resolves an alias here, so the mirror, flushes
        and codes of a collection are the same whichever name reached it."""
        return self._aliases().target(name)

    def _uri_of(self, name: str) -> str:
        declared = self._declared.get(name)
        return (declared.uri if declared is not None else None) or self._config.uri

    def _at(self, name: str) -> tuple[MilvusStore, str]:
        """The store holding ``name``'s collection, and that collection's own name."""
        physical = self._physical(name)
        return self._store(self._uri_of(physical)), physical

    def _resolve(self, name: str) -> CollectionConfig:
        """A collection's config: declared in serve.yaml, or read back from the one Milvus made."""
        name = self._physical(name)
        if name in self._declared:
            return self._declared[name]
        store, _ = self._at(name)
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
            if collection.name in self._aliases().table():
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
            config = self._resolve(name).model_dump(mode="json", exclude={"uri"})
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

    async def drop(self, name: str) -> None:
        await asyncio.to_thread(self._call_at, name, MilvusStore.drop)

    async def upsert(self, name: str, rows: list[dict], via: str | None = None) -> int:
        """``via``: the name the caller resolved to ``name`` (an alias); if it reaches another
        collection now, nothing is written and :class:`CollectionMovedError` says to resolve again."""
        await self._thawed(name)
        return await asyncio.to_thread(self._write, name, via, [row["id"] for row in rows], MilvusStore.upsert, rows)

    async def delete(self, name: str, ids: list, via: str | None = None) -> int:
        await self._thawed(name)
        return await asyncio.to_thread(self._write, name, via, ids, MilvusStore.delete, ids)

    async def _thawed(self, name: str) -> None:
        """Wait while a job replays the last writes of ``name`` before its swap (at most until the freeze
        ends by itself: a worker that died frozen holds no write for long)."""
        frozen = self._frozen.get(self._physical(name))
        if frozen is not None:
            thawed, until = frozen
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(thawed.wait(), max(0.0, until - time.monotonic()))

    def _write(self, name: str, via: str | None, ids: list, method, *args) -> Any:
        """A write, and its ids in the collection's change log while a re-embedding follows it."""
        with self._swap_lock.write():
            store, physical = self._at(name)
            if via is not None and via != name and self._physical(via) != physical:
                raise CollectionMovedError(f"{via!r} now reaches {self._physical(via)!r}")
            result = method(store, physical, *args)
            self._changes.record(physical, ids)
            return result

    async def ids(self, name: str) -> list:
        """Every document id of the collection ``name`` reaches."""
        return await asyncio.to_thread(self._call_at, name, MilvusStore.ids)

    async def get(self, name: str, ids: list, output_fields: list[str]) -> list[dict]:
        return await asyncio.to_thread(self._call_at, name, MilvusStore.get, ids, output_fields)

    async def flush(self, name: str) -> None:
        await asyncio.to_thread(self._call_at, name, MilvusStore.flush)

    async def sparse_hits(self, name: str, text: str, limit: int, filter: str = "") -> Hits:
        return await asyncio.to_thread(self._call_at, name, MilvusStore.sparse_hits, text, limit, filter)

    async def search(self, name: str, query: SearchQuery) -> list[dict]:
        return await asyncio.to_thread(self._call_at, name, MilvusStore.search, query)

    async def warm(self, name: str) -> None:
        """Build the collection's in-memory mirror and run one search (see ``MilvusStore.warm``)."""
        await asyncio.to_thread(self._call_at, name, MilvusStore.warm)

    def _call_at(self, name: str, method, *args) -> Any:
        """``method(store, collection, *args)`` on the collection ``name`` reaches, in its store."""
        store, physical = self._at(name)
        return method(store, physical, *args)

    # --- aliases -----------------------------------------------------------------------

    async def aliases(self) -> dict[str, str]:
        """Alias → collection."""
        return await asyncio.to_thread(lambda: self._aliases().table())

    async def point_alias(self, alias: str, collection: str) -> str | None:
        """Create or atomically repoint ``alias``; returns the collection it pointed at before, if any."""
        def work() -> str | None:
            if alias in self._declared:
                raise ConflictError(f"{alias!r} is a collection; an alias needs a name of its own", param="name")
            return self._aliases().point(alias, collection)

        return await asyncio.to_thread(work)

    async def drop_alias(self, alias: str) -> str:
        """Remove ``alias`` (its collection stays); returns the collection it pointed at."""
        return await asyncio.to_thread(self._aliases().remove, alias)

    # --- re-embedding jobs ---------------------------------------------------------------

    async def reembed_begin(self, record: dict) -> dict:
        """Record a new job and open the change log of its source, with no write in flight: every
        write after this is logged, every write before it is in what the job will read."""
        def work() -> dict:
            with self._swap_lock.swap():
                running = [job["id"] for job in self._jobs.all()
                           if job["alias"] == record["alias"] and job["state"] == "running"]
                if running:
                    raise ConflictError(f"{record['alias']!r} is being re-embedded already (job {running[0]})")
                if not self._changes.is_open(record["source"]):  # a rollback replays the log its swap opened
                    self._changes.open(record["source"])
                start = 0 if record["direction"] == "rollback" else self._changes.position(record["source"])
                return self._jobs.put({**record, "changes_start": start, "changes_applied": start})

        return await asyncio.to_thread(work)

    def _job(self, job_id: str) -> dict:
        """A job's record, or a 404. Methods share this rather than call :meth:`reembed_job`: under Serve a
        public method answers a caller's mistake as a value, not an exception (:func:`answering_caller_mistakes`)."""
        record = self._jobs.get(job_id)
        if record is None:
            raise NotFoundError(f"re-embedding job {job_id!r} does not exist")
        return record

    async def reembed_job(self, job_id: str) -> dict:
        record = await asyncio.to_thread(self._job, job_id)
        return {**record, "changes_pending": self._changes.position(record["source"]) - record["changes_applied"]
                if record["state"] == "running" else 0}

    async def reembed_jobs(self) -> list[dict]:
        return await asyncio.to_thread(self._jobs.all)

    async def reembed_update(self, job_id: str, fields: dict) -> dict:
        """Merge ``fields`` into the job's record (its progress, its result)."""
        def work() -> dict:
            record = self._jobs.put({**self._job(job_id), **fields, "updated": time.time()})
            if record["state"] != "running":
                self._bridge_ends(record)
            return record

        return await asyncio.to_thread(work)

    def _bridge_ends(self, record: dict) -> None:
        if self._bridges.get((record["source"], record["model"])) == record["id"]:
            del self._bridges[(record["source"], record["model"])]

    async def reembed_bridge_put(self, job_id: str, matrix: Any, fit_ids: list, quality: dict) -> dict:
        """Keep a forward job's bridge; from now until the job ends, searches of its source by its
        model go through it. ``quality`` goes into the job's record (``bridge``)."""
        def work() -> dict:
            record = self._job(job_id)
            self._jobs.put_bridge(job_id, matrix, fit_ids)
            record = self._jobs.put({**record, "bridge": quality, "updated": time.time()})
            if record["state"] == "running":
                self._bridges[(record["source"], record["model"])] = job_id
            return record

        return await asyncio.to_thread(work)

    async def reembed_bridge(self, collection: str, model: str) -> str | None:
        """The job whose bridge answers searches of the collection ``collection`` reaches by ``model``
        (a re-embedding of it to that model, not swapped yet), or None."""
        physical = await asyncio.to_thread(self._physical, collection)
        return self._bridges.get((physical, model))

    async def reembed_bridge_matrix(self, job_id: str) -> dict:
        """A job's bridge: ``matrix`` (new dimensions × old), ``method`` and the ``fit_ids`` it was fitted on."""
        record = await asyncio.to_thread(self._job, job_id)
        saved = await asyncio.to_thread(self._jobs.bridge, job_id)
        if saved is None or not record.get("bridge"):
            raise NotFoundError(f"re-embedding job {job_id!r} has no bridge")
        return {"matrix": saved[0], "fit_ids": saved[1], "method": record["bridge"]["method"]}

    async def reembed_changes(self, job_id: str, position: int, limit: int) -> tuple[int, list]:
        """Ids written to the job's source after the first ``position`` writes of its log (up to ``limit``)."""
        record = await asyncio.to_thread(self._job, job_id)
        return await asyncio.to_thread(self._changes.since, record["source"], position, limit)

    async def reembed_freeze(self, job_id: str, seconds: float) -> None:
        """Hold new writes to the job's source back for at most ``seconds``, so that its last replay
        ends (writes under way still land and are logged: the swap's check stays what decides)."""
        record = await asyncio.to_thread(self._job, job_id)
        self._frozen[record["source"]] = (asyncio.Event(), time.monotonic() + seconds)

    async def reembed_thaw(self, job_id: str) -> None:
        record = await asyncio.to_thread(self._job, job_id)
        frozen = self._frozen.pop(record["source"], None)
        if frozen is not None:
            frozen[0].set()

    async def reembed_swap(self, job_id: str, position: int) -> bool:
        """Point the job's alias at its target, atomically, if the job has replayed every write of its
        source's log (``position``); False (nothing done) if writes came since. A forward job's target
        then gets a log of its own, which a rollback replays into the old collection."""
        def work() -> bool:
            with self._swap_lock.swap():
                record = self._job(job_id)
                if self._changes.position(record["source"]) > position:
                    return False
                self._aliases().point(record["alias"], record["target"])
                self._changes.close(record["source"])
                if record["direction"] == "forward":
                    self._changes.open(record["target"])
                self._jobs.put({**record, "state": "done", "phase": "swapped", "changes_applied": position,
                                "updated": time.time()})
                self._bridge_ends(record)
                return True

        return await asyncio.to_thread(work)

    def close(self) -> None:
        """Flush what is pending and let go of every store (and a Lite file's lock)."""
        with self._opening:
            for store in self._stores.values():
                store.close()
            self._stores.clear()


@dataclass(frozen=True)
class CallerMistake:
    """A caller's mistake (a 4xx :class:`RayprismError`: a missing collection, a bad filter), returned over the
    store's handle instead of raised.

    Serve logs every exception a replica method raises as "Request failed." with its traceback
    (``_handle_errors_and_metrics`` in ``ray/serve/_private/replica.py``): right for our own faults, noise that
    buries them for a caller's mistake, which the store logs as one line instead. :class:`StoreClient` raises
    the error again on the calling side, so callers of the store see no difference."""

    error: RayprismError


def _answering(method):
    """``method`` returning a caller's mistake as a :class:`CallerMistake`, after one log line; anything else,
    our own faults, still raises and gets Serve's traceback."""

    @functools.wraps(method)
    async def answering(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except RayprismError as error:
            if not error.is_caller_mistake:
                raise
            one_line = " ".join(error.message.split())  # Milvus's filter errors draw a caret under the column
            replica_log.info("%s: %d %s", method.__name__, error.http_status, one_line)
            return CallerMistake(error)

    return answering


def answering_caller_mistakes(replica: type) -> type:
    """The class Serve runs: ``replica`` with every public coroutine method :func:`_answering`. ``replica`` itself
    raises as usual where it runs in process (unit tests). A method calling another public one would get the
    value, not the exception, so methods share private helpers instead (:meth:`StoreReplica._job`)."""
    methods = {name: _answering(method) for name, method in vars(replica).items()
               if not name.startswith("_") and inspect.iscoroutinefunction(method)}
    return type(replica.__name__, (replica,), methods)


StoreDeployment = serve.deployment(answering_caller_mistakes(StoreReplica), name=STORE_DEPLOYMENT_NAME)


class StoreClient:
    """The store deployment's methods, called through its Serve handle, with the store's own
    errors unwrapped from Ray's (or raised from a :class:`CallerMistake`), a restarting store
    reported as 503, and every call's latency and failures in this replica's metrics."""

    def __init__(self, handle: Any, metrics: ServiceMetrics | None = None):
        self._handle = handle
        self._metrics = metrics

    async def _call(self, call: str, response) -> Any:
        started = time.perf_counter()
        try:
            answer = await response
        except RayActorError:
            error: Exception = NotReadyError("the store is restarting; retry shortly")
        except Exception as failure:  # a deployment call wraps the store's own error: raise that one
            error = unwrap(failure) or failure
        else:
            if not isinstance(answer, CallerMistake):
                return answer
            error = answer.error
        finally:
            if self._metrics is not None:
                self._metrics.store_latency(call).observe(time.perf_counter() - started)
        if self._metrics is not None:
            status = error.http_status if isinstance(error, RayprismError) else 500
            self._metrics.store_errors(call, str(status)).inc()
        raise error

    async def ping(self) -> None:
        return await self._call("ping", self._handle.ping.remote())

    async def target(self, name: str) -> str:
        return await self._call("target", self._handle.target.remote(name))

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

    async def upsert(self, name: str, rows: list[dict], via: str | None = None) -> int:
        return await self._call("upsert", self._handle.upsert.remote(name, rows, via))

    async def delete(self, name: str, ids: list, via: str | None = None) -> int:
        return await self._call("delete", self._handle.delete.remote(name, ids, via))

    async def ids(self, name: str) -> list:
        return await self._call("ids", self._handle.ids.remote(name))

    async def reembed_begin(self, record: dict) -> dict:
        return await self._call("reembed_begin", self._handle.reembed_begin.remote(record))

    async def reembed_job(self, job_id: str) -> dict:
        return await self._call("reembed_job", self._handle.reembed_job.remote(job_id))

    async def reembed_jobs(self) -> list[dict]:
        return await self._call("reembed_jobs", self._handle.reembed_jobs.remote())

    async def reembed_update(self, job_id: str, fields: dict) -> dict:
        return await self._call("reembed_update", self._handle.reembed_update.remote(job_id, fields))

    async def reembed_changes(self, job_id: str, position: int, limit: int) -> tuple[int, list]:
        return await self._call("reembed_changes", self._handle.reembed_changes.remote(job_id, position, limit))

    async def reembed_freeze(self, job_id: str, seconds: float) -> None:
        return await self._call("reembed_freeze", self._handle.reembed_freeze.remote(job_id, seconds))

    async def reembed_thaw(self, job_id: str) -> None:
        return await self._call("reembed_thaw", self._handle.reembed_thaw.remote(job_id))

    async def reembed_bridge_put(self, job_id: str, matrix: Any, fit_ids: list, quality: dict) -> dict:
        return await self._call("reembed_bridge_put",
                                self._handle.reembed_bridge_put.remote(job_id, matrix, fit_ids, quality))

    async def reembed_bridge(self, collection: str, model: str) -> str | None:
        return await self._call("reembed_bridge", self._handle.reembed_bridge.remote(collection, model))

    async def reembed_bridge_matrix(self, job_id: str) -> dict:
        return await self._call("reembed_bridge_matrix", self._handle.reembed_bridge_matrix.remote(job_id))

    async def reembed_swap(self, job_id: str, position: int) -> bool:
        return await self._call("reembed_swap", self._handle.reembed_swap.remote(job_id, position))

    async def get(self, name: str, ids: list, output_fields: list[str]) -> list[dict]:
        return await self._call("get", self._handle.get.remote(name, ids, output_fields))

    async def flush(self, name: str) -> None:
        return await self._call("flush", self._handle.flush.remote(name))

    async def sparse_hits(self, name: str, text: str, limit: int, filter: str = "") -> Hits:
        return await self._call("sparse_hits", self._handle.sparse_hits.remote(name, text, limit, filter))

    async def search(self, name: str, query: SearchQuery) -> list[dict]:
        return await self._call("search", self._handle.search.remote(name, query))

    async def warm(self, name: str) -> None:
        return await self._call("warm", self._handle.warm.remote(name))

    async def aliases(self) -> dict[str, str]:
        return await self._call("aliases", self._handle.aliases.remote())

    async def point_alias(self, alias: str, collection: str) -> str | None:
        return await self._call("point_alias", self._handle.point_alias.remote(alias, collection))

    async def drop_alias(self, alias: str) -> str:
        return await self._call("drop_alias", self._handle.drop_alias.remote(alias))
