"""Collections and hybrid search through the running service, against a real Milvus Lite file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.conftest import SAMPLE_FIELDS

DATA = Path(__file__).resolve().parents[1] / "data"
DOCUMENTS = [
    {key: row[key] for key in ("id", "text", *SAMPLE_FIELDS)}
    for row in map(json.loads, (DATA / "debian-sample.jsonl").read_text().splitlines())
]
QUERIES = [json.loads(line) for line in (DATA / "debian-sample-queries.jsonl").read_text().splitlines()]


def post(url: str, path: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120, **kwargs)


def search(url: str, body: dict, collection: str = "debian") -> list[dict]:
    response = post(url, f"/v1/collections/{collection}/search", body)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def count(url: str, collection: str = "debian") -> int:
    return httpx.get(f"{url}/v1/collections/{collection}").json()["count"]


@pytest.fixture(scope="module")
def loaded(service_url) -> str:
    for start in range(0, len(DOCUMENTS), 60):
        response = post(service_url, "/v1/collections/debian/documents", {"documents": DOCUMENTS[start : start + 60]})
        assert response.status_code == 200, response.text
        assert response.json()["upserted"] == len(DOCUMENTS[start : start + 60])
    wait_for_mirror(service_url, "debian")
    return service_url


def wait_for_mirror(url: str, collection: str) -> None:
    """The first search starts the store's in-memory mirror of a collection; until it is built Milvus Lite
    answers, with its per-segment BM25 statistics, so two searches of one query could score differently."""
    search(url, {"query": "warm up", "k": 1}, collection)
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/v1/collections/{collection}").json().get("mirror") is None:
        assert time.monotonic() < deadline, "the in-memory mirror was not built in 60 s"
        time.sleep(0.2)


def mrr_at_10(url: str, collection: str = "debian", **options) -> float:
    total = 0.0
    for query in QUERIES:
        ids = [hit["id"] for hit in search(url, {"query": query["query"], "k": 10, **options}, collection)]
        total += 1 / (ids.index(str(query["doc_id"])) + 1) if str(query["doc_id"]) in ids else 0
    return total / len(QUERIES)


def test_declared_collection_is_listed_with_its_schema(loaded):
    listed = httpx.get(f"{loaded}/v1/collections").json()["data"]
    debian = next(c for c in listed if c["name"] == "debian")
    assert debian["count"] == len(DOCUMENTS) and debian["dimensions"] == 384
    assert debian["fields"] == SAMPLE_FIELDS and debian["bm25"] is True
    assert debian["model"] == "minilm" and "uri" not in debian  # where the store lives is not the caller's business


def test_upsert_is_idempotent_by_id(loaded):
    again = post(loaded, "/v1/collections/debian/documents", {"documents": DOCUMENTS[:10]})
    assert again.status_code == 200
    assert (again.json()["upserted"], again.json()["unchanged"], again.json()["tokens"]) == (0, 10, 0)
    assert count(loaded) == len(DOCUMENTS)


def test_an_upsert_replaces_the_document(loaded):
    changed = {**DOCUMENTS[5], "text": "A zebra-themed screensaver with striped animations."}
    assert post(loaded, "/v1/collections/debian/documents", {"documents": [changed]}).status_code == 200
    stored = httpx.get(f"{loaded}/v1/collections/debian/documents/{changed['id']}").json()
    assert stored["text"] == changed["text"] and stored["section"] == changed["section"]
    top = search(loaded, {"query": "zebra striped screensaver", "k": 1, "mode": "dense"})
    assert top[0]["id"] == str(changed["id"])
    assert post(loaded, "/v1/collections/debian/documents", {"documents": [DOCUMENTS[5]]}).status_code == 200
    assert count(loaded) == len(DOCUMENTS)


def test_an_id_with_slashes_is_read_by_its_path(loaded):
    """Files ingested from folders have ids like ``guide/install.md``: GET takes the rest of the path as the id."""
    document = {"id": "guide/linux/install.md", "text": "Install the package with make install."}
    assert post(loaded, "/v1/collections/debian/documents", {"documents": [document]}).status_code == 200
    stored = httpx.get(f"{loaded}/v1/collections/debian/documents/guide/linux/install.md")
    assert stored.status_code == 200 and stored.json()["text"] == document["text"]
    assert httpx.request("DELETE", f"{loaded}/v1/collections/debian/documents",
                         json={"ids": [document["id"]]}).json()["deleted"] == 1


def test_one_invalid_document_rejects_the_batch_and_names_every_problem(loaded):
    batch = [
        {"id": "new-1", "text": "a valid new document"},
        {"id": "new-2"},
        {"id": "new-3", "text": "fine", "installed_size": "big"},
        {"id": "new-1", "text": "the id again", "colour": "red"},
    ]
    response = post(loaded, "/v1/collections/debian/documents", {"documents": batch})
    assert response.status_code == 400
    error = response.json()["error"]
    problems = {(p["index"], p["field"]) for p in error["errors"]}
    assert problems == {(1, "text"), (2, "installed_size"), (3, "id"), (3, "colour")}
    assert "nothing was written" in error["message"]
    assert httpx.get(f"{loaded}/v1/collections/debian/documents/new-1").status_code == 404
    assert count(loaded) == len(DOCUMENTS)


def test_delete_removes_documents_from_every_mode(loaded):
    victim = DOCUMENTS[7]
    response = httpx.request(
        "DELETE", f"{loaded}/v1/collections/debian/documents", json={"ids": [victim["id"], "never-stored"]}, timeout=60
    )
    assert response.status_code == 200 and response.json()["deleted"] == 1  # what existed
    assert count(loaded) == len(DOCUMENTS) - 1
    assert httpx.get(f"{loaded}/v1/collections/debian/documents/{victim['id']}").status_code == 404
    for mode in ("dense", "sparse", "hybrid"):
        hits = search(loaded, {"query": victim["text"][:200], "k": 20, "mode": mode})
        assert str(victim["id"]) not in [hit["id"] for hit in hits]
    assert post(loaded, "/v1/collections/debian/documents", {"documents": [victim]}).status_code == 200
    assert count(loaded) == len(DOCUMENTS)


def test_every_mode_finds_the_known_items_and_hybrid_is_at_least_as_good(loaded):
    dense, sparse, hybrid = (mrr_at_10(loaded, mode=mode) for mode in ("dense", "sparse", "hybrid"))
    assert dense > 0.6 and sparse > 0.6
    assert hybrid >= max(dense, sparse) - 0.02, (dense, sparse, hybrid)


def test_default_is_hybrid_with_equal_weights_and_hits_carry_fields(loaded):
    response = post(loaded, "/v1/collections/debian/search", {"query": QUERIES[0]["query"], "k": 3})
    body = response.json()
    assert body["mode"] == "hybrid" and len(body["results"]) == 3
    hit = body["results"][0]
    assert set(hit) == {"id", "score", "fields"}
    assert set(hit["fields"]) == {"text", *SAMPLE_FIELDS}
    only = search(loaded, {"query": QUERIES[0]["query"], "k": 2, "output_fields": ["package"]})
    assert all(set(h["fields"]) == {"package"} for h in only)
    equal_weights = {"type": "weighted", "weights": {"dense": 0.5, "sparse": 0.5}}
    explicit = search(loaded, {"query": QUERIES[0]["query"], "k": 3, "fusion": equal_weights})
    assert [(h["id"], h["score"]) for h in explicit] == [(h["id"], h["score"]) for h in body["results"]]


def test_weighted_fusion_with_all_weight_on_one_side_follows_that_side(loaded):
    query = QUERIES[1]["query"]
    dense = [h["id"] for h in search(loaded, {"query": query, "k": 5, "mode": "dense"})]
    sparse = [h["id"] for h in search(loaded, {"query": query, "k": 5, "mode": "sparse"})]
    weighted = {"type": "weighted", "weights": {"dense": 1.0, "sparse": 0.0}}
    assert [h["id"] for h in search(loaded, {"query": query, "k": 5, "fusion": weighted})] == dense
    weighted["weights"] = {"dense": 0.0, "sparse": 1.0}
    assert [h["id"] for h in search(loaded, {"query": query, "k": 5, "fusion": weighted})] == sparse

def test_rrf_fusion_equals_reciprocal_ranks_computed_from_each_mode(loaded):
    """Hybrid RRF (k=10) against the sum of 1 / (10 + rank) over the dense and the BM25 lists of 50."""
    for query in [q["query"] for q in QUERIES[:5]]:
        expected: dict = {}
        for mode in ("dense", "sparse"):
            for rank, hit in enumerate(search(loaded, {"query": query, "k": 50, "mode": mode}), start=1):
                expected[hit["id"]] = expected.get(hit["id"], 0.0) + 1 / (10 + rank)
        fused = search(loaded, {"query": query, "k": 5, "candidates": 50, "fusion": {"type": "rrf", "k": 10}})
        assert [h["score"] for h in fused] == pytest.approx(sorted(expected.values(), reverse=True)[:5])
        assert all(expected[h["id"]] == pytest.approx(h["score"]) for h in fused)


def test_section_filter_keeps_targets_reachable_and_excludes_the_rest(loaded):
    for query in QUERIES[:10]:
        for mode in ("dense", "sparse", "hybrid"):
            hits = search(loaded, {"query": query["query"], "k": 10, "mode": mode,
                                   "filter": f'section == "{query["section"]}"'})
            assert hits and all(hit["fields"]["section"] == query["section"] for hit in hits)
            assert str(query["doc_id"]) in [hit["id"] for hit in hits], (query, mode)


def test_numeric_filter_and_a_filter_that_matches_nothing(loaded):
    big = search(loaded, {"query": "library", "k": 20, "filter": "installed_size > 5000"})
    assert big and all(hit["fields"]["installed_size"] > 5000 for hit in big)
    assert search(loaded, {"query": "library", "k": 5, "filter": 'section == "no-such-section"'}) == []


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"query": "x", "filter": "colour == 'red'"}, 400, "unknown field 'colour'"),
        ({"query": "x", "filter": "section ==== 'a'"}, 400, "filter: "),
        ({"query": "x", "output_fields": ["colour"]}, 400, "unknown field 'colour'"),
        ({"query": "x", "k": 20, "candidates": 5}, 400, "candidates (5) must be ≥ k (20)"),
        ({"query": ""}, 422, "query"),
        ({"query": "x", "mode": "fuzzy"}, 422, "mode"),
        ({"query": "x", "fusion": {"type": "weighted", "weights": {"dense": -1}}}, 422, "fusion"),
        ({"query": "x", "fusion": {"type": "borda"}}, 422, "fusion"),
        ({"query": "x", "k": 0}, 422, "k"),
        ({"query": {"vector": [0.5] * 16}}, 400, "query.vector has 16 values; the collection's model has 384"),
        ({"query": {"vector": [0.5] * 384}, "mode": "hybrid"}, 400, "by vector is dense; mode 'hybrid' needs text"),
        ({"query": {"vector": []}}, 422, "query"),
        ({"query": {"vector": [0] * 384}}, 400, "query.vector is all zeros"),
    ],
)
def test_bad_searches_are_named(loaded, body, status, fragment):
    response = post(loaded, "/v1/collections/debian/search", body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]


def test_a_search_by_vector_is_the_search_by_the_query_text_vector(loaded, reference_minilm):
    """A query's vector made elsewhere (sentence-transformers' MiniLM, as a list and as base64 float32)
    searches as the service's dense search of the same text does."""
    import base64

    query = "manage multiple choice questionnaires"
    expected = search(loaded, {"query": query, "k": 10, "mode": "dense", "filter": 'section != "doc"'})
    vector = reference_minilm.encode(query, normalize_embeddings=True).astype("<f4")
    for given in (vector.tolist(), base64.b64encode(vector.tobytes()).decode()):
        found = search(loaded, {"query": {"vector": given}, "k": 10, "filter": 'section != "doc"'})
        assert [hit["id"] for hit in found] == [hit["id"] for hit in expected]
        assert [hit["score"] for hit in found] == pytest.approx([hit["score"] for hit in expected], abs=1e-5)


