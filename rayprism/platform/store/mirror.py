"""An in-memory mirror of one Milvus Lite collection, for searches without a filter.

Milvus Lite searches in Python, row by row: tens of milliseconds per query on 10k rows,
for dense and for BM25 alike. The store process is a Lite file's only writer (the file
is locked to it), so copies it keeps up to date with its own upserts and deletes stay
exact: the dense vectors as one matrix (:class:`DenseCache`), the text's term
frequencies as posting arrays (:class:`Bm25Cache`). Filtered searches still go to Milvus.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
from pymilvus import MilvusClient

from rayprism.platform.store.bm25_cache import Bm25Cache
from rayprism.platform.store.dense_cache import DenseCache


class _WithoutAllocTimestampNoise(logging.Filter):
    """Milvus Lite's in-process server lacks AllocTimestamp; pymilvus's query iterator asks,
    falls back by itself, and the server logs a traceback each time. Keep the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Method not implemented" not in record.getMessage()


logging.getLogger("grpc._server").addFilter(_WithoutAllocTimestampNoise())


@dataclass
class Mirror:
    dense: DenseCache | None
    bm25: Bm25Cache | None
    text_field: str

    @property
    def rows(self) -> int:
        return len(self.dense) if self.dense is not None else len(self.bm25)

    def upsert(self, rows: list[dict]) -> None:
        ids = [row["id"] for row in rows]
        if self.dense is not None:
            self.dense.upsert(ids, np.array([row["dense"] for row in rows], dtype=np.float32))
        if self.bm25 is not None:
            self.bm25.upsert(ids, [row[self.text_field] for row in rows])

    def delete(self, ids: list) -> None:
        for cache in (self.dense, self.bm25):
            if cache is not None:
                cache.delete(ids)


def lite_bm25_scoring(client: MilvusClient, name: str, text_field: str) -> dict:
    """The analyzer and BM25 parameters Milvus Lite uses for ``name``: Bm25Cache's arguments."""
    from milvus_lite.analyzer import compute_tf, create_analyzer

    field = next(f for f in client.describe_collection(name)["fields"] if f["name"] == text_field)
    analyzer_params = field.get("params", {}).get("analyzer_params")
    if isinstance(analyzer_params, str):
        analyzer_params = json.loads(analyzer_params)
    analyzer = create_analyzer(analyzer_params)
    index_params = client.describe_index(name, "sparse")
    return {
        "analyze": lambda text: compute_tf(analyzer.analyze(text)),
        "k1": float(index_params.get("bm25_k1", 1.5)),  # Milvus Lite's defaults
        "b": float(index_params.get("bm25_b", 0.75)),
    }
