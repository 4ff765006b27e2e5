"""A chunked collection's pieces in the store, on every path a search can take: the in-memory mirror, Milvus
Lite itself, and a Milvus server (2.3, no BM25 there). Documents are scored by their best piece: compared
with numpy over the pieces' vectors, and stored pieces with what pymilvus reads from Milvus itself."""

import numpy as np
import pytest

from rayprism.platform.config import CollectionConfig
from rayprism.platform.store.milvus import SearchQuery
from rayprism.platform.store.pieces import Slice, document_hash, joined, piece_rows, tiling, whole_documents
from tests.conftest import STORE_PATHS, store_on_path

pytestmark = pytest.mark.slow  # Milvus Lite and a Milvus server

DIMENSIONS = 16
SECTIONS = ["net", "libs", "games"]


def config(name: str, bm25: bool) -> CollectionConfig:
    return CollectionConfig(name=name, bm25=bm25, fields={"section": "varchar", "size": "int64"},
                            chunking={"max_tokens": 64, "overlap_tokens": 8})


def document(i: int, pieces: int, rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """A document of ``pieces`` pieces (word spans with one word of overlap) and its piece rows with random vectors."""
    words = [f"w{i}x{j}" for j in range(pieces * 5)]
    text = "  ".join(words) + "\n"
    starts = [text.index(word) for word in words]
    spans = [(starts[max(0, p * 5 - 1)], starts[min(len(words) - 1, p * 5 + 4)] + len(words[min(len(words) - 1, p * 5 + 4)]))
             for p in range(pieces)]
    doc = {"id": f"doc-{i}", "text": text, "section": SECTIONS[i % 3], "size": i}
    rows = piece_rows(doc, "text", tiling(text, spans), document_hash([text, SECTIONS[i % 3], i]))
    for row in rows:
        row["dense"] = rng.standard_normal(DIMENSIONS).astype(np.float32)
    return doc, rows


def corpus(n: int = 30, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    documents, rows = [], []
    for i in range(n):
        doc, pieces = document(i, 1 + i % 6, rng)
        documents.append(doc)
        rows.extend(pieces)
    return documents, rows


def best_documents(rows: list[dict], query: np.ndarray, k: int, allowed=lambda row: True) -> list[tuple[str, float]]:
    """numpy's answer: each document scored by its best piece's cosine, the k best."""
    best: dict[str, float] = {}
    for row in rows:
        if allowed(row):
            vector = row["dense"]
            score = float(vector @ query / np.linalg.norm(vector) / np.linalg.norm(query))
            best[row["doc_id"]] = max(best.get(row["doc_id"], -2.0), score)
    return sorted(best.items(), key=lambda item: -item[1])[:k]


@pytest.fixture(params=STORE_PATHS)
def store(request, tmp_path):
    with store_on_path(request, tmp_path) as store:
        store.bm25 = request.param != "server"  # Milvus 2.3 has no BM25
        yield store


def test_documents_are_ranked_by_their_best_piece(store):
    store.ensure(config("pieces", store.bm25), DIMENSIONS)
    documents, rows = corpus()
    assert store.upsert("pieces", rows) == len(documents)
    if store.path == "mirror":
        assert store.mirrors.await_mirror("pieces", 60) is not None
    assert store.count("pieces") == len(documents)
    query = np.random.default_rng(7).standard_normal(DIMENSIONS).astype(np.float32)
    found = store.search("pieces", SearchQuery(mode="dense", k=8, dense_vector=query, output_fields=["section", "text"],
                                               passages=2))
    expected = best_documents(rows, query, 8)
    assert found.ids == [doc_id for doc_id, _ in expected]
    np.testing.assert_allclose(found.scores, [score for _, score in expected], atol=1e-5)
    by_key = {row["id"]: row for row in rows}
    for doc_id, fields, passages in zip(found.ids, found.fields, found.passages):
        assert fields["section"] == SECTIONS[int(doc_id.split("-")[1]) % 3]
        assert fields["text"] == passages[0]["text"]  # a hit's text is its best piece's
        assert 1 <= len(passages) <= 2 and passages[0]["score"] >= passages[-1]["score"]
        for passage in passages:
            piece = by_key[f"{doc_id}#{passage['index']}"]
            assert (passage["text"], passage["start"]) == (piece["text"], piece["piece_start"])


def test_filters_select_documents_by_their_fields_and_ids(store):
    store.ensure(config("filtered", store.bm25), DIMENSIONS)
    _, rows = corpus()
    store.upsert("filtered", rows)
    if store.path == "mirror":
        store.mirrors.await_mirror("filtered", 60)
    query = np.random.default_rng(3).standard_normal(DIMENSIONS).astype(np.float32)
    wanted = {"doc-1", "doc-4", "doc-5", "doc-10"}
    expression = 'section == "libs" and id in ["doc-1", "doc-4", "doc-5", "doc-10"]'
    found = store.search("filtered", SearchQuery(mode="dense", k=5, dense_vector=query, filter=expression,
                                                 output_fields=[]))
    expected = best_documents(rows, query, 5, lambda row: row["section"] == "libs" and row["doc_id"] in wanted)
    assert found.ids == [doc_id for doc_id, _ in expected] and set(found.ids) == {"doc-1", "doc-4", "doc-10"}


def test_pieces_join_back_and_a_shorter_version_leaves_no_stale_piece(store):
    store.ensure(config("versions", store.bm25), DIMENSIONS)
    documents, rows = corpus(8)
    store.upsert("versions", rows)
    got = {doc["id"]: doc for doc in store.get("versions", [d["id"] for d in documents], ["id", "text", "size"])}
    assert {doc_id: (doc["text"], doc["size"]) for doc_id, doc in got.items()} == {
        doc["id"]: (doc["text"], doc["size"]) for doc in documents}
    rng = np.random.default_rng(1)
    _, shorter = document(5, 2, rng)  # doc-5 had 6 pieces
    store.upsert("versions", shorter)
    stored = store._pieces_of("versions", ["doc-5"], ["id", "piece_index", "doc_hash"])
    assert sorted(row["piece_index"] for row in stored) == [0, 1]
    assert whole_documents(store._pieces_of("versions", ["doc-5"], ["id", "doc_id", "piece_index", "piece_count",
                                                                    "doc_hash"])) == {"doc-5": shorter[0]["doc_hash"]}
    assert store.delete("versions", ["doc-5", "doc-6", "no-such"]) == 2
    assert store.count("versions") == 6 and store._pieces_of("versions", ["doc-5", "doc-6"], ["id"]) == []
    assert sorted(store.ids("versions")) == sorted(d["id"] for d in documents if d["id"] not in ("doc-5", "doc-6"))


def test_a_documents_pieces_come_back_in_order_as_they_were_written(store):
    store.ensure(config("pieces", store.bm25), DIMENSIONS)
    documents, rows = corpus(8)
    store.upsert("pieces", rows[::-1])  # written in another order than theirs
    written = sorted((row for row in rows if row["doc_id"] == "doc-5"), key=lambda row: row["piece_index"])
    assert store.pieces("pieces", "doc-5") == [
        {"index": row["piece_index"], "start": row["piece_start"], "text": row["text"]} for row in written]
    assert len(written) == 6 and store.pieces("pieces", "no-such") == []


def test_an_interrupted_write_is_not_taken_for_a_whole_document(store):
    store.ensure(config("interrupted", store.bm25), DIMENSIONS)
    rng = np.random.default_rng(2)
    _, old = document(3, 3, rng)
    store.upsert("interrupted", old)
    new_doc, new = document(3, 5, rng)
    new = [{**row, "text": row["text"].upper(), "doc_hash": "new"} for row in new]
    store.upsert("interrupted", new[:2])  # a crash after two of five pieces: old pieces 2 is still there
    assert "doc-3" not in store.document_hashes("interrupted", ["doc-3"])
    store.upsert("interrupted", new)
    assert store.document_hashes("interrupted", ["doc-3"]) == {"doc-3": "new"}
    (got,) = store.get("interrupted", ["doc-3"], ["text"])
    assert got["text"] == new_doc["text"].upper() == joined(Slice(row["piece_start"], row["text"]) for row in new)


def min_max_fused(routes: list[list[tuple[str, float]]], weights: list[float]) -> list[tuple[str, float]]:
    """numpy's weighted fusion: each list's scores scaled to [0, 1] over its own hits, then a weighted sum."""
    fused: dict[str, float] = {}
    for hits, weight in zip(routes, weights):
        scores = np.array([score for _, score in hits])
        span = scores.max() - scores.min()
        scaled = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
        for (key, _), value in zip(hits, scaled):
            fused[key] = fused.get(key, 0.0) + weight * float(value)
    return sorted(fused.items(), key=lambda item: -item[1])


def cosines(rows: list[dict], query: np.ndarray) -> list[tuple[str, float]]:
    """Each piece's cosine to ``query`` (numpy), best first."""
    scores = [(row["id"], float(row["dense"] @ query / np.linalg.norm(row["dense"]) / np.linalg.norm(query)))
              for row in rows]
    return sorted(scores, key=lambda item: -item[1])


def best_per_document(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    best: dict[str, float] = {}
    for key, score in pieces:
        best.setdefault(key.rpartition("#")[0], score)
    return list(best.items())


def test_hybrid_search_fuses_each_piece_then_adds_the_documents_openings(store):
    """A document's hybrid score: its best piece (dense and BM25 fused per piece) fused with how well its opening
    matches the query (0.25), by meaning and BM25 fused alike. Compared with numpy over the pieces' vectors and
    Milvus's own BM25 scores of each piece (doc-3's opening carries the query's vector, its second piece one of the
    query's words)."""
    if not store.bm25:
        pytest.skip("Milvus 2.3 has no BM25")
    store.ensure(config("routes", True), DIMENSIONS)
    _, rows = corpus()
    store.upsert("routes", rows)
    if store.path == "mirror":
        store.mirrors.await_mirror("routes", 60)
    opening = next(row for row in rows if row["id"] == "doc-3#0")
    query = opening["dense"] + np.random.default_rng(7).standard_normal(DIMENSIONS).astype(np.float32) * 0.3
    text = "w3x7 w11x2 w17x12"
    everything = len(rows)
    bm25 = store.hits("routes", "sparse", text, everything)  # Milvus's (or the mirror's) BM25 of each piece
    per_piece = min_max_fused([cosines(rows, query), bm25], [0.5, 0.5])
    first_bm25 = [(key, score) for key, score in bm25 if key.endswith("#0")]
    openings = best_per_document(min_max_fused(
        [cosines([row for row in rows if row["piece_index"] == 0], query), first_bm25], [0.5, 0.5]))
    expected = min_max_fused([best_per_document(per_piece), openings], [0.75, 0.25])[:6]
    found = store.search("routes", SearchQuery(mode="hybrid", k=6, dense_vector=query, text=text, candidates=everything,
                                               passages=2, output_fields=["text"]))
    assert found.ids == [doc_id for doc_id, _ in expected]
    np.testing.assert_allclose(found.scores, [score for _, score in expected], rtol=1e-4)
    pieces = dict(per_piece)
    for doc_id, passages in zip(found.ids, found.passages):  # passages: the document's best pieces, by their fused score
        mine = sorted((key for key in pieces if key.rpartition("#")[0] == doc_id), key=lambda key: -pieces[key])[:2]
        assert [f"{doc_id}#{passage['index']}" for passage in passages] == mine