def test_unknown_collection_is_404(service_url):
    response = post(service_url, "/v1/collections/nowhere/search", {"query": "x"})
    assert response.status_code == 404 and "'nowhere' does not exist" in response.json()["error"]["message"]


def test_collections_created_and_dropped_at_run_time(service_url):
    spec = {"name": "notes", "model": "tiny-queue", "fields": {"author": "varchar", "stars": "double"}, "bm25": False}
    created = post(service_url, "/v1/collections", spec)
    assert created.status_code == 201, created.text
    assert created.json()["dimensions"] == 16 and created.json()["count"] == 0
    assert post(service_url, "/v1/collections", spec).status_code == 200  # the same again is fine
    conflict = post(service_url, "/v1/collections", {**spec, "fields": {"author": "int64"}})
    assert conflict.status_code == 409 and "different config" in conflict.json()["error"]["message"]

    document = {"id": "n1", "text": "remember the milk", "author": "ada", "stars": 4.5}
    assert post(service_url, "/v1/collections/notes/documents", {"documents": [document]}).status_code == 200
    hits = search(service_url, {"query": "milk", "k": 1}, collection="notes")
    assert hits[0]["id"] == "n1" and hits[0]["fields"]["stars"] == 4.5
    sparse = post(service_url, "/v1/collections/notes/search", {"query": "milk", "mode": "sparse"})
    assert sparse.status_code == 400 and "needs BM25" in sparse.json()["error"]["message"]

    assert httpx.delete(f"{service_url}/v1/collections/notes").status_code == 200
    assert httpx.get(f"{service_url}/v1/collections/notes").status_code == 404
    assert post(service_url, "/v1/collections/notes/search", {"query": "milk"}).status_code == 404


