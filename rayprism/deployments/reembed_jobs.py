"""The request side of re-embedding: start, resume and roll back jobs, and answer what their workers ask
of a serving replica. What a job does once started is :mod:`rayprism.deployments.reembed` (its worker)."""

from __future__ import annotations

import numpy as np

from rayprism.deployments.collections import CollectionsService
from rayprism.deployments.reembed import ReembedJobs
from rayprism.deployments.search import SearchService
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store_client import Store
from rayprism.platform.api.requests import ReembedRequest, RollbackRequest, SearchRequest
from rayprism.platform.api.responses import ReembedJob, ReembedJobList
from rayprism.platform.errors import ConflictError, InvalidInputError
from rayprism.platform.reembed_record import ReembedRecord


class ReembedService:
    """Re-embedding jobs as ``/v1/collections/{name}/reembed``, ``/rollback`` and ``/v1/reembed/{id}`` see them."""

    def __init__(self, embeddings: EmbeddingService, collections: CollectionsService, search: SearchService,
                 store: Store, jobs: ReembedJobs | None):
        """``jobs``: where re-embedding workers start (none: this service cannot re-embed)."""
        self._embeddings = embeddings
        self._collections = collections
        self._search = search
        self._store = store
        self._jobs = jobs

    def _job_view(self, record: ReembedRecord) -> ReembedJob:
        """A job as callers see it: a running job whose worker is gone is ``interrupted``."""
        gone = record.state == "running" and self._jobs is not None and not self._jobs.alive(record.id)
        return ReembedJob.of(record, interrupted=gone)

    def _jobs_or_refuse(self) -> ReembedJobs:
        if self._jobs is None:
            raise InvalidInputError("this service runs no re-embedding jobs (it has no Ray cluster of its own)")
        return self._jobs

    async def _alias_of(self, name: str) -> str:
        """``name`` if it is an alias; a collection's own name is refused with what to do instead."""
        if name in await self._store.aliases():
            return name
        await self._collections.collection(name)  # 404 when there is no such collection either
        raise InvalidInputError(
            f"{name!r} is a collection, not an alias: a re-embedding moves an alias from one collection to "
            f"another. Create one and address the collection through it, e.g. POST /v1/aliases "
            f'{{"name": "{name}_live", "collection": "{name}"}} (or `rayprism alias set {name}_live {name}`)',
            param="name")

    async def _alias_jobs(self, alias: str) -> list[ReembedRecord]:
        return [job for job in await self._store.reembed_jobs() if job.alias == alias]

    async def _resumable(self, jobs: list[ReembedRecord], model: str) -> ReembedRecord | None:
        """The alias's unfinished job: its worker still running is a 409; an interrupted one of
        ``model`` is the one to resume; of another model, a 409 that says so."""
        for job in jobs:
            if job.state != "running":
                continue
            if self._jobs.alive(job.id):
                raise ConflictError(f"{job.alias!r} is being re-embedded already: job {job.id} "
                                    f"(GET /v1/reembed/{job.id})")
            if job.model == model:
                return job
            raise ConflictError(f"job {job.id} moving {job.alias!r} to model {job.model!r} was "
                                f"interrupted: resume it (reembed with model {job.model!r}) first")
        return None

    async def start(self, name: str, request: ReembedRequest, origin: dict) -> tuple[ReembedJob, bool]:
        """(the job, started): a new job, or an interrupted one of the same model resumed (not started).
        ``origin``: the audit fields of the request (its worker audits the swap as this request's)."""
        jobs = self._jobs_or_refuse()
        alias = await self._alias_of(name)
        source = await self._collections.collection(alias)
        previous = await self._alias_jobs(alias)
        interrupted = await self._resumable(previous, request.model)
        if interrupted is not None:
            jobs.start(interrupted.id, origin)
            return self._job_view(await self._store.reembed_job(interrupted.id)), False
        self._embeddings.runner(request.model)  # 404 unless the service serves it
        kind = "multivector" if source.multivector else "chunked" if source.chunking else source.modality
        if kind != "text":
            raise InvalidInputError(f"collection {source.name!r} is {kind}: only text collections with one dense vector "
                                    "per document can be re-embedded (media items and token vectors are not stored to "
                                    "read back; a chunked collection's pieces would need cutting again by the new "
                                    "model's tokenizer, which re-embedding does not do yet)", param="name")
        if request.model == source.model:
            raise InvalidInputError(f"collection {source.name!r} is embedded by model {request.model!r} already",
                                    param="model")
        names = set(await self._store.names())
        number = 2
        while f"{alias}_v{number}" in names:
            number += 1
        target = source.model_copy(update={"name": f"{alias}_v{number}", "model": request.model, "uri": None,
                                           "search_defaults": await self._collections.search_defaults(source.name)})
        await self._collections.ensure(target)
        job_id = f"{alias}-{len(previous) + 1}"
        record = await self._store.reembed_begin(ReembedRecord(
            id=job_id, alias=alias, source=source.name, target=target.name, model=request.model,
            source_model=source.model, direction="forward", evaluation=request.evaluation,
            batch_size=request.batch_size, worker=jobs.worker(job_id)))
        jobs.start(job_id, origin)
        return self._job_view(record), True

    async def rollback(self, name: str, request: RollbackRequest | None, origin: dict) -> ReembedJob:
        """Replay the writes made since the last swap into the collection the alias reached before, with
        that collection's model, then point the alias back (a job, like a re-embedding)."""
        jobs = self._jobs_or_refuse()
        alias = await self._alias_of(name)
        previous = await self._alias_jobs(alias)
        current = await self._store.target(alias)
        swapped = [job for job in previous if job.direction == "forward" and job.state == "done"
                   and job.target == current]
        unfinished = [job for job in previous if job.state == "running"]
        if unfinished:
            if jobs.alive(unfinished[0].id) or unfinished[0].direction == "forward":
                raise ConflictError(f"job {unfinished[0].id} of {alias!r} has not finished", param="name")
            jobs.start(unfinished[0].id, origin)  # an interrupted rollback: resume it
            return self._job_view(await self._store.reembed_job(unfinished[0].id))
        if not swapped:
            raise InvalidInputError(f"no re-embedding moved {alias!r} to {current!r}: nothing to roll back",
                                    param="name")
        last = swapped[-1]
        await self._collections.collection(last.source)  # 404 if the old collection was dropped since
        job_id = f"{alias}-{len(previous) + 1}"
        record = await self._store.reembed_begin(ReembedRecord(
            id=job_id, alias=alias, source=current, target=last.source, model=last.source_model,
            source_model=last.model, direction="rollback", rolls_back=last.id,
            batch_size=(request.batch_size if request else None) or last.batch_size, worker=jobs.worker(job_id)))
        jobs.start(job_id, origin)
        return self._job_view(record)

    async def job(self, job_id: str) -> ReembedJob:
        return self._job_view(await self._store.reembed_job(job_id))

    async def jobs_of(self, name: str) -> ReembedJobList:
        return ReembedJobList(object="list", data=[self._job_view(job) for job in await self._alias_jobs(name)])

    async def vectors(self, model: str, texts: list[str]) -> np.ndarray:
        """Documents' vectors by ``model`` (its document prompt), for a re-embedding's worker."""
        await self._embeddings.runner(model).ready()
        return (await self._embeddings.embed_texts(model, texts, "document")).vectors

    async def search_ids(self, collection: str, query: str, k: int) -> list:
        """The ids a search of ``collection`` answers, as callers search it: for the evaluation gate."""
        results = await self._search(collection, SearchRequest(query=query, k=k, output_fields=[]))
        return [hit["id"] for hit in results["results"]]

