import itertools
import math
import time

import numpy as np
import pytest

from rayprism.platform.config import CollectionConfig
from rayprism.platform.store.fusion import FusionWeights, RRFFusion, WeightedFusion, fuse, reciprocal_rank, weighted
from rayprism.platform.store.milvus import MilvusStore, SearchQuery
from rayprism.platform.store.routes import Bm25Route, DenseRoute, RowTable


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
    sparse_only = WeightedFusion(type="weighted", weights=FusionWeights(dense=0, sparse=1))
    assert fuse(dense, sparse, sparse_only)[0][0] == "c"
    assert fuse(dense, sparse) == weighted([dense, sparse], [0.5, 0.5])
    assert fuse(dense, sparse, RRFFusion(type="rrf", k=10)) == reciprocal_rank([dense, sparse], k=10)
    assert weighted([[("only", 3.0)], []], [1, 1]) == [("only", 1.0)]


def dense_route(dimensions: int, *, normalise: bool = True, initial_rows: int = 8) -> tuple[RowTable, DenseRoute]:
    rows = RowTable(initial_rows)
    return rows, DenseRoute(rows, dimensions, normalise=normalise)


def write(rows: RowTable, route, ids: list, payload) -> None:
    """What a mirror does for one route: new rows for the ids, the old ones retired."""
    prepared = route.prepare(payload)
    with rows.lock:
        new_rows, retired = rows.assign(ids)
        route.retire(retired)
        route.write(new_rows, prepared)


