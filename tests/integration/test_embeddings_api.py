"""The running service through the official openai client and plain HTTP."""

import base64

import httpx
import numpy as np
import pytest
from openai import OpenAI

from tests.conftest import cosines

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ray Serve scales Python model serving.",
    "Milvus is a vector database.",
    "word " * 300,
]


@pytest.fixture(scope="module")
def client(service_url):
    return OpenAI(base_url=f"{service_url}/v1", api_key="not-needed", max_retries=0)


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_openai_client_gets_sentence_transformers_vectors(client, reference_minilm, encoding_format):
    response = client.embeddings.create(model="minilm", input=TEXTS, encoding_format=encoding_format)
    assert response.object == "list" and response.model == "minilm"
    assert [item.index for item in response.data] == list(range(len(TEXTS)))
    if encoding_format == "base64":  # asked for explicitly, the client hands the string back as is
        vectors = np.array([np.frombuffer(base64.b64decode(item.embedding), "<f4") for item in response.data])
    else:
        vectors = np.array([item.embedding for item in response.data])
    assert vectors.shape == (len(TEXTS), 384)
    assert cosines(vectors, reference_minilm.encode(TEXTS)).min() >= 0.9999
    expected_tokens = sum(min(256, len(reference_minilm.tokenizer(t)["input_ids"])) for t in TEXTS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == expected_tokens


def test_openai_client_default_request_and_single_string(client, reference_minilm):
    response = client.embeddings.create(model="minilm", input="hello world")  # the client asks for base64
    assert len(response.data) == 1
    assert cosines([response.data[0].embedding], reference_minilm.encode(["hello world"]))[0] >= 0.9999


def test_dimensions_truncate_and_renormalise(client, reference_minilm):
    response = client.embeddings.create(model="minilm", input=TEXTS[:2], dimensions=64)
    vectors = np.array([item.embedding for item in response.data])
    full = reference_minilm.encode(TEXTS[:2])[:, :64]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert cosines(vectors, full).min() >= 0.9999


def test_token_id_inputs(service_url, reference_minilm):
    ids = reference_minilm.tokenizer(TEXTS[:2])["input_ids"]
    for body_input in (ids, ids[0]):
        response = httpx.post(f"{service_url}/v1/embeddings",
                              json={"model": "minilm", "input": body_input, "tokenizer": "model"})
        assert response.status_code == 200, response.text
        vectors = [item["embedding"] for item in response.json()["data"]]
        expected = reference_minilm.encode(TEXTS[: len(vectors)])
        assert cosines(vectors, expected).min() >= 0.9999


def test_models_listing(client, service_url):
    listed = {model.id: model for model in client.models.list().data}
    # the session's config, in its order
    assert list(listed) == ["minilm", "tiny-queue", "clip", "whisper", "judge", "prompted"]
    assert listed["minilm"].model_extra["dimensions"] == 384
    assert listed["tiny-queue"].model_extra["dimensions"] == 16
    one = httpx.get(f"{service_url}/v1/models/minilm").json()
    assert one["id"] == "minilm" and one["state"] == "ready" and one["max_input_tokens"] == 256


def test_health_reports_every_model_ready(service_url):
    response = httpx.get(f"{service_url}/health")
    assert response.status_code == 200
    models = {name: "ready" for name in ("minilm", "tiny-queue", "clip", "whisper", "judge", "prompted")}
    body = response.json()
    assert body.pop("replica")  # which serving replica answered: start-up counts the distinct ones ready
    assert body == {"status": "ok", "models": models, "store": "ok"}


def test_metrics_count_requests_tokens_and_batches_by_model(service_url):
    httpx.post(f"{service_url}/v1/embeddings", json={"model": "minilm", "input": ["metrics probe"]})
    httpx.post(f"{service_url}/v1/embeddings", json={"model": "nope", "input": ["x"]})
    response = httpx.get(f"{service_url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for fragment in (
        'rayprism_requests_total{endpoint="embeddings",model="minilm",status="200"}',
        'rayprism_requests_total{endpoint="embeddings",model="unknown",status="404"}',
        'rayprism_request_latency_seconds_bucket{endpoint="embeddings",le="0.05",model="minilm"}',
        'rayprism_batch_size_count{model="minilm"}',
        'rayprism_batch_tokens_sum{model="minilm"}',
        'rayprism_tokens_total{model="minilm"}',
        'rayprism_inputs_total{model="minilm"}',
        'rayprism_queue_depth{model="minilm"} 0.0',
        'rayprism_model_ready{model="tiny-queue"} 1.0',
    ):
        assert fragment in text, fragment


def test_rerank_answers_best_first_as_cross_encoder_predict_orders_them(service_url, tiny_reranker_path):
    from sentence_transformers import CrossEncoder

    query = "package manager"
    documents = ["apt manages Debian packages", "a text editor", "an image viewer for X11", "python interpreter"]
    response = httpx.post(f"{service_url}/v1/rerank", json={"query": query, "documents": documents, "top_n": 3,
                                                             "return_documents": True})
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = CrossEncoder(tiny_reranker_path).predict([[query, document] for document in documents])
    assert [result["index"] for result in answer["results"]] == np.argsort(-expected)[:3].tolist()
    for result in answer["results"]:
        assert abs(result["relevance_score"] - float(expected[result["index"]])) < 1e-5
        assert result["document"]["text"] == documents[result["index"]]
    assert answer["model"] == "judge" and answer["usage"]["total_tokens"] > 0
    wrong_kind = httpx.post(f"{service_url}/v1/rerank", json={"model": "minilm", "query": "q", "documents": ["d"]})
    assert wrong_kind.status_code == 400 and "not a reranker" in wrong_kind.json()["error"]["message"]


def test_truncate_false_answers_400_with_the_length_and_the_limit_and_embeds_what_fits(client, service_url,
                                                                                         reference_minilm):
    """Through the openai client (``extra_body``) and plain HTTP: by default the long text is cut and usage
    counts the 256 tokens embedded; ``truncate: false`` makes it a 400 naming it, and leaves what fits alone."""
    import openai

    tokenizer = reference_minilm.tokenizer
    long = "word " * 300
    inputs = ["hello world", long]
    cut = client.embeddings.create(model="minilm", input=inputs, encoding_format="float")
    assert cut.usage.prompt_tokens == len(tokenizer(inputs[0])["input_ids"]) + 256
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="minilm", input=inputs, extra_body={"truncate": False})
    whole = len(tokenizer(long)["input_ids"])
    assert caught.value.status_code == 400 and caught.value.body == {
        "message": f'input[1] is {whole} tokens; this model reads at most 256 (send "truncate": true to cut it to fit)',
        "type": "invalid_request_error", "param": "input[1]", "code": "invalid_input"}
    kept = httpx.post(f"{service_url}/v1/embeddings", json={"model": "minilm", "input": inputs[:1], "truncate": False})
    assert kept.status_code == 200, kept.text
    assert kept.json()["usage"]["prompt_tokens"] == len(tokenizer(inputs[0])["input_ids"])
    assert cosines([kept.json()["data"][0]["embedding"]], [cut.data[0].embedding])[0] >= 0.99999


