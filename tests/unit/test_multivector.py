"""Multi-vector collections in the store: token vectors reranked by MaxSim against a numpy reference,
their files replayed after a restart, MUVERA candidates from the mirror or from Milvus Lite."""

import time

import numpy as np
import pytest
from pydantic import ValidationError

from rayprism.platform.codecs.muvera import encode_documents, encode_query
from rayprism.platform.config import CollectionConfig, DenseIndexConfig
from rayprism.platform.errors import NotReadyError
from rayprism.platform.store.milvus import MilvusStore, SearchHits, SearchQuery
from rayprism.platform.store.routes import RowTable
from rayprism.platform.store.token_files import TokenFiles
from rayprism.platform.store.tokens import TOKENS_KEY, TokenRoute, fde_config

WIDTH = 32


def token_sets(n: int, seed: int = 0) -> list[np.ndarray]:
    """Unit token vectors, 1 to 12 per set, drawn around a few shared directions so that sets overlap."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, WIDTH))
    sets = []
    for _ in range(n):
        tokens = centres[rng.integers(0, 8, rng.integers(1, 13))] + 0.7 * rng.standard_normal((1, WIDTH))
        tokens += 0.5 * rng.standard_normal(tokens.shape)
        sets.append((tokens / np.linalg.norm(tokens, axis=1, keepdims=True)).astype(np.float32))
    return sets


def chamfer(query: np.ndarray, document: np.ndarray) -> float:
    """The reference: each query token's best dot product with a document token, summed."""
    return float((query.astype(np.float64) @ document.astype(np.float64).T).max(axis=1).sum())


def exact_ranking(query: np.ndarray, documents: dict, k: int) -> list:
    scores = {doc: chamfer(query, tokens) for doc, tokens in documents.items()}
    return sorted(scores, key=lambda doc: -scores[doc])[:k]


def test_token_route_reranks_candidates_by_exact_maxsim_through_rewrites_and_compaction():
    rows, documents = RowTable(initial_rows=4), {}
    route = TokenRoute(rows)
    sets = token_sets(300)

    def upsert(ids: list, matrices: list) -> None:
        new_rows, retired = rows.assign(ids)
        route.retire(retired)
        route.write(new_rows, route.prepare(matrices))
        documents.update(zip(ids, matrices))

    for start in range(0, 200, 37):  # several writes, the table growing under them
        upsert([f"d{i}" for i in range(start, min(start + 37, 200))], sets[start : min(start + 37, 200)])
    upsert([f"d{i}" for i in range(0, 50)], sets[200:250])  # rewritten: new tokens, old rows retired
    removed = [f"d{i}" for i in range(150, 200)]
    rows.remove(removed)
    for doc in removed:
        del documents[doc]
    queries = token_sets(5, seed=1)
    candidates = [f"d{i}" for i in range(0, 200, 3)]  # deleted ones among them are left out

    def check() -> None:
        for query in queries:
            hits = route.rerank(query, candidates, 10)
            expected = exact_ranking(query, {doc: documents[doc] for doc in candidates if doc in documents}, 10)
            assert [doc for doc, _ in hits] == expected
            assert [score for _, score in hits] == pytest.approx([chamfer(query, documents[doc]) for doc in expected],
                                                                 abs=1e-4)

    check()
    route.compact(rows.compact())
    check()
    live_tokens = sum(len(tokens) for tokens in documents.values())
    assert route.bytes_per_document == round(live_tokens * WIDTH * 4 / len(documents))
    ids, matrices = route.saved()
    assert sorted(ids) == sorted(documents) and all(np.array_equal(documents[d], m) for d, m in zip(ids, matrices))


def test_a_document_without_token_vectors_is_never_a_hit():
    rows = RowTable()
    route = TokenRoute(rows)
    sets = token_sets(3)
    new_rows, _ = rows.assign(["a", "b", "c"])
    route.write(new_rows, [sets[0], np.zeros((0, 0), dtype=np.float32), sets[2]])
    assert [doc for doc, _ in route.rerank(sets[1], ["a", "b", "c"], 3)] == exact_ranking(
        sets[1], {"a": sets[0], "c": sets[2]}, 3)
    assert TokenRoute(RowTable()).rerank(sets[1], ["a"], 3) == []


def test_token_files_replay_writes_and_deletes_and_compact_once_grown(tmp_path):
    files = TokenFiles(tmp_path / "tokens")
    sets = token_sets(40)
    files.append("docs", [str(i) for i in range(10)], sets[:10])
    files.append("docs", [str(i) for i in range(5, 30)], sets[10:35])  # 5..9 rewritten
    files.delete("docs", ["0", "25"])
    expected = {str(i): sets[i] for i in range(1, 5)} | {str(i): sets[i + 5] for i in range(5, 30) if i != 25}
    loaded = files.load("docs")
    assert loaded.keys() == expected.keys() and all(np.array_equal(loaded[d], expected[d]) for d in expected)

    snapshot = (list(expected), list(expected.values()))
    with files.writing("docs"):  # a write under way: its tokens may not be in the snapshot yet
        assert not files.compact_if_grown("docs", lambda: snapshot)
    assert files.compact_if_grown("docs", lambda: snapshot)
    assert len(list((tmp_path / "tokens" / "docs").glob("*.npz"))) == 1
    loaded = files.load("docs")
    assert loaded.keys() == expected.keys() and all(np.array_equal(loaded[d], expected[d]) for d in expected)
    files.append("docs", ["new"], [sets[0]])
    assert not files.compact_if_grown("docs", lambda: snapshot)  # one small segment after the snapshot: not yet
    files.drop("docs")
    assert files.load("docs") == {}


