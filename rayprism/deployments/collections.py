"""Collections on the serving replica: validate, embed here, then write or search via the store.

Text is embedded by this replica's own model runners (the same batching as
``/v1/embeddings``); only vectors and rows travel to the store deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Iterator

import numpy as np

from rayprism.deployments.reembed import ReembedJobs, new_record
from rayprism.deployments.runner import ItemErrors
from rayprism.deployments.schemas import (
    AliasRequest,
    DeleteDocumentsRequest,
    DocumentsRequest,
    MediaQuery,
    ReembedRequest,
    RollbackRequest,
    SearchRequest,
)
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store import CollectionMovedError, StoreClient, StoreReplica
from rayprism.platform.bridge import Bridge
from rayprism.platform.codecs.muvera import FDEConfig, encode_documents, encode_query
from rayprism.platform.config import DENSE_FIELD, CollectionConfig
from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError, RayprismError
from rayprism.platform.models.base import PromptRole, prompt_for_role
from rayprism.platform.store.documents import (
    DocumentProblem,
    InvalidDocumentsError,
    check_documents,
    normalise_id,
    validate_documents,
)
from rayprism.platform.store.filters import check_filter
from rayprism.platform.store.fusion import weighted
from rayprism.platform.store.milvus import SearchQuery
from rayprism.platform.store.tokens import TOKENS_KEY, fde_config
from rayprism.platform.store.vocabulary import DEFAULT_CANDIDATES

STORE_CALL_MAX_TOKEN_BYTES = 3 << 20
"""Token vectors sent to the store in one call: Serve's gRPC between replicas refuses messages over
4 MiB (``RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH``), and 60 MiniLM documents take about 8."""
STORE_HEALTH_TIMEOUT_S = 2.0
MAX_BRIDGES = 8
"""Re-embedding bridges a replica keeps (one per job that answered a search by its new model here)."""


def _media_problem(config: CollectionConfig, index: int, error: InvalidInputError) -> DocumentProblem:
    """A media error (about ``input[k]``) as the problem of the document at ``index``."""
    return DocumentProblem(index, config.media_key, re.sub(r"^input\[\d+\]:? ", "", error.message))


def _differences(requested: CollectionConfig, existing: CollectionConfig) -> list[str]:
    """One line per top-level key that differs: ``key: requested <x>, existing <y>``."""
    wanted, found = requested.model_dump(exclude={"uri"}), existing.model_dump(exclude={"uri"})
    return [f"{key}: requested {wanted[key]!r}, existing {found[key]!r}" for key in wanted if wanted[key] != found[key]]


def _store_calls(rows: list[dict]) -> Iterator[list[dict]]:
    """``rows`` in consecutive parts whose token vectors fit one store call (all of them at once without)."""
    part: list[dict] = []
    size = 0
    for row in rows:
        row_size = row[TOKENS_KEY].nbytes if TOKENS_KEY in row else 0
        if part and size + row_size > STORE_CALL_MAX_TOKEN_BYTES:
            yield part
            part, size = [], 0
        part.append(row)
        size += row_size
    if part:
        yield part


class CollectionsService:
    def __init__(self, embeddings: EmbeddingService, store: StoreClient | StoreReplica,
                 jobs: ReembedJobs | None = None):
        """``store``: the store deployment through its client, or a store replica in this process.
        ``jobs``: where re-embedding workers start (none: this service cannot re-embed)."""
        self._embeddings = embeddings
        self._store = store
        self._jobs = jobs
        self._known: dict[str, CollectionConfig] = {}
        self._bridges: dict[str, Bridge] = {}
        """Re-embedding jobs' bridges by job id (a job fits its bridge once), fetched on first use."""
        self._reached: dict[str, str] = {}
        """The physical collection each alias last resolved to: what its requests are labelled by."""

    @contextlib.contextmanager
    def _forgotten_if_gone(self, name: str) -> Iterator[None]:
        """A collection the store no longer has is forgotten here too."""
        try:
            yield
        except NotFoundError:
            self._known.pop(name, None)
            raise

    async def store_problem(self, timeout_s: float = STORE_HEALTH_TIMEOUT_S) -> str | None:
        """Why the store cannot serve right now, or None when it answers."""
        try:
            await asyncio.wait_for(self._store.ping(), timeout_s)
        except asyncio.TimeoutError:
            return f"the store did not answer within {timeout_s:g} s (restarting?)"
        except RayprismError as error:
            return error.message
        return None

    async def warm(self, name: str) -> None:
        """Have the store pay now for what the first search of ``name`` would (see ``MilvusStore.warm``)."""
        await self._store.warm(name)

    def model_of(self, name: str) -> str | None:
        known = self._known.get(name) or self._known.get(self._reached.get(name, ""))
        return known.model if known else None

    async def collection(self, name: str) -> CollectionConfig:
        """The config of the collection ``name`` reaches now, created in Milvus on first use. Its
        ``name`` is the physical collection's: a request resolves an alias once, here, and makes
        every store call with that name, so a repointed alias never mixes two collections (or two
        models) in one answer. Physical names are remembered; aliases are asked for each time."""
        known = self._known.get(name)
        if known is None:
            physical = await self._store.target(name)
            if physical != name:
                self._reached[name] = physical
            known = self._known.get(physical)
            if known is None:
                known = await self._ensure(CollectionConfig.model_validate(await self._store.resolve(physical)))
        return known

    async def _ensure(self, config: CollectionConfig) -> CollectionConfig:
        runner = self._embeddings.runner(config.model)
        await runner.ready()
        if config.modality not in runner.encoder.modalities:
            raise InvalidInputError(f"model {config.model!r} embeds {sorted(runner.encoder.modalities)}, "
                                    f"not {config.modality}", param="modality")
        dimensions = self._fde(config).output_dim if config.multivector else runner.encoder.dimensions
        ensured = CollectionConfig.model_validate(
            await self._store.ensure(config.model_dump(mode="json"), dimensions)
        )
        self._known[config.name] = ensured
        return ensured

    def _fde(self, config: CollectionConfig) -> FDEConfig:
        """A multi-vector collection's MUVERA encoding, for its model's token vectors."""
        runner = self._embeddings.runner(config.model)
        if not runner.gives_tokens:
            raise InvalidInputError(f"collection {config.name!r} is multivector, but model {config.model!r} gives no "
                                    "token vectors: it needs a transformer model served in this replica by the "
                                    "torch backend", param="multivector")
        return fde_config(config.multivector.fde.model_dump(), runner.encoder.token_dimensions)

    # --- collections -------------------------------------------------------------------

    async def list(self) -> dict:
        names = await self._store.names()
        return {"object": "list", "data": [await self.describe(name) for name in names]}

    async def describe(self, name: str) -> dict:
        return {"object": "collection", **(await self._store.describe(name))}

    async def create(self, config: CollectionConfig) -> tuple[dict, bool]:
        """(description, created): an identical existing collection is fine, a different one a 409.

        Collections made over the API live in the service's own store: which file or server a
        collection lives in is the operator's choice (``collections:`` in the config), never a caller's.
        """
        if config.uri is not None:
            raise InvalidInputError(
                "uri cannot be chosen over the API: collections created here live in the service's store; "
                "declare a collection in another store under collections: in the service's config", param="uri"
            )
        if config.model not in self._embeddings.runners:
            raise InvalidInputError(
                f"model {config.model!r} is not served here; models: {sorted(self._embeddings.runners)}", param="model"
            )
        try:
            existing = CollectionConfig.model_validate(await self._store.resolve(config.name))
            existed = (await self._store.describe(config.name))["created"]
        except NotFoundError:
            existing, existed = None, False
        if existing is not None:
            differences = _differences(config, existing)
            if differences:
                raise ConflictError(f"collection {config.name!r} exists with a different config: {'; '.join(differences)}")
        await self._ensure(config)
        return {**(await self.describe(config.name)), "created": not existed}, not existed

    async def drop(self, name: str) -> dict:
        self._known.pop(name, None)
        await self._store.drop(name)
        return {"object": "collection.deleted", "name": name, "deleted": True}

    # --- aliases -----------------------------------------------------------------------

    async def list_aliases(self) -> dict:
        table = await self._store.aliases()
        return {"object": "list", "data": [{"object": "alias", "name": alias, "collection": table[alias]}
                                           for alias in sorted(table)]}

    async def point_alias(self, request: AliasRequest) -> tuple[dict, bool]:
        """(description, created): the alias made, or repointed in one step (a search in flight
        answers wholly from the collection it resolved)."""
        previous = await self._store.point_alias(request.name, request.collection)
        self._reached[request.name] = (await self.collection(request.collection)).name  # for its metrics label
        return {"object": "alias", "name": request.name, "collection": request.collection,
                "previous": previous}, previous is None

    async def drop_alias(self, name: str) -> dict:
        collection = await self._store.drop_alias(name)
        return {"object": "alias.deleted", "name": name, "collection": collection, "deleted": True}

    # --- re-embedding ------------------------------------------------------------------

    def _job_view(self, record: dict) -> dict:
        """A job's record as callers see it: a running job whose worker is gone is ``interrupted``."""
        view = {key: value for key, value in record.items()
                if key not in ("evaluation", "batch_size", "worker", "changes_start")}
        if record["state"] == "running" and self._jobs is not None and not self._jobs.alive(record["id"]):
            view["state"] = "interrupted"
        return view

    def _jobs_or_refuse(self) -> ReembedJobs:
        if self._jobs is None:
            raise InvalidInputError("this service runs no re-embedding jobs (it has no Ray cluster of its own)")
        return self._jobs

    async def _alias_of(self, name: str) -> str:
        """``name`` if it is an alias; a collection's own name is refused with what to do instead."""
        if name in await self._store.aliases():
            return name
        await self.collection(name)  # 404 when there is no such collection either
        raise InvalidInputError(
            f"{name!r} is a collection, not an alias: a re-embedding moves an alias from one collection to "
            f"another. Create one and address the collection through it, e.g. POST /v1/aliases "
            f'{{"name": "{name}_live", "collection": "{name}"}} (or `rayprism alias set {name}_live {name}`)',
            param="name")

    async def _alias_jobs(self, alias: str) -> list[dict]:
        return [job for job in await self._store.reembed_jobs() if job["alias"] == alias]

    async def _resumable(self, jobs: list[dict], model: str) -> dict | None:
        """The alias's unfinished job: its worker still running is a 409; an interrupted one of
        ``model`` is the one to resume; of another model, a 409 that says so."""
        for job in jobs:
            if job["state"] != "running":
                continue
            if self._jobs.alive(job["id"]):
                raise ConflictError(f"{job['alias']!r} is being re-embedded already: job {job['id']} "
                                    f"(GET /v1/reembed/{job['id']})")
            if job["model"] == model:
                return job
            raise ConflictError(f"job {job['id']} moving {job['alias']!r} to model {job['model']!r} was "
                                f"interrupted: resume it (reembed with model {job['model']!r}) first")
        return None

    async def reembed(self, name: str, request: ReembedRequest) -> tuple[dict, bool]:
        """(the job, started): a new job, or an interrupted one of the same model resumed (not started)."""
        jobs = self._jobs_or_refuse()
        alias = await self._alias_of(name)
        source = await self.collection(alias)
        previous = await self._alias_jobs(alias)
        interrupted = await self._resumable(previous, request.model)
        if interrupted is not None:
            jobs.start(interrupted["id"])
            return self._job_view(await self._store.reembed_job(interrupted["id"])), False
        self._embeddings.runner(request.model)  # 404 unless the service serves it
        if source.modality != "text" or source.multivector is not None:
            raise InvalidInputError(f"collection {source.name!r} is {'multivector' if source.multivector else source.modality}: "
                                    "only text collections with one dense vector per document can be re-embedded "
                                    "(media items and token vectors are not stored to read back)", param="name")
        if request.model == source.model:
            raise InvalidInputError(f"collection {source.name!r} is embedded by model {request.model!r} already",
                                    param="model")
        names = set(await self._store.names())
        number = 2
        while f"{alias}_v{number}" in names:
            number += 1
        target = source.model_copy(update={"name": f"{alias}_v{number}", "model": request.model, "uri": None})
        await self._ensure(target)
        job_id = f"{alias}-{len(previous) + 1}"
        record = new_record(job_id, alias, source.name, target.name, request.model, source.model,
                            direction="forward", evaluation=request.evaluation.model_dump(mode="json"),
                            batch_size=request.batch_size, worker=jobs.worker(job_id))
        record = await self._store.reembed_begin(record)
        jobs.start(job_id)
        return self._job_view(record), True

    async def rollback(self, name: str, request: RollbackRequest | None = None) -> dict:
        """Replay the writes made since the last swap into the collection the alias reached before, with
        that collection's model, then point the alias back (a job, like a re-embedding)."""
        jobs = self._jobs_or_refuse()
        alias = await self._alias_of(name)
        previous = await self._alias_jobs(alias)
        current = await self._store.target(alias)
        swapped = [job for job in previous if job["direction"] == "forward" and job["state"] == "done"
                   and job["target"] == current]
        unfinished = [job for job in previous if job["state"] == "running"]
        if unfinished:
            if jobs.alive(unfinished[0]["id"]) or unfinished[0]["direction"] == "forward":
                raise ConflictError(f"job {unfinished[0]['id']} of {alias!r} has not finished", param="name")
            jobs.start(unfinished[0]["id"])  # an interrupted rollback: resume it
            return self._job_view(await self._store.reembed_job(unfinished[0]["id"]))
        if not swapped:
            raise InvalidInputError(f"no re-embedding moved {alias!r} to {current!r}: nothing to roll back",
                                    param="name")
        last = swapped[-1]
        await self.collection(last["source"])  # 404 if the old collection was dropped since
        job_id = f"{alias}-{len(previous) + 1}"
        record = new_record(job_id, alias, current, last["source"], last["source_model"], last["model"],
                            direction="rollback", evaluation={},
                            batch_size=(request.batch_size if request else None) or last["batch_size"],
                            worker=jobs.worker(job_id))
        record = await self._store.reembed_begin({**record, "rolls_back": last["id"]})
        jobs.start(job_id)
        return self._job_view(record)

    async def reembed_job(self, job_id: str) -> dict:
        return self._job_view(await self._store.reembed_job(job_id))

    async def reembed_jobs(self, name: str) -> dict:
        jobs = [self._job_view(job) for job in await self._store.reembed_jobs() if job["alias"] == name]
        return {"object": "list", "data": jobs}

    async def reembed_vectors(self, model: str, texts: list[str]) -> np.ndarray:
        """Documents' vectors by ``model`` (its document prompt), for a re-embedding's worker."""
        runner = self._embeddings.runner(model)
        await runner.ready()
        return (await runner.embed(texts, "text", prompt_for_role(runner.encoder.prompts, "document"))).vectors

    async def reembed_search(self, collection: str, query: str, k: int) -> list:
        """The ids a search of ``collection`` answers, as callers search it: for the evaluation gate."""
        results = await self.search(collection, SearchRequest(query=query, k=k, output_fields=[]))
        return [hit["id"] for hit in results["results"]]

    # --- documents ---------------------------------------------------------------------

    async def upsert(self, name: str, request: DocumentsRequest) -> dict:
        """Write what changed: text documents stored with the same text and fields are left alone (a
        re-run costs no embedding), documents with their own ``vector`` are not embedded. A media
        document's item is embedded, not stored, so media documents are always written. A write whose
        alias moved (a re-embedding's swap) before it reached the store is made again where it points now."""
        self._embeddings.check_input_count(len(request.documents), "documents", "documents")
        try:
            return await self._upsert(name, request)
        except CollectionMovedError:
            return await self._upsert(name, request)

    async def _upsert(self, name: str, request: DocumentsRequest) -> dict:
        config = await self.collection(name)
        dimensions = self._embeddings.runner(config.model).encoder.dimensions
        if config.media_key:  # media problems are listed together with the others
            rows, problems = check_documents(config, request.documents, dimensions=dimensions)
        else:  # a multi-vector document cannot bring its own vector: it has no token vectors
            rows = validate_documents(config, request.documents, dimensions=None if config.multivector else dimensions)
        with self._forgotten_if_gone(config.name):
            if config.media_key:
                changed = rows
                tokens = await self._embed_media(config, request.documents, rows, problems)
            elif config.multivector:
                changed = await self._changed(config, rows)
                tokens = await self._embed_token_vectors(config, rows, changed) if changed else 0
            else:
                changed = await self._changed(config, rows)
                to_embed = [row for row in changed if DENSE_FIELD not in row]
                tokens = 0
                if to_embed:
                    embedded = await self._embed(config.model, [row[config.text_field] for row in to_embed], "document")
                    for row, vector in zip(to_embed, embedded.vectors):
                        row[DENSE_FIELD] = vector
                    tokens = sum(embedded.token_counts)
            count = 0
            for part in _store_calls(changed):
                count += await self._store.upsert(config.name, part, name)
        return {"object": "documents.upserted", "collection": name, "upserted": count,
                "unchanged": len(rows) - len(changed), "tokens": tokens}

    async def _changed(self, config: CollectionConfig, rows: list[dict]) -> list[dict]:
        """The rows that bring a vector of their own or differ from what the store holds."""
        content = ["id", config.text_field, *config.fields]
        stored = {row["id"]: row for row in await self._store.get(config.name, [row["id"] for row in rows], content)}
        return [row for row in rows if DENSE_FIELD in row or stored.get(row["id"]) != {key: row[key] for key in content}]

    async def _embed_token_vectors(self, config: CollectionConfig, rows: list[dict], changed: list[dict]) -> int:
        """Token vectors and their MUVERA encoding for each changed row of a multi-vector collection; a
        document whose text gives no token vector (only special tokens, such as [UNK]) is a problem."""
        runner = self._embeddings.runner(config.model)
        embedded = await runner.embed_tokens([row[config.text_field] for row in changed],
                                             prompt_for_role(runner.encoder.prompts, "document"))
        index_of = {row["id"]: index for index, row in enumerate(rows)}
        empty = [DocumentProblem(index_of[row["id"]], config.text_field, "gives no token vectors (only special tokens)")
                 for row, matrix in zip(changed, embedded.tokens) if not len(matrix)]
        if empty:
            raise InvalidDocumentsError(empty)
        offsets = np.concatenate([[0], np.cumsum([len(matrix) for matrix in embedded.tokens])])
        encodings = encode_documents(np.concatenate(embedded.tokens), offsets, self._fde(config))
        for row, matrix, encoding in zip(changed, embedded.tokens, encodings):
            row[TOKENS_KEY], row[DENSE_FIELD] = matrix, encoding
        return sum(embedded.token_counts)

    async def _embed_media(self, config: CollectionConfig, documents: list, rows: list[dict],
                           problems: list[DocumentProblem]) -> int:
        """Vectors for the rows without one, from their documents' media items. The items of documents
        without other problems are decoded; every problem is reported with its document's index, and
        then nothing is written."""
        runner = self._embeddings.runner(config.model)
        invalid = {problem.index for problem in problems}
        pending = [(index, row) for index, row in enumerate(rows) if DENSE_FIELD not in row and index not in invalid]
        items = [documents[index][config.media_key] for index, _ in pending]
        try:
            items = await self._embeddings.media_inputs(items, config.modality)
        except InvalidInputError as error:  # a URL that could not be fetched: param is input[k]
            position = int(error.param.strip("input[]"))
            problems = [*problems, _media_problem(config, pending[position][0], error)]
            raise InvalidDocumentsError(sorted(problems, key=lambda problem: problem.index)) from None
        embedded = await runner.embed_each(items, config.modality) if items else None
        if isinstance(embedded, ItemErrors):
            problems = [*problems, *(_media_problem(config, pending[position][0], error)
                                     for position, error in embedded.errors.items())]
        if problems:
            raise InvalidDocumentsError(sorted(problems, key=lambda problem: problem.index))
        if embedded is None:
            return 0
        for (_, row), vector in zip(pending, embedded.vectors):
            row[DENSE_FIELD] = vector
        return sum(embedded.token_counts)

    async def delete(self, name: str, request: DeleteDocumentsRequest) -> dict:
        try:
            return await self._delete(name, request)
        except CollectionMovedError:
            return await self._delete(name, request)

    async def _delete(self, name: str, request: DeleteDocumentsRequest) -> dict:
        config = await self.collection(name)
        ids = []
        for index, value in enumerate(request.ids):
            try:
                ids.append(normalise_id(config, value))
            except ValueError as error:
                raise InvalidInputError(f"ids[{index}] {error}", param=f"ids[{index}]") from None
        with self._forgotten_if_gone(config.name):
            count = await self._store.delete(config.name, ids, name)
        return {"object": "documents.deleted", "collection": name, "deleted": count}

    async def get_document(self, name: str, document_id: str) -> dict:
        config = await self.collection(name)
        try:
            key = normalise_id(config, int(document_id) if config.id_type == "int64" else document_id)
        except ValueError as error:
            raise InvalidInputError(f"id {error}", param="id") from None
        with self._forgotten_if_gone(config.name):
            found = await self._store.get(config.name, [key], ["id", config.text_field, *config.fields])
        if not found:
            raise NotFoundError(f"document {document_id!r} is not in collection {name!r}")
        return {"object": "document", **found[0]}

    # --- search ------------------------------------------------------------------------

    async def search(self, name: str, request: SearchRequest) -> dict:
        started = time.perf_counter()
        config = await self.collection(name)
        example = request.query if isinstance(request.query, MediaQuery) else None
        default_mode = "multivector" if config.multivector else "hybrid" if config.bm25 and example is None else "dense"
        mode = request.mode or default_mode
        self._check_multivector_mode(config, mode)
        if mode in ("hybrid", "sparse") and not config.bm25:
            raise InvalidInputError(f"mode {mode!r} needs BM25, which collection {name!r} does not have", param="mode")
        if mode != "dense" and example is not None:
            raise InvalidInputError(f"a search by example is dense; mode {mode!r} needs text", param="mode")
        self._check_query_modality(config, example, mode)
        bridge = await self._search_bridge(name, config, request)
        reranker = self._reranker(config, request)
        readable = ["id", config.text_field, *config.fields]
        output_fields = request.output_fields if request.output_fields is not None else readable[1:]
        for field in output_fields:
            if field not in readable:
                raise InvalidInputError(f"output_fields: unknown field {field!r}; fields are {readable}", param="output_fields")
        filter_expression = check_filter(request.filter, readable) if request.filter else ""
        # hits the store answers: those the rerank stage rescores, or the answer itself
        first_k = max(request.k, request.rerank.candidates) if reranker else request.k
        default_candidates = config.multivector.candidates if mode == "multivector" else DEFAULT_CANDIDATES
        candidates = request.candidates or max(default_candidates, first_k)
        if candidates < first_k:
            raise InvalidInputError(f"candidates ({candidates}) must be ≥ k ({request.k}) and rerank.candidates",
                                    param="candidates")
        dense_vector = sparse_hits = query_tokens = None
        with self._forgotten_if_gone(config.name):
            if mode == "hybrid":  # BM25 runs in the store while this replica embeds the query
                dense_vector, sparse_hits = await asyncio.gather(
                    self._query_vector(config, request, bridge),
                    self._store.sparse_hits(config.name, request.query, candidates, filter_expression),
                )
            elif mode == "dense":
                dense_vector = await self._query_vector(config, request, bridge)
            elif mode == "multivector":
                query_tokens = await self._query_tokens(config, request.query)
                dense_vector = encode_query(query_tokens, self._fde(config))
            query = SearchQuery(
                mode=mode, k=first_k, dense_vector=dense_vector, query_tokens=query_tokens,
                text=None if example else request.query,
                metric=config.index.metric,
                candidates=candidates, filter=filter_expression, fusion=request.fusion.model_dump(),
                output_fields=sorted({*output_fields, config.text_field}) if reranker else output_fields,
                sparse_hits=sparse_hits,
            )
            results = await self._store.search(config.name, query)
        if reranker is not None and results:
            results = await self._reranked(reranker, config, request, results, output_fields)
        self._embeddings.metrics.search_latency(name, mode).observe(time.perf_counter() - started)
        answer = {"object": "search.results", "collection": name, "mode": mode, "results": results}
        if bridge is not None:
            answer["bridge"] = {"job": bridge[0], "model": request.model, "method": bridge[1].method}
        return answer

    async def _search_bridge(self, name: str, config: CollectionConfig,
                             request: SearchRequest) -> tuple[str, Bridge] | None:
        """(job id, bridge) when the search asks for a model other than the collection's: the model a
        re-embedding of the collection moves it to, whose bridge maps that model's query vectors into the
        collection's space. Any other model is refused, saying which ones the collection can be searched by."""
        model = request.model
        if model is None or model == config.model:
            return None
        self._embeddings.runner(model)  # 404 unless the service serves it
        reached = f" (reached by {name!r})" if name != config.name else ""
        if isinstance(request.query, MediaQuery):
            raise InvalidInputError(f"model {model!r}: a search by example is embedded by the collection's own "
                                    f"model ({config.model!r})", param="model")
        job_id = await self._store.reembed_bridge(config.name, model)
        if job_id is None:
            raise InvalidInputError(
                f"collection {config.name!r}{reached} is embedded by model {config.model!r}; a query embedded by "
                f"{model!r} can search it only while a re-embedding moves it to {model!r} (its bridge maps the "
                f"query), and none does now: leave model out, or set it to {config.model!r}", param="model")
        bridge = self._bridges.get(job_id)
        if bridge is None:
            saved = await self._store.reembed_bridge_matrix(job_id)
            bridge = Bridge(np.asarray(saved["matrix"], dtype=np.float32), saved["method"])
            if len(self._bridges) >= MAX_BRIDGES:
                self._bridges.pop(next(iter(self._bridges)))
            self._bridges[job_id] = bridge
        return job_id, bridge

    async def _query_vector(self, config: CollectionConfig, request: SearchRequest,
                            bridge: tuple[str, Bridge] | None) -> np.ndarray:
        """The query's vector in the collection's space: embedded by its model, or by the re-embedding's new
        model (``request.model``) and mapped by that job's bridge."""
        if bridge is None:
            return await self._embed_query(config, request.query)
        embedded = await self._embed(request.model, [request.query], "query")
        return bridge[1].apply(embedded.vectors)[0]

    def _reranker(self, config: CollectionConfig, request: SearchRequest):
        """The runner of the search's rerank stage, if it has one: a reranker reads the query and stored text."""
        if request.rerank is None:
            return None
        if config.modality != "text" or not isinstance(request.query, str):
            raise InvalidInputError("rerank scores a text query against stored text: it needs a text collection "
                                    "and a text query", param="rerank")
        return self._embeddings.runner(request.rerank.model, "reranker")

    @staticmethod
    async def _reranked(reranker, config: CollectionConfig, request: SearchRequest, hits: list[dict],
                        output_fields: list[str]) -> list[dict]:
        """The k best of ``hits`` by the reranker's score (or, its ``weight`` below 1, by that score fused
        with the first one), each keeping its first score as ``retrieval_score``."""
        texts = [hit["fields"][config.text_field] for hit in hits]
        rescored = await reranker.rerank(request.query, texts)
        weight = request.rerank.weight
        if weight == 1:
            best = [(index, float(rescored.scores[index])) for index in rescored.best_first(request.k)]
        else:
            routes = [list(enumerate(rescored.scores.tolist())), [(index, hit["score"]) for index, hit in enumerate(hits)]]
            best = weighted(routes, [weight, 1 - weight])[: request.k]
        reranked = []
        for index, score in best:
            hit = hits[index]
            fields = {name: value for name, value in hit["fields"].items() if name in output_fields}
            reranked.append({"id": hit["id"], "score": score, "fields": fields, "retrieval_score": hit["score"],
                             "rerank_score": float(rescored.scores[index])})
        return reranked

    async def _embed(self, model: str, texts: list[str], role: PromptRole):
        """Texts embedded by ``model`` with the prompt it declares for ``role``, if any."""
        runner = self._embeddings.runner(model)
        return await runner.embed(texts, "text", prompt_for_role(runner.encoder.prompts, role))

    async def _embed_query(self, config: CollectionConfig, query: str | MediaQuery):
        if isinstance(query, MediaQuery):  # search by example: the item, as documents are embedded
            runner = self._embeddings.runner(config.model)
            items = await self._embeddings.media_inputs([query.item], query.modality)
            return (await runner.embed(items, query.modality)).vectors[0]
        return (await self._embed(config.model, [query], "query")).vectors[0]

    async def _query_tokens(self, config: CollectionConfig, query: str) -> np.ndarray:
        runner = self._embeddings.runner(config.model)
        tokens = (await runner.embed_tokens([query], prompt_for_role(runner.encoder.prompts, "query"))).tokens[0]
        if not len(tokens):
            raise InvalidInputError("query gives no token vectors (only special tokens)", param="query")
        return tokens

    @staticmethod
    def _check_multivector_mode(config: CollectionConfig, mode: str) -> None:
        """Mode multivector needs a multi-vector collection, whose dense field (MUVERA encodings) only it reads."""
        if mode == "multivector" and config.multivector is None:
            raise InvalidInputError(f"mode 'multivector' needs a collection made with the multivector option; "
                                    f"collection {config.name!r} has none", param="mode")
        if config.multivector is not None and mode in ("dense", "hybrid"):
            raise InvalidInputError(f"collection {config.name!r} is multivector: its dense field holds MUVERA "
                                    f"encodings, searched with mode multivector (or sparse), not {mode}", param="mode")

    def _check_query_modality(self, config: CollectionConfig, example: MediaQuery | None, mode: str) -> None:
        """Text queries need a model that embeds text (a CLIP model does: cross-modal search); an example
        must be of the collection's own modality."""
        modalities = self._embeddings.runner(config.model).encoder.modalities
        if example is not None and example.modality != config.modality:
            raise InvalidInputError(f"collection {config.name!r} holds {config.modality}; search it with text or "
                                    f"an {config.modality} example, not {example.modality}", param="query")
        if example is None and mode != "sparse" and "text" not in modalities:
            raise InvalidInputError(f"model {config.model!r} embeds no text: search collection {config.name!r} by "
                                    f"example ({{\"{config.modality}\": \"data:...\"}}) or with mode sparse",
                                    param="query")
