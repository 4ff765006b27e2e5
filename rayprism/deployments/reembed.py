"""Re-embedding a collection with another model while it serves, then moving its alias.

A job is a detached Ray actor in the service's cluster (:class:`ReembedWorker`). It reads the
documents of the collection the alias reaches through the store deployment, embeds them with the
new model in the serving replicas (the model's own batcher), and writes them, vectors included,
into a new physical collection of the same schema. Writes made meanwhile are logged by the store
(:mod:`~rayprism.platform.store.changes`) and replayed until none is left; then the evaluation
gate runs, and the store moves the alias only if no write came in between (else the worker
replays again). Progress lives in the job's record in the store, so a worker killed mid-way is
restarted on the same record: documents already in the new collection are not embedded again.

A forward job copies a random sample of documents first and fits its bridge on them (their old
vectors against the new): until the swap, a search of the alias that asks for the new model is
embedded by it and mapped into the old space, so it searches the old index
(:class:`~rayprism.deployments.search.SearchService`).

A rollback is the same worker in the other direction: the writes made to the new collection since
the swap (logged from the swap on) are replayed into the old one with its model, then the alias
moves back.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from rayprism.deployments.audit import AuditTrail, audit_record
from rayprism.platform.bridge import bridge_quality, fit_bridge
from rayprism.platform.config import DENSE_FIELD, CollectionConfig
from rayprism.platform.constants import NAMESPACE, reembed_worker_name
from rayprism.platform.ranking import agreement, first_relevant_ranks, mean_reciprocal_rank
from rayprism.platform.reembed_record import (
    BridgeAgreement,
    BridgeReport,
    Evaluation,
    EvaluationQuery,
    Gate,
    ReembedRecord,
)
from rayprism.platform.store.milvus import SearchQuery
from rayprism.platform.vectors import normalised

logger = logging.getLogger(__name__)

DEFAULT_MIN_AGREEMENT = 0.4
"""The gate without a query set: mean share of the old index's top-10 the new index finds."""
DEFAULT_MRR_RATIO = 0.95
"""The gate with a query set: the new collection's MRR@10 must reach this share of the old one's."""
GATE_K = 10
FREEZE_MAX_S = 30.0
"""Longest a swap holds new writes to the old collection back (while the last logged ones are replayed)."""
BRIDGE_SAMPLE = 512
"""Documents copied first and embedded by both models: the bridge is fitted on 80% of them, measured on the rest."""
BRIDGE_MIN_SAMPLE = 20


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start: start + size]


