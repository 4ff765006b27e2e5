"""Rerankers (cross-encoders): scores against sentence-transformers' own ``CrossEncoder.predict``, and the
service's rerank answer, without Ray or HTTP."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from rayprism.deployments.service import EmbeddingService
from rayprism.platform.api.requests import EmbeddingRequest, RerankRequest
from rayprism.platform.config import ModelConfig, ServeConfig, ServerConfig
from rayprism.platform.errors import ConfigError, InvalidInputError, PayloadTooLargeError
from rayprism.platform.models.registry import load_encoder

QUERY = "package manager for the command line"
DOCUMENTS = [
    "apt is the package manager of Debian",
    "a text editor for the console",
    "python interpreter",
    "x",
    "an image viewer for X11 with thumbnails, slideshows and a plugin system " * 8,  # cut at 64 tokens
    "manages packages: install, remove, upgrade",
]


@pytest.fixture(scope="module")
def reference(tiny_reranker_path):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(tiny_reranker_path, device="cpu")


@pytest.fixture(scope="module")
def service(tiny_model_path, tiny_reranker_path):
    config = ServeConfig(
        server=ServerConfig(max_inputs_per_request=8),
        models=[ModelConfig(name="tiny", source=tiny_model_path),
                ModelConfig(name="judge", kind="reranker", source=tiny_reranker_path)],
    )
    service = EmbeddingService(config)
    assert service.wait_loaded(120)
    yield service
    service.close()


@pytest.mark.parametrize("forward_batch_size", [1, 4, 32])
def test_scores_match_cross_encoder_predict_in_input_order(tiny_reranker_path, reference, forward_batch_size):
    from rayprism.platform.models.cross_encoder import CrossEncoderScorer

    scorer = CrossEncoderScorer(tiny_reranker_path, forward_batch_size=forward_batch_size)
    scores = scorer.score(scorer.prepare_pairs(QUERY, DOCUMENTS))
    expected = reference.predict([[QUERY, document] for document in DOCUMENTS])
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert len(set(np.round(expected, 3))) == len(DOCUMENTS)  # distinct: the order below means something


def test_pairs_are_cut_at_the_models_limit_as_the_tokenizer_cuts_them(tiny_reranker_path, reference):
    from rayprism.platform.models.cross_encoder import CrossEncoderScorer

    scorer = CrossEncoderScorer(tiny_reranker_path)
    prepared = scorer.prepare_pairs(QUERY, DOCUMENTS)
    tokenizer = reference.tokenizer
    for item, document in zip(prepared, DOCUMENTS):
        expected = tokenizer(QUERY, document, truncation=True, max_length=reference.max_seq_length)
        assert item.payload.ids == expected["input_ids"]
        assert item.payload.type_ids == expected["token_type_ids"]
    assert max(item.n_tokens for item in prepared) == reference.max_seq_length == 64


def test_a_pair_over_the_limit_is_refused_with_its_whole_length_unless_truncated(tiny_reranker_path, reference):
    """``truncate=False``: the pair is a 400 naming its document, with the length of query and document together
    as the model's tokenizer counts them uncut; pairs that fit score as they do when truncation is allowed."""
    from rayprism.platform.models.cross_encoder import CrossEncoderScorer

    scorer = CrossEncoderScorer(tiny_reranker_path)
    whole = len(reference.tokenizer(QUERY, DOCUMENTS[4])["input_ids"])
    assert whole > scorer.max_input_tokens == 64
    with pytest.raises(InvalidInputError) as caught:
        scorer.prepare_pairs(QUERY, DOCUMENTS, truncate=False)
    assert caught.value.param == "documents[4]" and caught.value.http_status == 400
    assert caught.value.message == (f"documents[4] with the query is {whole} tokens; this model reads at most 64 "
                                    '(send "truncate": true to cut it to fit)')
    fits = DOCUMENTS[:4] + DOCUMENTS[5:]
    kept, cut = scorer.prepare_pairs(QUERY, fits, truncate=False), scorer.prepare_pairs(QUERY, fits)
    assert kept == cut
    np.testing.assert_array_equal(scorer.score(kept), scorer.score(cut))


def rerank(service, **body) -> dict:
    return asyncio.run(service.rerank(RerankRequest(**body)))