def test_dense_route_is_exact_and_follows_writes():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    rows, route = dense_route(16)  # grows many times
    write(rows, route, list(range(3000)), vectors)
    query = rng.standard_normal(16).astype(np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = np.argsort(-(unit @ (query / np.linalg.norm(query))))[:10]
    assert [doc for doc, _ in route.top_k(query, 10)] == expected.tolist()
    rows.remove([int(expected[0])])
    assert route.top_k(query, 1)[0][0] == expected[1] and len(rows) == 2999
    write(rows, route, [5], query[None, :] * 3)  # replace: now the best match, at cosine 1
    best_id, best_score = route.top_k(query, 1)[0]
    assert best_id == 5 and best_score == pytest.approx(1.0)
    assert dense_route(16, normalise=False)[1].top_k(query, 3) == []


def test_allowed_mask_limits_every_route_to_the_same_rows():
    rng = np.random.default_rng(4)
    rows = RowTable(4)
    dense = DenseRoute(rows, 8, normalise=True)
    bm25 = Bm25Route(rows, lambda text: {hash(t) & 0xFFFF: float(text.split().count(t)) for t in set(text.split())})
    ids = [f"d{i}" for i in range(50)]
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    texts = [f"common word{i % 5}" for i in range(50)]
    with rows.lock:
        new_rows, _ = rows.assign(ids)
        dense.write(new_rows, dense.prepare(vectors))
        bm25.write(new_rows, bm25.prepare(texts))
    allowed = np.zeros(rows.used, dtype=bool)
    allowed[[rows.row_of[f"d{i}"] for i in range(0, 50, 7)]] = True
    expected = {f"d{i}" for i in range(0, 50, 7)}
    assert {doc for doc, _ in dense.top_k(vectors[3], 50, allowed)} == expected
    assert {doc for doc, _ in bm25.top_k("common", 50, allowed)} == expected
    assert dense.top_k(vectors[3], 5, np.zeros(rows.used, dtype=bool)) == []


@pytest.fixture()
def stores(tmp_path):
    config = CollectionConfig(name="docs", fields={"n": "int64", "tag": "varchar", "even": "bool"})
    rng = np.random.default_rng(2)
    vocabulary = [f"w{i}" for i in range(60)]
    rows = [{"id": str(i), "n": i, "tag": f"t{i % 5}" if i % 11 else None, "even": i % 2 == 0,
             "dense": rng.standard_normal(8).astype(np.float32),
             "text": f"word{i % 7} shared text " + " ".join(rng.choice(vocabulary, size=rng.integers(1, 40)))}
            for i in range(300)]
    cached = MilvusStore(str(tmp_path / "store.db"), cache_max_rows=10_000)
    cached.ensure(config, 8)
    cached.upsert("docs", rows)
    cached.flush("docs")
    yield cached, rows
    cached.close()


def wait_for_mirror(store: MilvusStore, name: str) -> None:
    deadline = time.monotonic() + 30
    while not store.mirrors.ready(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.mirrors.ready(name)


slow = pytest.mark.slow  # starts Milvus Lite


@slow
def test_cached_dense_search_equals_milvus(stores):
    store, rows = stores
    query = rows[17]["dense"]
    # the first search starts the mirror's build, so Milvus answers it
    milvus = store.search("docs", SearchQuery(mode="dense", k=10, dense_vector=query, filter="n >= 0"))
    wait_for_mirror(store, "docs")
    cached = store.search("docs", SearchQuery(mode="dense", k=10, dense_vector=query, output_fields=["n"]))
    assert cached.ids == milvus.ids
    assert cached.scores == pytest.approx(milvus.scores, abs=1e-5)
    assert cached.ids[0] == "17" and cached.fields[0] == {"n": 17}


FILTERS = ['n >= 100 and n < 140', 'tag == "t3"', 'tag in ["t1", "t4"] and even', 'not even or n < 10',
           'tag like "t%" and n > 250', 'n in [5, 17, 299]', 'n > 10000']


@slow
def test_filtered_mirror_search_equals_milvus(stores):
    """The mirror answers filtered dense and BM25 searches itself, with Milvus's hits."""
    store, rows = stores
    wait_for_mirror(store, "docs")
    for filter, (route, payload, metric) in itertools.product(
        FILTERS, [("dense", rows[130]["dense"], "COSINE"), ("sparse", "word3 shared w7", "BM25")]
    ):
        mirrored = store.mirrors.hits("docs", route, payload, 20, filter)
        assert mirrored is not None, "the mirror must answer this filter itself"
        found = store._client.search("docs", data=[payload], anns_field=route, limit=20, filter=filter,
                                     search_params={"metric_type": metric})[0]
        # the same hits with the same scores (equal scores may come in either order)
        expected = {hit["id"]: abs(hit["distance"]) if route == "sparse" else hit["distance"] for hit in found}
        assert dict(mirrored) == pytest.approx(expected, rel=1e-4, abs=1e-6)
        assert [score for _, score in mirrored] == sorted((score for _, score in mirrored), reverse=True)


@slow
def test_filtered_mirror_search_skips_deleted_rows(stores):
    store, rows = stores
    wait_for_mirror(store, "docs")
    store.delete("docs", ["120", "121"])
    hits = store.mirrors.hits("docs", "dense", rows[120]["dense"], 50, "n >= 118 and n < 124")
    assert sorted(doc for doc, _ in hits) == ["118", "119", "122", "123"]


@slow
def test_filters_the_mirror_cannot_evaluate_go_to_milvus(stores):
    store, rows = stores
    wait_for_mirror(store, "docs")
    for filter in ('n + 1 > 5', 'tag is null', 'n +'):  # Milvus evaluates these, and refuses a malformed one
        assert store.mirrors.hits("docs", "dense", rows[0]["dense"], 5, filter) is None
    hits = store.search("docs", SearchQuery(mode="dense", k=50, dense_vector=rows[0]["dense"], filter="tag is null"))
    assert sorted(int(doc_id) for doc_id in hits.ids) == [row["n"] for row in rows if row["tag"] is None]


@slow
def test_writes_reach_the_cache_even_while_it_builds(stores):
    store, rows = stores
    store.mirrors.ready("docs")  # the build starts in the background ...
    target = np.ones(8, dtype=np.float32)
    store.upsert("docs", [{"id": "new", "text": "fresh", "n": -1, "dense": target}])  # ... and races this write
    store.delete("docs", ["3"])
    from_milvus = store.sparse_hits("docs", "fresh", 5, filter="n < 1000")
    wait_for_mirror(store, "docs")
    hits = store.search("docs", SearchQuery(mode="dense", k=300, dense_vector=target))
    assert hits.ids[0] == "new" and "3" not in hits.ids
    mirrored = store.sparse_hits("docs", "fresh", 5)
    assert [doc for doc, _ in mirrored] == [doc for doc, _ in from_milvus] == ["new"]
    assert "3" not in [doc for doc, _ in store.sparse_hits("docs", "word3", 300)]


@slow
def test_mirrored_bm25_equals_milvus_on_one_segment(stores):
    """One sealed segment: Lite's per-segment statistics are the global ones the mirror keeps."""
    store, rows = stores
    queries = ["word3 w1", "w5 w5 w17 shared", "w59 nothing-matches-this", "text"]
    from_milvus = [store.sparse_hits("docs", q, 300, filter="n >= 0") for q in queries]  # all: no ties at a cut
    wait_for_mirror(store, "docs")
    for query, expected in zip(queries, from_milvus):
        mirrored = store.sparse_hits("docs", query, 300)
        assert dict(mirrored) == pytest.approx(dict(expected), rel=1e-5), query
        assert [score for _, score in mirrored] == sorted((score for _, score in mirrored), reverse=True)


def test_bm25_route_state_does_not_depend_on_its_history():
    """Overwrites, deletes and compactions leave the same scores as building the end state at once."""
    from rayprism.platform.store.layout import Layout
    from rayprism.platform.store.mirror import Mirror

    analyze = lambda text: {hash(t) & 0xFFFF: float(text.split().count(t)) for t in set(text.split())}  # noqa: E731
    layout = Layout(id_type="int64", text_field="text", dimensions=2, bm25=True, metric="COSINE",
                    index_type="FLAT", fields={}, model=None)
    rng = np.random.default_rng(3)
    texts = {i: " ".join(rng.choice(list("abcdefghij"), size=rng.integers(1, 12))) for i in range(3000)}
    vectors = {i: rng.standard_normal(2).astype(np.float32) for i in texts}

    def records(ids, text=None):
        return [{"id": i, "text": text or texts[i], "dense": vectors[i]} for i in ids]

    churned = Mirror(layout, {"analyze": analyze}, fetch_vectors=dict.fromkeys)
    churned.upsert(records(list(texts), "a b c"))  # replaced below: dead rows, then a compaction
    churned.upsert(records(list(texts)))
    churned.delete(list(range(0, 3000, 3)))
    for i in range(0, 3000, 3):
        del texts[i]
    assert churned.rows.used < 6000  # compacted at least once
    fresh = Mirror(layout, {"analyze": analyze}, fetch_vectors=dict.fromkeys)
    fresh.upsert(records(list(texts)))
    assert len(churned) == len(fresh) == 2000
    for query in ["a", "b c c", "j a e", "zzz"]:
        assert dict(churned.routes["sparse"].top_k(query, 3000)) == pytest.approx(
            dict(fresh.routes["sparse"].top_k(query, 3000))), query
    probe = np.array([1.0, 0.5], dtype=np.float32)
    assert dict(churned.routes["dense"].top_k(probe, 2000)) == pytest.approx(dict(fresh.routes["dense"].top_k(probe, 2000)))
    assert Bm25Route(RowTable(), analyze).top_k("a", 5) == []


@slow
def test_sparse_scores_are_positive_and_hybrid_fuses(stores):
    store, rows = stores
    sparse = store.search("docs", SearchQuery(mode="sparse", k=5, text="word3", output_fields=["text"]))
    assert sparse and all(score > 0 for score in sparse.scores) and all("word3" in f["text"] for f in sparse.fields)
    assert sparse.scores == sorted(sparse.scores, reverse=True)
    rrf = store.search("docs", SearchQuery(mode="hybrid", k=5, dense_vector=rows[3]["dense"], text="word3",
                                           fusion=RRFFusion(type="rrf", k=60)))
    assert rrf.ids[0] == "3"  # first in dense, and it contains word3
    assert rrf.scores[0] > 1 / 61  # so both lists contributed
    default = store.search("docs", SearchQuery(mode="hybrid", k=5, dense_vector=rows[3]["dense"], text="word3"))
    assert default.ids[0] == "3" and 0.5 < default.scores[0] <= 1.0  # weighted 0.5/0.5: dense's best + its BM25 share


@pytest.mark.parametrize("weights", [[1.06e308, 1.5e40], [1.7e308, 1.7e308], [3.0, 1.0], [0.0, 0.0]])
def test_weighted_ranks_as_exact_arithmetic_does_for_any_finite_weights(weights):
    """1.7e308 + 1.7e308 overflows a float; the order must still be the exact weighted sum's (Fractions)."""
    from fractions import Fraction

    dense = [("a", 0.9), ("b", 0.6), ("d", 0.3), ("c", 0.1)]
    sparse = [("c", 30.0), ("e", 22.0), ("a", 10.0), ("f", 5.0)]  # no two documents tie at these weights
    exact: dict = {}
    for hits, weight in zip([dense, sparse], weights):
        low, high = min(s for _, s in hits), max(s for _, s in hits)
        for doc, score in hits:
            share = (Fraction(score) - Fraction(low)) / (Fraction(high) - Fraction(low))
            exact[doc] = exact.get(doc, 0) + Fraction(weight) * share
    fused = weighted([dense, sparse], weights)
    assert not any(math.isnan(score) for _, score in fused)
    assert [exact[doc] for doc, _ in fused] == sorted(exact.values(), reverse=True)
    if math.isfinite(sum(weights)):
        assert dict(fused) == pytest.approx({doc: float(value) for doc, value in exact.items()})