class ReembedWorker:
    """One job's worker: ``run`` takes the job from where its record says it is to its end."""

    def __init__(self, app_name: str, serving_deployment: str, store_deployment: str, job_id: str,
                 audit: tuple, origin: dict):
        """``audit``: where the swap is recorded (:meth:`AuditTrail.of`); ``origin``: the audit fields of the
        request that started (or resumed) the job, whose record the swap's is."""
        from ray import serve

        from rayprism.deployments.store_client import StoreClient

        self._store = StoreClient(serve.get_deployment_handle(store_deployment, app_name))
        self._service = serve.get_deployment_handle(serving_deployment, app_name)
        self._job_id = job_id
        self._audit = audit
        self._origin = origin

    async def _update(self, **fields: Any) -> ReembedRecord:
        return await self._store.reembed_update(self._job_id, **fields)

    async def run(self) -> None:
        import ray

        try:
            record = await self._store.reembed_job(self._job_id)
            record = await self._update(runs=record.runs + 1, embedded_this_run=0, error=None)
            source = CollectionConfig.model_validate(await self._store.resolve(record.source))
            self._content = ["id", source.text_field, *source.fields]
            if record.phase == "copying":
                if record.direction == "forward" and record.bridge is None:
                    record = await self._fit_bridge(record, source)
                record = await self._copy(record, source)
            record = await self._update(phase="following")
            applied = await self._follow(source)
            if record.direction == "forward":
                record = await self._update(phase="evaluating")
                gate = await self._gate(record, source)
                record = await self._update(gate=gate)
                if not gate.passed:
                    await self._update(state="refused", phase="evaluated")
                    return
            await self._catch_up(source)  # what came in during the gate, while writes flow freely
            await self._update(phase="swapping")
            try:  # writes keep coming: hold new ones back while the last are replayed, then swap
                while True:
                    await self._store.reembed_freeze(self._job_id, FREEZE_MAX_S)  # (again: a freeze ends by itself)
                    applied = await self._follow(source)
                    if await self._store.reembed_swap(self._job_id, applied):
                        AuditTrail.of(*self._audit).write(audit_record(
                            **self._origin, target=record.alias, event=f"{record.direction} swap", job=self._job_id,
                            collection=record.target, outcome="swapped"))
                        break
            finally:
                await self._store.reembed_thaw(self._job_id)
        except Exception as error:  # the job's record says why, for GET and the CLI
            logger.exception("re-embedding job %s failed", self._job_id)
            message = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
            await self._update(state="failed", error=message)
        finally:
            ray.actor.exit_actor()

    async def _embed(self, model: str, rows: list[dict], text_field: str) -> None:
        vectors = await self._service.reembed_vectors.remote(model, [row[text_field] for row in rows])
        for row, vector in zip(rows, vectors):
            row[DENSE_FIELD] = np.asarray(vector, dtype=np.float32)

    async def _fit_bridge(self, record: ReembedRecord, source: CollectionConfig) -> ReembedRecord:
        """Copy a random sample of the source first and fit the bridge on it (its documents' old vectors
        against the new ones just embedded), so that searches by the new model are answered through it
        for the rest of the job; the copy then skips the sample."""
        ids = await self._store.ids(record.source)
        sample = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))[:BRIDGE_SAMPLE]]
        rows = []
        for batch in _chunks(sample, record.batch_size):
            part = await self._store.get(record.source, batch, [*self._content, DENSE_FIELD])
            old = [np.asarray(row.pop(DENSE_FIELD), dtype=np.float32) for row in part]
            await self._embed(record.model, part, source.text_field)
            await self._store.upsert(record.target, part)
            rows.extend(zip([row["id"] for row in part], old, [row[DENSE_FIELD] for row in part]))
        record = await self._update(documents_embedded=record.documents_embedded + len(rows),
                                    embedded_this_run=record.embedded_this_run + len(rows))
        fitted = self._bridge([row[0] for row in rows], [row[2] for row in rows], [row[1] for row in rows])
        if fitted is None:  # too few documents to fit a map on: searches by the new model wait for the swap
            return record
        return await self._store.reembed_bridge_put(self._job_id, *fitted)

    async def _copy(self, record: ReembedRecord, source: CollectionConfig) -> ReembedRecord:
        """Every document of the source that the target does not hold yet, embedded by the new model."""
        source_ids = await self._store.ids(record.source)
        held = set(await self._store.ids(record.target))
        todo = [doc_id for doc_id in source_ids if doc_id not in held]
        done = len(source_ids) - len(todo)
        embedded, this_run = record.documents_embedded, record.embedded_this_run
        record = await self._update(documents_total=len(source_ids), documents_done=done)
        for batch in _chunks(todo, record.batch_size):
            rows = await self._store.get(record.source, batch, self._content)  # deleted meanwhile: logged
            if rows:
                await self._embed(record.model, rows, source.text_field)
                await self._store.upsert(record.target, rows)
            done += len(batch)
            embedded += len(rows)
            this_run += len(rows)
            record = await self._update(documents_done=done, documents_embedded=embedded, embedded_this_run=this_run)
        return record

    async def _follow(self, source: CollectionConfig) -> int:
        """Replay the source's change log into the target up to where it was when this began (a stream of
        writes faster than the replay would never let it end otherwise); returns the position reached."""
        record = await self._store.reembed_job(self._job_id)
        applied, stop = record.changes_applied, record.changes_applied + record.changes_pending
        embedded, this_run = record.documents_embedded, record.embedded_this_run
        while applied < stop:
            end, ids = await self._store.reembed_changes(self._job_id, applied, record.batch_size)
            if end == applied:
                return applied
            rows = await self._store.get(record.source, ids, self._content)
            present = {row["id"] for row in rows}
            gone = [doc_id for doc_id in ids if doc_id not in present]
            if rows:
                await self._embed(record.model, rows, source.text_field)
                await self._store.upsert(record.target, rows)
            if gone:
                await self._store.delete(record.target, gone)
            applied = end
            embedded += len(rows)
            this_run += len(rows)
            await self._update(changes_applied=applied, documents_embedded=embedded, embedded_this_run=this_run)
        return applied

    async def _catch_up(self, source: CollectionConfig) -> None:
        """Replay the log until what is left fits one step, so that the freeze before the swap holds writes
        back for one short replay, not for a backlog longer than the freeze lasts (after which writes
        would flow again and the swap never find the log still). Stops early while the backlog does not
        shrink: writes come faster than they are replayed, and only the freeze can hold them."""
        record = await self._store.reembed_job(self._job_id)
        while record.changes_pending > record.batch_size:
            before = record.changes_pending
            await self._follow(source)
            record = await self._store.reembed_job(self._job_id)
            if record.changes_pending >= before:
                return

    # --- the evaluation gate ---------------------------------------------------------------

    async def _gate(self, record: ReembedRecord, source: CollectionConfig) -> Gate:
        evaluation = record.evaluation
        if evaluation.queries:
            return await self._mrr_gate(record, evaluation.queries, evaluation.min_score)
        return await self._agreement_gate(record, source, evaluation)

    async def _mrr_gate(self, record: ReembedRecord, queries: list[EvaluationQuery], min_score: float | None) -> Gate:
        relevant = [{str(doc_id) for doc_id in query.relevant} for query in queries]
        old = await self._mrr(record.source, queries, relevant)
        new = await self._mrr(record.target, queries, relevant)
        threshold = DEFAULT_MRR_RATIO * old if min_score is None else min_score
        return Gate(metric="mrr@10", queries=len(queries), old=old, new=new, threshold=threshold,
                    passed=new >= threshold)

    async def _mrr(self, collection: str, queries: list[EvaluationQuery], relevant: list[set[str]]) -> float:
        """MRR@10 of ``queries`` searching ``collection`` as callers search it."""
        ranked = []
        for query in queries:
            ids = await self._service.reembed_search.remote(collection, query.query, GATE_K)
            ranked.append([str(doc_id) for doc_id in ids])
        return mean_reciprocal_rank(first_relevant_ranks(ranked, relevant))

    async def _vectors(self, collection: str, ids: list) -> dict:
        rows = await self._store.get(collection, ids, ["id", DENSE_FIELD])
        return {row["id"]: np.asarray(row[DENSE_FIELD], dtype=np.float32) for row in rows}

    async def _top(self, collection: str, metric: str, vector: np.ndarray, exclude) -> list:
        query = SearchQuery(mode="dense", k=GATE_K + 1, dense_vector=vector, metric=metric, output_fields=[])
        found = await self._store.search(collection, query)
        return [doc_id for doc_id in found.ids if doc_id != exclude][:GATE_K]

    async def _agreement_gate(self, record: ReembedRecord, source: CollectionConfig, evaluation: Evaluation) -> Gate:
        """Stored documents as queries: each one's old vector searches the old index, its new vector the new
        index (itself left out of both); the share of the old top-10 that the new one finds, averaged."""
        target = CollectionConfig.model_validate(await self._store.resolve(record.target))
        ids = await self._store.ids(record.target)
        sample = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))[: evaluation.sample]]
        old, new = await self._vectors(record.source, sample), await self._vectors(record.target, sample)
        queries = [doc_id for doc_id in sample if doc_id in old and doc_id in new]
        agreements = []
        for doc_id in queries:
            before = await self._top(record.source, source.index.metric, old[doc_id], doc_id)
            after = await self._top(record.target, target.index.metric, new[doc_id], doc_id)
            if before:
                agreements.append(agreement(before, after))
        mean_agreement = float(np.mean(agreements)) if agreements else 0.0
        threshold = DEFAULT_MIN_AGREEMENT if evaluation.min_score is None else evaluation.min_score
        return Gate(metric="top10_agreement", queries=len(agreements), new=mean_agreement, threshold=threshold,
                    passed=mean_agreement >= threshold)

    @staticmethod
    def _bridge(ids: list, new: list, old: list) -> tuple[np.ndarray, list, BridgeReport] | None:
        """(matrix, the ids it was fitted on, its quality): a Procrustes map from the new space to the old,
        fitted on 80% of the sample, measured on the rest against the old endpoint (cosine to the old
        vectors, the old model's own top-10 in the old index) and the new one (the new model's top-10
        in the new index)."""
        if len(new) < BRIDGE_MIN_SAMPLE:
            return None
        new_vectors, old_vectors = np.stack(new), np.stack(old)
        cut = int(len(new) * 0.8)
        bridge = fit_bridge(new_vectors[:cut], old_vectors[:cut])
        held_new, held_old = new_vectors[cut:], old_vectors[cut:]
        quality = bridge_quality(bridge, held_new, held_old, old_vectors)
        mapped = bridge.apply(held_new)
        k = min(GATE_K, len(new))
        new_unit = normalised(new_vectors)
        by_bridge = np.argsort(-(mapped @ normalised(old_vectors).T), axis=1)[:, :k]
        by_new = np.argsort(-(new_unit[cut:] @ new_unit.T), axis=1)[:, :k]
        against_new = float(np.mean([agreement(b, a) for a, b in zip(by_bridge, by_new)]))
        return bridge.matrix, ids[:cut], BridgeReport(
            method=bridge.method, fit_rows=cut, against_old=quality,
            against_new=BridgeAgreement(top10_agreement=against_new, rows=len(held_new)))


class ReembedJobs:
    """Starts a job's worker in the service's cluster and tells whether it still runs."""

    def __init__(self, app_name: str, serving_deployment: str, store_deployment: str, audit: tuple):
        """``audit``: the service's audit settings, for each worker (:meth:`AuditTrail.of`)."""
        self._names = (app_name, serving_deployment, store_deployment)
        self._audit = audit

    def worker(self, job_id: str) -> str:
        return reembed_worker_name(self._names[0], job_id)

    def start(self, job_id: str, origin: dict) -> None:
        import ray

        actor = ray.remote(ReembedWorker).options(
            name=self.worker(job_id), namespace=NAMESPACE, lifetime="detached", num_cpus=0, max_restarts=0,
        ).remote(*self._names, job_id, self._audit, origin)
        actor.run.remote()

    def alive(self, job_id: str) -> bool:
        import ray

        try:
            ray.get_actor(self.worker(job_id), namespace=NAMESPACE)
        except ValueError:
            return False
        return True