def test_a_binary_compressed_collection_keeps_float_quality_at_a_32nd_of_the_memory(loaded):
    """Created over the API with ``compression``; its dense hits are rescored exactly, so the ranking
    matches the float collection's and the scores are the same cosines."""
    spec = {"name": "debian_bits", "model": "minilm", "fields": SAMPLE_FIELDS,
            "compression": {"type": "binary", "rescore_multiplier": 4}}
    assert post(loaded, "/v1/collections", spec).status_code == 201
    try:
        for start in range(0, len(DOCUMENTS), 60):
            assert post(loaded, "/v1/collections/debian_bits/documents",
                        {"documents": DOCUMENTS[start : start + 60]}).status_code == 200
        compressed = mrr_at_10(loaded, mode="dense", collection="debian_bits")
        assert compressed >= 0.97 * mrr_at_10(loaded, mode="dense")
        for query in QUERIES[:5]:
            body = {"query": query["query"], "k": 5, "mode": "dense", "filter": 'section != "games"'}
            floats = {hit["id"]: hit["score"] for hit in search(loaded, body)}
            for hit in search(loaded, body, collection="debian_bits"):
                if hit["id"] in floats:
                    assert hit["score"] == pytest.approx(floats[hit["id"]], abs=1e-4)
        described = httpx.get(f"{loaded}/v1/collections/debian_bits").json()
        assert described["compression"] == spec["compression"]
        assert described["mirror"]["dense"] == {"kind": "binary", "bytes_per_document": 384 // 8}
        assert httpx.get(f"{loaded}/v1/collections/debian").json()["mirror"]["dense"]["bytes_per_document"] == 384 * 4
    finally:
        httpx.delete(f"{loaded}/v1/collections/debian_bits")


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ({"name": "bad name"}, "name"),
        ({"name": "x", "fields": {"id": "varchar"}}, "reserved"),
        ({"name": "x", "fields": {"a": "float128"}}, "fields.a"),
        ({"name": "x", "model": "gpt"}, "model 'gpt' is not served here"),
    ],
)
def test_bad_collection_specs(service_url, spec, fragment):
    response = post(service_url, "/v1/collections", spec)
    assert response.status_code in (400, 422), response.text
    assert fragment in response.json()["error"]["message"]