def test_multivector_config_checks_what_the_encodings_need():
    config = CollectionConfig(name="late", multivector={})
    assert config.index.metric == "IP" and config.multivector.candidates == 200
    assert CollectionConfig(name="late", index=DenseIndexConfig(type="HNSW"), multivector={}).index.metric == "IP"
    assert config.multivector.fde.output_dimensions == 8 * 16 * 20
    assert CollectionConfig.model_validate(config.model_dump()) == config
    for bad, message in [
        ({"index": {"metric": "COSINE"}}, "needs metric IP, not COSINE"),
        ({"compression": {"type": "binary"}}, "cannot be combined"),
        ({"modality": "image"}, "token vectors of text"),
        ({"multivector": {"fde": {"k_sim": 6, "d_proj": 32, "r_reps": 20}}}, "40960 dimensions"),
    ]:
        with pytest.raises(ValidationError, match=message):
            CollectionConfig(**{"name": "late", "multivector": {}, **bad})


slow = pytest.mark.slow  # starts Milvus Lite

CONFIG = CollectionConfig(name="late", fields={"n": "int64"}, multivector={"fde": {"k_sim": 2, "d_proj": 8, "r_reps": 4}})
FDE = fde_config(CONFIG.multivector.fde.model_dump(), WIDTH)


def rows_of(sets: list[np.ndarray], start: int = 0) -> list[dict]:
    offsets = np.concatenate([[0], np.cumsum([len(tokens) for tokens in sets])])
    encodings = encode_documents(np.concatenate(sets), offsets, FDE)
    return [{"id": str(start + i), "text": f"doc {start + i}", "n": start + i, "dense": encoding, TOKENS_KEY: tokens}
            for i, (tokens, encoding) in enumerate(zip(sets, encodings))]


def search(store: MilvusStore, query: np.ndarray, *, candidates: int, k: int = 10, filter: str = "") -> SearchHits:
    request = SearchQuery(mode="multivector", k=k, dense_vector=encode_query(query, FDE), query_tokens=query,
                          candidates=candidates, filter=filter, output_fields=["n"])
    deadline = time.monotonic() + 60
    while True:  # the first search starts loading the token vectors: 503 until they are in memory
        try:
            return store.search("late", request)
        except NotReadyError:
            assert time.monotonic() < deadline, "the token vectors were not loaded in time"
            time.sleep(0.05)


@slow
def test_multivector_search_reranks_encoding_candidates_and_survives_a_restart(tmp_path):
    uri = str(tmp_path / "store.db")
    sets = token_sets(400)
    documents = {str(i): tokens for i, tokens in enumerate(sets)}
    queries = token_sets(4, seed=2)
    store = MilvusStore(uri, cache_max_rows=10_000, flush_after_s=60)
    try:
        store.ensure(CONFIG, FDE.output_dim)
        rows = rows_of(sets)
        for start in range(0, 400, 100):
            assert store.upsert("late", rows[start : start + 100]) == 100
        for query in queries:
            hits = search(store, query, candidates=400)  # every document reranked: the exact ranking
            assert hits.ids == exact_ranking(query, documents, 10)
            assert hits.scores == pytest.approx([chamfer(query, documents[doc_id]) for doc_id in hits.ids], abs=1e-4)
            assert hits.fields[0] == {"n": int(hits.ids[0])}
            # 30 candidates: those with the best encoding inner products, reranked
            encodings = np.stack([row["dense"] for row in rows])
            best = np.argsort(-(encodings @ encode_query(query, FDE)), kind="stable")[:30]
            few = search(store, query, candidates=30)
            assert few.ids == exact_ranking(query, {str(i): sets[i] for i in best}, 10)
            # a filter the mirror evaluates, and one Milvus evaluates (is not null): the same hits
            even = {doc: tokens for doc, tokens in documents.items() if int(doc) % 2 == 0 and int(doc) >= 100}
            listed = "n in [" + ", ".join(even) + "]"
            for filter in (listed, f"n is not null and {listed}"):
                assert search(store, query, candidates=400, filter=filter).ids == exact_ranking(query, even, 10)
        store.delete("late", ["0", "1"])
        store.upsert("late", rows_of(token_sets(2, seed=3), start=2))  # documents 2 and 3 get new tokens
        documents.update({str(i): tokens for i, tokens in zip((2, 3), token_sets(2, seed=3))})
        del documents["0"], documents["1"]
        memory = store.memory("late")
        assert memory["rows"] == 398 and memory["tokens"]["bytes_per_document"] == round(
            sum(len(tokens) for tokens in documents.values()) * WIDTH * 4 / 398)
    finally:
        store.close()  # flushes: the token files are compacted into one

    assert len(list((tmp_path / "store.db.tokens" / "late").glob("*.npz"))) == 1
    store = MilvusStore(uri, cache_max_rows=10_000, flush_after_s=60)
    try:
        for query in queries:
            assert search(store, query, candidates=400).ids == exact_ranking(query, documents, 10)
        store.drop("late")
        assert not (tmp_path / "store.db.tokens" / "late").exists()
    finally:
        store.close()
