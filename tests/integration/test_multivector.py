"""Multi-vector (MUVERA + MaxSim) collections through the running service, against exact Chamfer
similarity computed here from sentence-transformers' own MiniLM token vectors."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from tests.integration.conftest import SAMPLE_FIELDS
from tests.integration.test_collections import DOCUMENTS, QUERIES, post

QUERY_COUNT = 8


def token_vectors(model, texts: list[str]) -> list[np.ndarray]:
    """sentence-transformers' token embeddings without [CLS], [SEP] and [UNK], at unit length."""
    special = set(model.tokenizer.all_special_ids)
    matrices = []
    for text, tokens in zip(texts, model.encode(texts, output_value="token_embeddings", batch_size=16)):
        ids = model.tokenizer(text, truncation=True, max_length=model.max_seq_length)["input_ids"]
        kept = tokens.numpy()[[token not in special for token in ids]].astype(np.float64)
        matrices.append(kept / np.linalg.norm(kept, axis=1, keepdims=True))
    return matrices


def chamfer_ranking(query: np.ndarray, documents: dict[str, np.ndarray]) -> list[tuple[str, float]]:
    scores = {doc: float((query @ tokens.T).max(axis=1).sum()) for doc, tokens in documents.items()}
    return sorted(scores.items(), key=lambda item: -item[1])


def search(url: str, body: dict, collection: str = "late") -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:  # the first search loads the token vectors into the store's memory: 503 meanwhile
        response = post(url, f"/v1/collections/{collection}/search", body)
        if response.status_code != 503:
            return response
        assert time.monotonic() < deadline, response.text
        time.sleep(float(response.headers.get("Retry-After", 1)) / 4)


@pytest.fixture(scope="module")
def late(service_url) -> str:
    response = post(service_url, "/v1/collections", {"name": "late", "model": "minilm", "fields": SAMPLE_FIELDS,
                                                     "multivector": {}})
    assert response.status_code in (200, 201), response.text
    for start in range(0, len(DOCUMENTS), 60):
        response = post(service_url, "/v1/collections/late/documents", {"documents": DOCUMENTS[start : start + 60]})
        assert response.status_code == 200 and response.json()["upserted"] == len(DOCUMENTS[start : start + 60]), \
            response.text
    return service_url


def test_multivector_search_ranks_by_exact_maxsim(late, reference_minilm):
    documents = dict(zip([str(doc["id"]) for doc in DOCUMENTS],
                         token_vectors(reference_minilm, [doc["text"] for doc in DOCUMENTS])))
    queries = [query["query"] for query in QUERIES[:QUERY_COUNT]]
    for text, query in zip(queries, token_vectors(reference_minilm, queries)):
        # 200 candidates by default: every one of the 120 documents is reranked, so the ranking is exact
        response = search(late, {"query": text, "k": 10, "output_fields": ["package"]})
        assert response.status_code == 200, response.text
        body = response.json()
        expected = chamfer_ranking(query, documents)[:10]
        assert body["mode"] == "multivector"
        assert [hit["id"] for hit in body["results"]] == [doc for doc, _ in expected]
        assert [hit["score"] for hit in body["results"]] == pytest.approx([score for _, score in expected], abs=1e-3)
        assert set(body["results"][0]["fields"]) == {"package"}
    described = httpx.get(f"{late}/v1/collections/late").json()
    assert described["dimensions"] == 8 * 16 * 20 and described["multivector"]["fde"]["k_sim"] == 3
    live_tokens = sum(len(tokens) for tokens in documents.values())
    assert described["mirror"]["tokens"]["bytes_per_document"] == round(live_tokens * 384 * 4 / len(documents))


def test_multivector_mistakes_are_400s(late):
    checks = [
        (search(late, {"query": "editor", "mode": "multivector"}, collection="debian"), 400, "mode",
         "needs a collection made with the multivector option"),
        (search(late, {"query": "editor", "mode": "dense"}), 400, "mode", "searched with mode multivector"),
        (post(late, "/v1/collections/late/documents", {"documents": [{"id": "v", "text": "x", "vector": [0.0] * 384}]}),
         400, "documents", "unknown field"),
        (post(late, "/v1/collections", {"name": "late_clip", "model": "clip", "multivector": {}}), 400, "multivector",
         "gives no token vectors"),
        (post(late, "/v1/collections", {"name": "late_cosine", "multivector": {}, "index": {"metric": "COSINE"}}),
         422, None, "needs metric IP"),
    ]
    for response, status, param, message in checks:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert message in error["message"] and (param is None or error["param"] == param), error