def test_metrics_label_collection_routes_with_the_collections_model(loaded):
    search(loaded, {"query": "text editor", "mode": "hybrid"})
    search(loaded, {"query": "text editor", "mode": "dense"})
    post(loaded, "/v1/collections/debian/documents", {"documents": DOCUMENTS[:2]})
    text = httpx.get(f"{loaded}/metrics").text
    for fragment in (
        'rayprism_requests_total{endpoint="search",model="minilm",status="200"}',
        'rayprism_requests_total{endpoint="documents.upsert",model="minilm",status="200"}',
        'rayprism_search_latency_seconds_count{collection="debian",mode="hybrid"}',
        'rayprism_search_latency_seconds_count{collection="debian",mode="dense"}',
        'rayprism_store_call_seconds_count{call="search"}',
        'rayprism_store_call_seconds_count{call="sparse_hits"}',
        'rayprism_queue_wait_seconds_count{model="minilm"}',
        'rayprism_encode_seconds_count{model="minilm"}',
    ):
        assert fragment in text, fragment
    assert 'model="unknown",status="200"' not in text
    httpx.get(f"{loaded}/v1/collections/nowhere")
    text = httpx.get(f"{loaded}/metrics").text
    assert 'rayprism_store_errors_total{call="describe",status="404"}' in text


