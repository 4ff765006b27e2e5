"""The store's side of re-embedding: job records, change logs, bridges, and the write freeze and swap.

What must be single for a re-embedding (the lock a swap takes against writes, the change logs, the job
records) lives in the store process, beside the writes it follows. :class:`ReembedLedger` is mixed into
:class:`~rayprism.deployments.store.StoreReplica` so its methods are the store deployment's own; with several
store replicas it lives in their coordinator instead (:mod:`~rayprism.deployments.store_coordinator`), which
each replica's writes pass through.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from pathlib import Path
from typing import Any

from rayprism.platform.config import is_lite_uri
from rayprism.platform.errors import ConflictError, NotFoundError
from rayprism.platform.gates import SharedExclusiveGate
from rayprism.platform.reembed_record import BridgeReport, ReembedRecord
from rayprism.platform.store.changes import ChangeLogs, JobRecords


class SwapLock(SharedExclusiveGate):
    """Writes hold it together; the swap at the end of a re-embedding holds it alone, so it sees every
    write either wholly before it (written and logged) or wholly after (reaching the new collection)."""

    write = SharedExclusiveGate.shared
    swap = SharedExclusiveGate.exclusive


def reembed_directory(uri: str) -> Path:
    """Where a store keeps its re-embedding jobs and change logs: beside a Lite file, else ``./data/reembed``."""
    return Path(f"{uri}.reembed") if is_lite_uri(uri) else Path("data", "reembed").resolve()


class ReembedLedger:
    """Re-embedding jobs as the store keeps them; the host (the store replica) provides ``_aliases()``,
    ``_physical(name)`` and ``_job(job_id)``'s records through :meth:`_open_ledger`."""

    def _open_ledger(self, uri: str) -> None:
        """Open the job records and change logs kept for the store at ``uri``."""
        self._swap_lock = SwapLock()
        self._frozen: dict[str, tuple[asyncio.Event, float]] = {}
        """Sources whose writes wait while a job replays its last writes: collection → (thawed, until)."""
        self._holds: dict[str, tuple[asyncio.Event, float]] = {}
        """Collections whose new writes wait while a backup reads them: collection → (released, until)."""
        self._under_way: collections.Counter[str] = collections.Counter()
        """Writes admitted and not ended yet, by collection: a hold waits for its collection's to end."""
        self._drained = asyncio.Condition()
        self._noted: dict[str, set] = {}
        """Collections a backup is reading → the document ids written since it began (:meth:`_watch_writes`)."""
        directory = reembed_directory(uri)
        self._changes = ChangeLogs(directory)
        self._jobs = JobRecords(directory)
        self._bridges: dict[tuple[str, str], str] = {
            (job.source, job.model): job.id for job in self._jobs.all()
            if job.state == "running" and job.direction == "forward" and job.bridge is not None}
        """(source collection, new model) → the running job whose bridge answers that model's searches there."""

    async def _thawed(self, name: str) -> None:
        """Wait while a job replays the last writes of ``name`` before its swap (at most until the freeze
        ends by itself: a worker that died frozen holds no write for long)."""
        frozen = self._frozen.get(self._physical(name))
        if frozen is not None:
            thawed, until = frozen
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(thawed.wait(), max(0.0, until - time.monotonic()))

    async def _admitted(self, name: str) -> str:
        """Wait out a re-embedding's freeze and a backup's hold of the collection ``name`` reaches, then count a
        write to it as under way (until :meth:`_write_ended`); returns that collection. Nothing is awaited
        between the check of the holds and the count, so a hold sees every write it must wait for."""
        await self._thawed(name)
        while True:
            physical = self._physical(name)
            held = self._holds.get(physical)
            if held is None:
                break
            released, until = held
            try:
                await asyncio.wait_for(released.wait(), max(0.0, until - time.monotonic()))
            except asyncio.TimeoutError:  # a hold past its time ends: writes go on, its backup is refused
                if self._holds.get(physical) is held:
                    del self._holds[physical]
        self._under_way[physical] += 1
        return physical

    async def _write_ended(self, physical: str, ids: list) -> None:
        """A write admitted to ``physical`` ended (``ids``: the documents it touched, or may have)."""
        watched = self._noted.get(physical)
        if watched is not None:
            watched.update(ids)
        async with self._drained:
            self._under_way[physical] -= 1
            if self._under_way[physical] <= 0:
                del self._under_way[physical]
            self._drained.notify_all()

    async def _watch_writes(self, name: str) -> str:
        """From now on, note the documents each write to the collection ``name`` reaches touches, until
        :meth:`_watched_ids`; returns that collection. A write that ended before this is seen by what is read
        after it, one that ends after it is noted: a backup reads the collection meanwhile, then reads the
        noted documents again while it holds writes back (:meth:`_hold_writes`), briefly."""
        physical = await asyncio.to_thread(self._physical, name)
        if physical in self._noted:
            raise ConflictError(f"a snapshot of {physical!r} is being taken: retry once it ends")
        self._noted[physical] = set()
        return physical

    def _watched_ids(self, physical: str) -> list:
        """The documents written since :meth:`_watch_writes` (which ends); none if it was not watched."""
        return list(self._noted.pop(physical, ()))

    async def _hold_writes(self, name: str, seconds: float) -> str:
        """Hold new writes to the collection ``name`` reaches back, for at most ``seconds``, once the writes
        under way have ended; returns that collection. Other collections' writes go on."""
        physical = await asyncio.to_thread(self._physical, name)
        if physical in self._holds:
            raise ConflictError(f"writes to {physical!r} are held for another snapshot: retry once it ends")
        self._holds[physical] = (asyncio.Event(), time.monotonic() + seconds)
        async with self._drained:
            await self._drained.wait_for(lambda: not self._under_way.get(physical))
        return physical

    async def _release_writes(self, physical: str) -> bool:
        """Let writes to ``physical`` go on; False if the hold had ended by itself (writes went on meanwhile)."""
        held = self._holds.pop(physical, None)
        if held is None:
            return False
        held[0].set()
        return time.monotonic() <= held[1]

    async def reembed_begin(self, record: ReembedRecord) -> ReembedRecord:
        """Record a new job and open the change log of its source, with no write in flight: every
        write after this is logged, every write before it is in what the job will read."""
        def work() -> ReembedRecord:
            with self._swap_lock.swap():
                running = [job.id for job in self._jobs.all() if job.alias == record.alias and job.state == "running"]
                if running:
                    raise ConflictError(f"{record.alias!r} is being re-embedded already (job {running[0]})")
                if not self._changes.is_open(record.source):  # a rollback replays the log its swap opened
                    self._changes.open(record.source)
                start = 0 if record.direction == "rollback" else self._changes.position(record.source)
                begun = self._jobs.put(record.model_copy(update={"changes_start": start, "changes_applied": start}))
                return self._with_pending(begun)

        return await asyncio.to_thread(work)

    def _with_pending(self, record: ReembedRecord) -> ReembedRecord:
        """``record`` with the writes logged that it has not replayed yet counted (none once it ended)."""
        if record.state == "running":
            record.changes_pending = self._changes.position(record.source) - record.changes_applied
        return record

    def _job(self, job_id: str) -> ReembedRecord:
        """A job's record, or a 404. Methods share this rather than call :meth:`reembed_job`: under Serve a
        public method answers a caller's mistake as a value, not an exception (:func:`answering_caller_mistakes`)."""
        record = self._jobs.get(job_id)
        if record is None:
            raise NotFoundError(f"re-embedding job {job_id!r} does not exist")
        return record

    async def reembed_job(self, job_id: str) -> ReembedRecord:
        return self._with_pending(await asyncio.to_thread(self._job, job_id))

    async def reembed_jobs(self) -> list[ReembedRecord]:
        """Every job, oldest first."""
        return [self._with_pending(job) for job in await asyncio.to_thread(self._jobs.all)]

    async def reembed_update(self, job_id: str, **fields: Any) -> ReembedRecord:
        """Set fields of the job's record (its progress, its result), each checked by :class:`ReembedRecord`:
        a name the record does not have, or a value it does not take, fails here rather than where it is read."""
        def work() -> ReembedRecord:
            record = self._job(job_id)
            for name, value in {**fields, "updated": time.time()}.items():
                setattr(record, name, value)
            self._jobs.put(record)
            if record.state != "running":
                self._bridge_ends(record)
            return self._with_pending(record)

        return await asyncio.to_thread(work)

    def _bridge_ends(self, record: ReembedRecord) -> None:
        if self._bridges.get((record.source, record.model)) == record.id:
            del self._bridges[(record.source, record.model)]

    async def reembed_bridge_put(self, job_id: str, matrix: Any, fit_ids: list, report: BridgeReport) -> ReembedRecord:
        """Keep a forward job's bridge; from now until the job ends, searches of its source by its
        model go through it. ``report`` (its quality) goes into the job's record (``bridge``)."""
        def work() -> ReembedRecord:
            record = self._job(job_id)
            self._jobs.put_bridge(job_id, matrix, fit_ids)
            record = self._jobs.put(record.model_copy(update={"bridge": report, "updated": time.time()}))
            if record.state == "running":
                self._bridges[(record.source, record.model)] = job_id
            return self._with_pending(record)

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
        if saved is None or record.bridge is None:
            raise NotFoundError(f"re-embedding job {job_id!r} has no bridge")
        return {"matrix": saved[0], "fit_ids": saved[1], "method": record.bridge.method}

    async def reembed_changes(self, job_id: str, position: int, limit: int) -> tuple[int, list]:
        """Ids written to the job's source after the first ``position`` writes of its log (up to ``limit``)."""
        record = await asyncio.to_thread(self._job, job_id)
        return await asyncio.to_thread(self._changes.since, record.source, position, limit)

    async def reembed_freeze(self, job_id: str, seconds: float) -> None:
        """Hold new writes to the job's source back for at most ``seconds``, so that its last replay
        ends (writes under way still land and are logged: the swap's check stays what decides)."""
        record = await asyncio.to_thread(self._job, job_id)
        frozen = self._frozen.get(record.source)  # frozen again: writes held since the first freeze wait on
        thawed = frozen[0] if frozen is not None else asyncio.Event()  # the same event, which the thaw sets
        self._frozen[record.source] = (thawed, time.monotonic() + seconds)

    async def reembed_thaw(self, job_id: str) -> None:
        record = await asyncio.to_thread(self._job, job_id)
        frozen = self._frozen.pop(record.source, None)
        if frozen is not None:
            frozen[0].set()

    async def reembed_swap(self, job_id: str, position: int) -> bool:
        """Point the job's alias at its target, atomically, if the job has replayed every write of its
        source's log (``position``); False (nothing done) if writes came since. A forward job's target
        then gets a log of its own, which a rollback replays into the old collection."""
        def work() -> bool:
            with self._swap_lock.swap():
                record = self._job(job_id)
                if self._changes.position(record.source) > position:
                    return False
                self._aliases().point(record.alias, record.target)
                self._changes.close(record.source)
                if record.direction == "forward":
                    self._changes.open(record.target)
                self._jobs.put(record.model_copy(update={"state": "done", "phase": "swapped",
                                                         "changes_applied": position, "updated": time.time()}))
                self._bridge_ends(record)
                return True

        return await asyncio.to_thread(work)

