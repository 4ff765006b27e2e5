import time

import numpy as np
import pytest

from rayprism.platform.config import CollectionConfig
from rayprism.platform.store.dense_cache import DenseCache
from rayprism.platform.store.fusion import fuse, reciprocal_rank, weighted
from rayprism.platform.store.milvus import MilvusStore


def test_rrf_adds_reciprocal_ranks():
    fused = reciprocal_rank([[("a", 9), ("b", 8)], [("b", 0.3), ("c", 0.2)]], k=10)
    assert [doc for doc, _ in fused] == ["b", "a", "c"]
    assert dict(fused)["b"] == pytest.approx(1 / 12 + 1 / 11)


def test_weighted_min_max_normalises_each_list():
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    sparse = [("c", 30.0), ("a", 10.0)]
    fused = dict(weighted([dense, sparse], [0.5, 0.5]))
    assert fused == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5})
    assert [d for d, _ in weighted([dense, sparse], [1, 0])] == ["a", "b", "c"]
    assert fuse(dense, sparse, {"type": "weighted", "weights": {"dense": 0, "sparse": 1}})[0][0] == "c"
    assert weighted([[("only", 3.0)], []], [1, 1]) == [("only", 1.0)]


def test_dense_cache_is_exact_and_follows_writes():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    cache = DenseCache(16, normalise=True, initial_rows=8)  # grows many times
    cache.upsert(list(range(3000)), vectors)
    query = rng.standard_normal(16).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = np.argsort(-(unit @ (query / np.linalg.norm(query))))[:10]
    assert [doc for doc, _ in cache.top_k(query, 10)] == expected.tolist()
    cache.delete([int(expected[0])])
    assert cache.top_k(query, 1)[0][0] == expected[1] and len(cache) == 2999
    cache.upsert([5], query[None, :] * 3)  # replace: now the best match, at cosine 1
    best_id, best_score = cache.top_k(query, 1)[0]
    assert best_id == 5 and best_score == pytest.approx(1.0)
    assert DenseCache(16, normalise=False).top_k(query, 3) == []


@pytest.fixture()
def stores(tmp_path):
    config = CollectionConfig(name="docs", fields={"n": "int64"})
    rng = np.random.default_rng(2)
    rows = [{"id": str(i), "text": f"word{i % 7} shared text", "n": i, "dense": rng.standard_normal(8).astype(np.float32)}
            for i in range(300)]
    cached = MilvusStore(str(tmp_path / "store.db"), dense_cache_max_rows=10_000)
    cached.ensure(config, 8)
    cached.upsert("docs", rows)
    cached.flush("docs")
    yield cached, rows
    cached.close()


def wait_for_cache(store: MilvusStore, name: str) -> None:
    store._dense_cache(name, "COSINE")
    deadline = time.monotonic() + 30
    while store._dense_cache(name, "COSINE") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store._dense_cache(name, "COSINE") is not None


def test_cached_dense_search_equals_milvus(stores):
    store, rows = stores
    query = rows[17]["dense"]
    milvus = store.search("docs", mode="dense", k=10, dense_vector=query, filter="n >= 0")  # a filter bypasses the cache
    wait_for_cache(store, "docs")
    cached = store.search("docs", mode="dense", k=10, dense_vector=query, output_fields=["n"])
    assert [h["id"] for h in cached] == [h["id"] for h in milvus]
    assert [h["score"] for h in cached] == pytest.approx([h["score"] for h in milvus], abs=1e-5)
    assert cached[0]["id"] == "17" and cached[0]["fields"] == {"n": 17}


def test_writes_reach_the_cache_even_while_it_builds(stores):
    store, rows = stores
    store._dense_cache("docs", "COSINE")  # the build starts in the background ...
    target = np.ones(8, dtype=np.float32)
    store.upsert("docs", [{"id": "new", "text": "fresh", "n": -1, "dense": target}])  # ... and races this write
    store.delete("docs", ["3"])
    wait_for_cache(store, "docs")
    hits = store.search("docs", mode="dense", k=300, dense_vector=target)
    assert hits[0]["id"] == "new" and "3" not in [h["id"] for h in hits]


def test_sparse_scores_are_positive_and_hybrid_fuses(stores):
    store, rows = stores
    sparse = store.search("docs", mode="sparse", k=5, query_text="word3", output_fields=["text"])
    assert sparse and all(h["score"] > 0 and "word3" in h["fields"]["text"] for h in sparse)
    assert [h["score"] for h in sparse] == sorted((h["score"] for h in sparse), reverse=True)
    hybrid = store.search("docs", mode="hybrid", k=5, dense_vector=rows[3]["dense"], query_text="word3")
    assert hybrid[0]["id"] == "3"  # first in dense, and it contains word3
    assert hybrid[0]["score"] > 1 / 61  # so both lists contributed