def test_the_answer_is_best_first_with_scores_usage_and_documents(service, reference):
    answer = rerank(service, query=QUERY, documents=DOCUMENTS, return_documents=True)
    expected = reference.predict([[QUERY, document] for document in DOCUMENTS])
    assert [result["index"] for result in answer["results"]] == np.argsort(-expected).tolist()
    for result in answer["results"]:
        assert result["relevance_score"] == pytest.approx(float(expected[result["index"]]), abs=1e-5)
        assert result["document"] == {"text": DOCUMENTS[result["index"]]}
    tokens = sum(len(reference.tokenizer(QUERY, d, truncation=True, max_length=64)["input_ids"]) for d in DOCUMENTS)
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert answer["model"] == "judge" and answer["object"] == "rerank"


def test_the_service_cuts_a_long_pair_and_counts_what_it_scored_or_refuses_it(service, reference):
    long = [DOCUMENTS[0], DOCUMENTS[4]]
    usage = rerank(service, query=QUERY, documents=long)["usage"]
    assert usage["total_tokens"] == len(reference.tokenizer(QUERY, DOCUMENTS[0])["input_ids"]) + 64
    with pytest.raises(InvalidInputError, match=r"documents\[1\] with the query is \d+ tokens; this model reads at "
                                                "most 64") as caught:
        rerank(service, query=QUERY, documents=long, truncate=False)
    assert caught.value.param == "documents[1]"
    assert rerank(service, query=QUERY, documents=long[:1], truncate=False) == rerank(service, query=QUERY,
                                                                                      documents=long[:1])


def test_top_n_keeps_the_best_and_documents_are_left_out_by_default(service):
    everything = rerank(service, query=QUERY, documents=DOCUMENTS)["results"]
    best_two = rerank(service, query=QUERY, documents=DOCUMENTS, top_n=2)["results"]
    assert best_two == everything[:2]
    assert all("document" not in result for result in everything)
    assert rerank(service, query=QUERY, documents=DOCUMENTS, top_n=100)["results"] == everything


def test_each_kind_of_model_answers_its_own_route(service):
    with pytest.raises(InvalidInputError, match="'tiny' is an embedding model, not a reranker"):
        rerank(service, model="tiny", query=QUERY, documents=DOCUMENTS)
    with pytest.raises(InvalidInputError, match="'judge' is a reranker.*POST /v1/rerank"):
        asyncio.run(service.create_embeddings(EmbeddingRequest(model="judge", input="x")))
    # without a model name, each route takes the service's only model of its kind
    assert rerank(service, query=QUERY, documents=["x"])["model"] == "judge"
    assert asyncio.run(service.create_embeddings(EmbeddingRequest(input="x")))["model"] == "tiny"


def test_bad_rerank_input_is_refused_before_any_work(service):
    with pytest.raises(PayloadTooLargeError, match="too many documents: 9"):
        rerank(service, query=QUERY, documents=["x"] * 9)
    with pytest.raises(InvalidInputError, match=r"documents\[1\] is empty"):
        rerank(service, query=QUERY, documents=["x", "  "])
    with pytest.raises(InvalidInputError, match="query is empty"):
        rerank(service, query=" ", documents=["x"])


def test_models_are_described_with_their_kind(service):
    judge = service.describe_model(service.runner("judge", kind=None))
    assert judge["kind"] == "reranker" and judge["max_input_tokens"] == 64 and "dimensions" not in judge
    assert service.describe_model(service.runner("tiny"))["kind"] == "embedder"


def test_a_reranker_runs_on_torch_over_text_and_gives_one_score(tmp_path):
    from tests.conftest import make_tiny_reranker

    with pytest.raises(ValueError, match="a reranker runs on the torch backend, over text"):
        ModelConfig(name="r", kind="reranker", backend="onnx")
    with pytest.raises(ValueError, match="a reranker runs on the torch backend"):
        ModelConfig(name="r", kind="reranker", modality="image")
    classifier = make_tiny_reranker(tmp_path, num_labels=3)
    with pytest.raises(ConfigError, match="one score per pair.*3 labels"):
        load_encoder(ModelConfig(name="r", kind="reranker", source=str(classifier)))


def test_a_collection_needs_an_embedding_model(tiny_reranker_path):
    with pytest.raises(ValueError, match="collection 'c' uses model 'judge'; embedding models: \\['minilm'\\]"):
        ServeConfig(models=[ModelConfig(), ModelConfig(name="judge", kind="reranker", source=tiny_reranker_path)],
                    collections=[{"name": "c", "model": "judge"}])
