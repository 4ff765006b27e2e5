"""Search on the serving replica: the query embedded here (or mapped by a re-embedding's bridge), the
store's hits, then an optional rerank stage that rescored them with a cross-encoder.

What crosses to the store is typed (:class:`SearchQuery`, BM25 :data:`Hits`, the fusion model) and so is
its answer (:class:`SearchHits`), which becomes the answer's JSON hits here."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from rayprism.deployments.collections import CollectionsService
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store_client import Store
from rayprism.platform.api.requests import MediaQuery, SearchRequest, VectorQuery
from rayprism.platform.api.responses import Hit, SearchBridge, SearchResults
from rayprism.platform.bridge import Bridge
from rayprism.platform.codecs.muvera import encode_query
from rayprism.platform.config import CollectionConfig
from rayprism.platform.errors import InvalidInputError
from rayprism.platform.models.base import prompt_for_role
from rayprism.platform.store.documents import decode_vector
from rayprism.platform.store.filters import check_filter
from rayprism.platform.store.fusion import weighted
from rayprism.platform.store.milvus import SearchHits, SearchQuery
from rayprism.platform.store.vocabulary import DEFAULT_CANDIDATES

MAX_BRIDGES = 8
"""Re-embedding bridges a replica keeps (one per job that answered a search by its new model here)."""


class SearchService:
    """``await search(name, request)``: one collection's search, as ``POST /v1/collections/{name}/search``."""

    def __init__(self, embeddings: EmbeddingService, collections: CollectionsService, store: Store):
        self._embeddings = embeddings
        self._collections = collections
        self._store = store
        self._bridges: dict[str, Bridge] = {}
        """Re-embedding jobs' bridges by job id (a job fits its bridge once), fetched on first use."""

    async def __call__(self, name: str, request: SearchRequest) -> SearchResults:
        started = time.perf_counter()
        config = await self._collections.collection(name)
        with self._collections.forgotten_if_gone(config.name):  # the settings it leaves out: the collection's
            request = request.with_defaults(await self._collections.search_defaults(config.name))
        example = request.query if isinstance(request.query, MediaQuery) else None
        text = request.query if isinstance(request.query, str) else None
        default_mode = "multivector" if config.multivector else "hybrid" if config.bm25 and text else "dense"
        mode = request.mode or default_mode
        self._check_multivector_mode(config, mode)
        if mode in ("hybrid", "sparse") and not config.bm25:
            raise InvalidInputError(f"mode {mode!r} needs BM25, which collection {name!r} does not have", param="mode")
        if mode != "dense" and text is None:
            raise InvalidInputError(f"a search by example or by vector is dense; mode {mode!r} needs text",
                                    param="mode")
        if not isinstance(request.query, VectorQuery):
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
        with self._collections.forgotten_if_gone(config.name):
            if mode == "hybrid":  # BM25 runs in the store while this replica embeds the query
                dense_vector, sparse_hits = await asyncio.gather(
                    self._query_vector(config, request, bridge),
                    self._store.sparse_hits(config.name, request.query, candidates, filter_expression),
                )
            elif mode == "dense":
                dense_vector = await self._query_vector(config, request, bridge)
            elif mode == "multivector":
                query_tokens = await self._query_tokens(config, request.query)
                dense_vector = encode_query(query_tokens, self._collections.fde(config))
            query = SearchQuery(
                mode=mode, k=first_k, dense_vector=dense_vector, query_tokens=query_tokens,
                text=text,
                metric=config.index.metric,
                candidates=candidates, filter=filter_expression, fusion=request.fusion,
                output_fields=sorted({*output_fields, config.text_field}) if reranker else output_fields,
                sparse_hits=sparse_hits, passages=request.passages,
            )
            found = await self._store.search(config.name, query)
        if reranker is not None and found:
            results = await self._reranked(reranker, config, request, found, output_fields)
        else:  # typed literals: see responses.py
            results = [{"id": doc_id, "score": score, "fields": fields}
                       for doc_id, score, fields in zip(found.ids, found.scores, found.fields)]
        if found.passages is not None and request.passages:
            passages = dict(zip(found.ids, found.passages))
            for hit in results:
                hit["passages"] = passages[hit["id"]]
        self._embeddings.metrics.search_latency(name, mode).observe(time.perf_counter() - started)
        answer = SearchResults(object="search.results", collection=name, mode=mode, results=results)
        if bridge is not None:
            answer["bridge"] = SearchBridge(job=bridge[0], model=request.model, method=bridge[1].method)
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
        if not isinstance(request.query, str):
            raise InvalidInputError(f"model {model!r}: a search by example or by vector is in the space of the "
                                    f"collection's own model ({config.model!r})", param="model")
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

    def dimensions(self, config: CollectionConfig) -> int:
        """The length of the collection's dense vectors (a multi-vector collection's: its MUVERA encodings')."""
        if config.multivector:
            return self._collections.fde(config).output_dim
        return self._embeddings.runner(config.model).encoder.dimensions

    async def query_vector(self, config: CollectionConfig, query: str) -> np.ndarray:
        """A text query's vector in the collection's dense space, as a search embeds it (MUVERA-encoded for a
        multi-vector collection)."""
        if config.multivector:
            return encode_query(await self._query_tokens(config, query), self._collections.fde(config))
        return await self._embed_query(config, query)

    async def _query_vector(self, config: CollectionConfig, request: SearchRequest,
                            bridge: tuple[str, Bridge] | None) -> np.ndarray:
        """The query's vector in the collection's space: embedded by its model, or by the re-embedding's new
        model (``request.model``) and mapped by that job's bridge."""
        if bridge is None:
            return await self._embed_query(config, request.query)
        embedded = await self._embeddings.embed_texts(request.model, [request.query], "query")
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
    async def _reranked(reranker, config: CollectionConfig, request: SearchRequest, found: SearchHits,
                        output_fields: list[str]) -> list[Hit]:
        """The k best of ``found`` by the reranker's score (or, its ``weight`` below 1, by that score fused
        with the first one), each keeping its first score as ``retrieval_score``. The text scored is a hit's
        text field: a chunked collection's best piece."""
        rescored = await reranker.rerank(request.query, [fields[config.text_field] for fields in found.fields])
        weight = request.rerank.weight
        if weight == 1:
            best = [(index, float(rescored.scores[index])) for index in rescored.best_first(request.k)]
        else:
            routes = [list(enumerate(rescored.scores.tolist())), list(enumerate(found.scores))]
            best = weighted(routes, [weight, 1 - weight])[: request.k]
        return [Hit(id=found.ids[index], score=score,
                    fields={name: value for name, value in found.fields[index].items() if name in output_fields},
                    retrieval_score=found.scores[index], rerank_score=float(rescored.scores[index]))
                for index, score in best]

    async def _embed_query(self, config: CollectionConfig, query: str | MediaQuery | VectorQuery):
        if isinstance(query, VectorQuery):  # already in the collection's space: checked, not embedded
            try:
                vector = decode_vector(query.vector, self._embeddings.runner(config.model).encoder.dimensions)
            except ValueError as error:
                raise InvalidInputError(f"query.vector {error}", param="query.vector") from None
            if not vector.any():
                raise InvalidInputError("query.vector is all zeros: it has no direction to search", param="query.vector")
            return vector
        if isinstance(query, MediaQuery):  # search by example: the item, as documents are embedded
            runner = self._embeddings.runner(config.model)
            items = await self._embeddings.media_inputs([query.item], query.modality)
            return (await runner.embed(items, query.modality)).vectors[0]
        return (await self._embeddings.embed_texts(config.model, [query], "query")).vectors[0]

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