def test_rerank_truncate_false_answers_400_naming_the_document(service_url, tiny_reranker_path):
    from sentence_transformers import CrossEncoder

    tokenizer = CrossEncoder(tiny_reranker_path).tokenizer
    query, documents = "package manager", ["apt manages Debian packages", "an image viewer for X11 " * 20]
    body = {"model": "judge", "query": query, "documents": documents}
    cut = httpx.post(f"{service_url}/v1/rerank", json=body)
    assert cut.status_code == 200, cut.text
    assert cut.json()["usage"]["total_tokens"] == len(tokenizer(query, documents[0])["input_ids"]) + 64
    refused = httpx.post(f"{service_url}/v1/rerank", json={**body, "truncate": False})
    whole = len(tokenizer(query, documents[1])["input_ids"])
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "documents[1]"
    assert refused.json()["error"]["message"].startswith(f"documents[1] with the query is {whole} tokens; this model "
                                                         "reads at most 64")
    kept = httpx.post(f"{service_url}/v1/rerank", json={**body, "documents": documents[:1], "truncate": False})
    assert kept.status_code == 200, kept.text
    [alone] = kept.json()["results"]
    [together] = [result for result in cut.json()["results"] if result["index"] == 0]
    assert alone["relevance_score"] == pytest.approx(together["relevance_score"], abs=1e-5)
