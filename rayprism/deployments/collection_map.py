"""``GET /v1/collections/{name}/map``: a 2-D picture of a collection for the console, computed here.

A sample of the collection's documents (the same sample each time: a fixed seed over the sorted ids) is read
from the store with its vectors, in calls small enough for Serve's messages between replicas, and projected
onto its first two principal components (:mod:`rayprism.platform.projection`). A query is embedded as a search
embeds it and placed on the same axes, with the hits the collection's search answers.
"""

from __future__ import annotations

import numpy as np

from rayprism.deployments.collections import CollectionsService
from rayprism.deployments.search import SearchService
from rayprism.deployments.store_client import Store
from rayprism.platform.api.requests import SearchRequest
from rayprism.platform.api.responses import CollectionMap, MapHit, MapPoint, MapQuery
from rayprism.platform.config import CollectionConfig
from rayprism.platform.errors import InvalidInputError
from rayprism.platform.projection import pca

MAP_SAMPLE_DEFAULT = 2000
MAP_SAMPLE_MAX = 10_000
PREVIEW_CHARS = 160
"""The text a point shows on hover; the document route has the whole."""
STORE_CALL_MAX_BYTES = 2 << 20
"""Vectors read from the store in one call, about (Serve's gRPC between replicas refuses messages over 4 MiB)."""
SAMPLE_SEED = 0


def sample_ids(ids: list, size: int) -> list:
    """``size`` of ``ids`` (all when there are no more), chosen by a fixed seed from the sorted ids, in that order."""
    ordered = sorted(ids)
    if len(ordered) <= size:
        return ordered
    chosen = np.random.default_rng(SAMPLE_SEED).choice(len(ordered), size, replace=False)
    return [ordered[index] for index in sorted(chosen)]


class CollectionMapService:
    def __init__(self, collections: CollectionsService, search: SearchService, store: Store):
        self._collections = collections
        self._search = search
        self._store = store

    async def _documents(self, config: CollectionConfig, ids: list, fields: list[str]
                         ) -> tuple[list, np.ndarray, list[dict]]:
        """:meth:`MilvusStore.document_sample` of ``ids``, read in parts that fit one store call."""
        dimensions = self._search.dimensions(config)
        per_call = max(1, STORE_CALL_MAX_BYTES // (4 * dimensions + 2 * PREVIEW_CHARS))
        found: list = []
        matrices: list[np.ndarray] = []
        shown: list[dict] = []
        for start in range(0, len(ids), per_call):
            part_ids, matrix, part_shown = await self._store.document_sample(
                config.name, ids[start : start + per_call], fields, PREVIEW_CHARS)
            found += part_ids
            shown += part_shown
            if len(part_ids):
                matrices.append(np.asarray(matrix, dtype=np.float32))
        return found, np.concatenate(matrices) if matrices else np.zeros((0, dimensions), np.float32), shown

    async def __call__(self, name: str, sample: int, color_by: str | None, query: str | None, k: int
                       ) -> CollectionMap:
        config = await self._collections.collection(name)
        if color_by is not None and color_by not in config.fields:
            raise InvalidInputError(f"color_by: unknown field {color_by!r}; fields are {sorted(config.fields)}",
                                    param="color_by")
        fields = [color_by] if color_by else []
        with self._collections.forgotten_if_gone(config.name):
            ids = await self._store.ids(config.name)
            found, vectors, shown = await self._documents(config, sample_ids(ids, sample), fields)
        answer = CollectionMap(object="collection.map", collection=name, count=len(ids), color_by=color_by,
                               explained_variance=[0.0, 0.0], points=[])
        if not found:
            return answer
        projection = pca(vectors)
        answer["explained_variance"] = list(projection.explained)
        answer["points"] = [MapPoint(id=document, x=float(x), y=float(y), value=row.get(color_by) if color_by else None,
                                     text=row["text"])
                            for document, (x, y), row in zip(found, projection(vectors), shown)]
        if query:
            answer["query"] = await self._placed(name, config, query, k, projection, dict(zip(found, vectors)))
        return answer

    async def _placed(self, name: str, config: CollectionConfig, query: str, k: int, projection,
                      known: dict) -> MapQuery:
        """The query and its hits on the map: hits outside the sample are read from the store."""
        results = (await self._search(name, SearchRequest(query=query, k=k, output_fields=[])))["results"]
        vector = await self._search.query_vector(config, query)
        missing = [hit["id"] for hit in results if hit["id"] not in known]
        if missing:
            with self._collections.forgotten_if_gone(config.name):
                more, matrix, _ = await self._documents(config, missing, [])
            known = {**known, **dict(zip(more, matrix))}
        placed = [hit for hit in results if hit["id"] in known]
        coordinates = projection(np.stack([known[hit["id"]] for hit in placed])) if placed else []
        (x, y), = projection(np.asarray(vector, dtype=np.float32)[None, :])
        return MapQuery(text=query, x=float(x), y=float(y), hits=[
            MapHit(id=hit["id"], x=float(hx), y=float(hy), score=float(hit["score"]), rank=rank)
            for rank, (hit, (hx, hy)) in enumerate(zip(placed, coordinates), start=1)])
