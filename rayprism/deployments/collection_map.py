"""``GET /v1/collections/{name}/map``: a 2-D picture of a collection for the console, computed here.

The store picks a sample of the collection's documents (the same sample each time: a fixed seed over the sorted
ids, :func:`~rayprism.platform.projection.sample_ids`) and reads their vectors (from its in-memory mirror where
there is one, else from Milvus) and fields, in calls small enough for Serve's messages between replicas; this
replica projects them onto their first two principal components (:mod:`rayprism.platform.projection`). A picture
read from a mirror is kept for the mirror's version, which every write changes: the same picture asked again before
a write is drawn from memory. A query is embedded as a search embeds it and placed on the same axes, with the hits
the collection's search answers.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from rayprism.deployments.collections import CollectionsService
from rayprism.deployments.search import SearchService
from rayprism.deployments.store_client import Store
from rayprism.platform.api.requests import SearchRequest
from rayprism.platform.api.responses import CollectionMap, MapHit, MapPoint, MapQuery
from rayprism.platform.config import CollectionConfig
from rayprism.platform.errors import InvalidInputError
from rayprism.platform.projection import Projection, pca
from rayprism.platform.vectors import normalised

MAP_SAMPLE_DEFAULT = 2000
MAP_SAMPLE_MAX = 10_000
PREVIEW_CHARS = 160
"""The text a point shows on hover; the document route has the whole."""
STORE_CALL_MAX_BYTES = 2 << 20
"""Vectors read from the store in one call, about (Serve's gRPC between replicas refuses messages over 4 MiB)."""
DECIMALS = 6
"""Coordinates are rounded to this many decimals: far finer than a picture shows, and a smaller answer."""
PICTURES_KEPT = 4
"""Pictures kept in memory (each holds its sample's vectors: 2,000 MiniLM documents take 3 MB)."""


@dataclass(frozen=True)
class Picture:
    """A sample of a collection projected: what a map answer holds before a query is placed on it."""

    count: int
    projection: Projection | None
    """None for an empty collection."""
    points: list[MapPoint]
    vectors: dict
    """The sample's vectors by id, as the store reads them (a query's hits are placed with them)."""


class CollectionMapService:
    def __init__(self, collections: CollectionsService, search: SearchService, store: Store):
        self._collections = collections
        self._search = search
        self._store = store
        self._pictures: OrderedDict[tuple, Picture] = OrderedDict()
        """By (collection, mirror version, sample size, colour field): the latest :data:`PICTURES_KEPT`."""

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
        picture, searched = await asyncio.gather(
            self._picture(config, sample, color_by), self._searched(name, config, query, k) if query else _nothing())
        answer = CollectionMap(object="collection.map", collection=name, count=picture.count, color_by=color_by,
                               explained_variance=list(picture.projection.explained) if picture.projection else [0.0, 0.0],
                               points=picture.points)
        if query and picture.projection is not None:
            answer["query"] = await self._placed(config, query, searched, picture)
        return answer

    async def _picture(self, config: CollectionConfig, size: int, color_by: str | None) -> Picture:
        """A sample of ``size`` of the collection's documents, projected; kept while the store's mirror is unchanged."""
        with self._collections.forgotten_if_gone(config.name):
            count, ids, version = await self._store.document_id_sample(config.name, size)
            key = (config.name, version, size, color_by)
            if version is not None and key in self._pictures:
                self._pictures.move_to_end(key)
                return self._pictures[key]
            found, vectors, shown = await self._documents(config, ids, [color_by] if color_by else [])
        if not found:
            return Picture(count, None, [], {})
        projection = pca(vectors)
        points = [MapPoint(id=document, x=x, y=y, value=row.get(color_by) if color_by else None, text=row["text"])
                  for document, (x, y), row in zip(found, projection(vectors).round(DECIMALS).tolist(), shown)]
        picture = Picture(count, projection, points, dict(zip(found, vectors)))
        if version is not None:
            self._pictures[key] = picture
            while len(self._pictures) > PICTURES_KEPT:
                self._pictures.popitem(last=False)
        return picture

    async def _searched(self, name: str, config: CollectionConfig, query: str, k: int) -> tuple[list[dict], np.ndarray]:
        """The collection's hits for ``query`` (its default search) and the query's vector, one after the other: the
        two embeddings of the query, batched together, could differ from a search's own in the last bits."""
        results = await self._search(name, SearchRequest(query=query, k=k, output_fields=[]))
        return results["results"], await self._search.query_vector(config, query)

    @staticmethod
    def _as_stored(config: CollectionConfig, vector) -> np.ndarray:
        """A query's vector as the store hands out the documents' (unit length for a cosine collection)."""
        vector = np.asarray(vector, dtype=np.float32)
        return normalised(vector) if config.index.metric == "COSINE" else vector

    async def _placed(self, config: CollectionConfig, query: str, searched: tuple[list[dict], np.ndarray],
                      picture: Picture) -> MapQuery:
        """The query and its hits on the map: hits outside the sample are read from the store."""
        results, vector = searched
        known = picture.vectors
        missing = [hit["id"] for hit in results if hit["id"] not in known]
        if missing:
            with self._collections.forgotten_if_gone(config.name):
                more, matrix, _ = await self._documents(config, missing, [])
            known = {**known, **dict(zip(more, matrix))}
        placed = [hit for hit in results if hit["id"] in known]
        projection = picture.projection
        coordinates = projection(np.stack([known[hit["id"]] for hit in placed])).round(DECIMALS).tolist() if placed else []
        (x, y), = projection(self._as_stored(config, vector)[None, :]).round(DECIMALS).tolist()
        return MapQuery(text=query, x=x, y=y, hits=[
            MapHit(id=hit["id"], x=hx, y=hy, score=float(hit["score"]), rank=rank)
            for rank, (hit, (hx, hy)) in enumerate(zip(placed, coordinates), start=1)])


async def _nothing() -> None:
    return None