def min_max(values: np.ndarray) -> np.ndarray:
    return (values - values.min()) / (values.max() - values.min())


def test_a_rerank_stage_orders_the_fused_candidates_by_the_cross_encoder(loaded, tiny_reranker_path):
    from sentence_transformers import CrossEncoder

    query = QUERIES[0]["query"]
    fused = search(loaded, {"query": query, "k": 20})
    reranked = search(loaded, {"query": query, "k": 5, "rerank": {"model": "judge", "candidates": 20},
                               "output_fields": ["package"]})
    expected = CrossEncoder(tiny_reranker_path).predict([[query, hit["fields"]["text"]] for hit in fused])
    best = sorted(range(len(fused)), key=lambda i: -expected[i])[:5]
    assert [hit["id"] for hit in reranked] == [fused[i]["id"] for i in best]
    for hit, i in zip(reranked, best):
        assert abs(hit["score"] - float(expected[i])) < 1e-5
        assert hit["retrieval_score"] == pytest.approx(fused[i]["score"])
        assert abs(hit["rerank_score"] - float(expected[i])) < 1e-5
        assert hit["fields"] == {"package": fused[i]["fields"]["package"]}  # the text was read, not returned

    # weight 0.3: 0.3 × the reranker's scores + 0.7 × the fused ones, each min-max normalised over the 20
    blended = search(loaded, {"query": query, "k": 5, "rerank": {"model": "judge", "candidates": 20, "weight": 0.3}})
    first = np.array([hit["score"] for hit in fused])
    reference = 0.3 * min_max(np.asarray(expected)) + 0.7 * min_max(first)
    best = np.argsort(-reference, kind="stable")[:5]
    assert [hit["id"] for hit in blended] == [fused[i]["id"] for i in best]
    assert [hit["score"] for hit in blended] == pytest.approx(reference[best].tolist(), abs=1e-5)
    assert [hit["rerank_score"] for hit in blended] == pytest.approx([float(expected[i]) for i in best], abs=1e-5)
    refused = post(loaded, "/v1/collections/debian/search", {"query": query, "rerank": {"model": "minilm"}})
    assert refused.status_code == 400 and "not a reranker" in refused.json()["error"]["message"]
