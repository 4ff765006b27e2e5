"""The torch text backend against sentence-transformers' own encode."""

import numpy as np
import pytest

from rayprism.platform.config import ModelConfig
from rayprism.platform.errors import InvalidInputError, UnprocessableError
from rayprism.platform.models.registry import load_encoder
from tests.conftest import cosines, embed

TEXTS = [
    "hello world",
    "A much longer sentence about Debian packages, compilers and the people who maintain them.",
    "x",
    "Ünïcödé — emoji 🚀 and CJK 漢字 survive tokenisation",
    "word " * 400,  # beyond the model's 256-token limit: truncated, like sentence-transformers does
]


@pytest.fixture(scope="module")
def minilm():
    return load_encoder(ModelConfig(torch_threads=2))


def test_vectors_match_sentence_transformers(minilm, reference_minilm):
    ours = embed(minilm, TEXTS).vectors
    reference = reference_minilm.encode(TEXTS, batch_size=2)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 384)
    assert cosines(ours, reference).min() >= 0.99999


def test_token_vectors_match_sentence_transformers_without_padding_and_special_tokens(minilm, reference_minilm):
    ours = minilm.encode_tokens(minilm.prepare(TEXTS))
    reference = reference_minilm.encode(TEXTS, output_value="token_embeddings", batch_size=2)
    special = set(reference_minilm.tokenizer.all_special_ids)
    assert minilm.token_dimensions == 384
    for text, mine, theirs in zip(TEXTS, ours, reference):
        ids = reference_minilm.tokenizer(text, truncation=True, max_length=256)["input_ids"]
        expected = theirs.numpy()[[token not in special for token in ids]]  # [CLS], [SEP] and [UNK] (the emoji) out
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        assert mine.dtype == np.float32 and mine.shape == expected.shape
        assert np.abs(mine - expected).max() < 1e-4


def test_token_counts_include_special_tokens_and_truncation(minilm, reference_minilm):
    counts = embed(minilm, TEXTS).token_counts
    expected = [len(reference_minilm.tokenizer(text)["input_ids"]) for text in TEXTS]
    assert counts[:4] == expected[:4]
    assert counts[4] == 256 == minilm.max_input_tokens < expected[4]


def test_order_is_kept_whatever_the_lengths(minilm):
    together = embed(minilm, TEXTS).vectors
    one_by_one = np.vstack([embed(minilm, [text]).vectors for text in TEXTS])
    assert cosines(together, one_by_one).min() >= 0.99999


def test_token_ids_are_taken_as_the_full_model_input(minilm, reference_minilm):
    ids = reference_minilm.tokenizer("hello world")["input_ids"]
    from_ids = embed(minilm, [ids])
    assert from_ids.token_counts == [len(ids)]
    assert cosines(from_ids.vectors, embed(minilm, ["hello world"]).vectors).min() >= 0.99999


def test_max_input_tokens_from_config_truncates_further(minilm_path):
    short = load_encoder(ModelConfig(max_input_tokens=8))
    assert short.max_input_tokens == 8
    assert embed(short, ["one two three four five six seven eight nine ten"]).token_counts == [8]
    capped = load_encoder(ModelConfig(max_input_tokens=100_000))
    assert capped.max_input_tokens == 256


@pytest.mark.parametrize(
    "inputs, message",
    [
        ([], "must not be empty"),
        (["fine", ""], r"input\[1\] is empty"),
        (["   "], r"input\[0\] is empty or only whitespace"),
        ([[101, -5]], r"token id -5"),
        ([[101, 10**9]], r"token id 1000000000"),
        ([[]], r"empty list of token ids"),
        (["text", [1, 2]], "must be a string"),
        ([3.5], "must be a string"),
    ],
)
def test_bad_inputs_are_refused_by_index(minilm, inputs, message):
    with pytest.raises(InvalidInputError, match=message):
        minilm.prepare(inputs)


def test_wrong_modality_is_an_input_error(minilm):
    with pytest.raises(InvalidInputError, match="embeds text, not image"):
        minilm.prepare(["a"], modality="image")


def test_a_models_own_pooling_and_head_are_honoured(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder(ModelConfig(source=tiny_model_path))
    assert encoder.dimensions == 16 and encoder.max_input_tokens == 64
    reference = SentenceTransformer(tiny_model_path, device="cpu").encode(TEXTS)
    assert cosines(embed(encoder, TEXTS).vectors, reference).min() >= 0.99999


def test_prompts_are_applied_as_sentence_transformers_applies_them(prompted_model_path):
    """Named prompts, and a pooling that leaves the prompt's tokens out, give sentence-transformers' vectors."""
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder(ModelConfig(source=prompted_model_path))
    reference = SentenceTransformer(prompted_model_path, device="cpu")
    assert encoder.prompts == reference.prompts
    for name in ("query", "document", "classification"):
        ours = embed(encoder, TEXTS, prompt_name=name).vectors
        assert cosines(ours, reference.encode(TEXTS, prompt_name=name)).min() >= 0.99999, name
    without = embed(encoder, TEXTS).vectors
    assert cosines(without, reference.encode(TEXTS)).min() >= 0.99999
    assert cosines(without, embed(encoder, TEXTS, prompt_name="query").vectors).max() < 0.9999  # prompts matter


def test_requests_with_different_prompts_share_a_batch(prompted_model_path):
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder(ModelConfig(source=prompted_model_path))
    mixed = encoder.prepare(TEXTS[:2], prompt_name="query") + encoder.prepare(TEXTS[2:], prompt_name="document")
    reference = SentenceTransformer(prompted_model_path, device="cpu")
    expected = np.vstack([reference.encode(TEXTS[:2], prompt_name="query"),
                          reference.encode(TEXTS[2:], prompt_name="document")])
    assert cosines(encoder.encode(mixed), expected).min() >= 0.99999


def test_a_default_prompt_applies_unless_another_is_named(tmp_path):
    from sentence_transformers import SentenceTransformer

    from tests.conftest import make_tiny_model

    path = str(make_tiny_model(tmp_path, prompts={"query": "q: ", "document": "d: "}, default_prompt_name="query"))
    encoder = load_encoder(ModelConfig(source=path))
    reference = SentenceTransformer(path, device="cpu")
    assert cosines(embed(encoder, TEXTS).vectors, reference.encode(TEXTS)).min() >= 0.99999
    assert cosines(embed(encoder, TEXTS).vectors, embed(encoder, TEXTS, prompt_name="query").vectors).min() >= 0.99999
    named = embed(encoder, TEXTS, prompt_name="document").vectors
    assert cosines(named, reference.encode(TEXTS, prompt_name="document")).min() >= 0.99999


def test_an_unknown_prompt_name_is_a_422_listing_the_prompts(prompted_model_path, minilm):
    encoder = load_encoder(ModelConfig(source=prompted_model_path))
    with pytest.raises(UnprocessableError, match=r"prompt_name 'passage' is unknown; this model's prompts are "
                                                 r"\['classification', 'document', 'query'\]") as caught:
        encoder.prepare(["x"], prompt_name="passage")
    assert caught.value.http_status == 422 and caught.value.param == "prompt_name"
    assert minilm.prompts == {"query": "", "document": ""}  # what sentence-transformers gives models without prompts
    with pytest.raises(UnprocessableError, match=r"'classification' is unknown; this model's prompts are \['document'"):
        minilm.prepare(["x"], prompt_name="classification")
    with pytest.raises(UnprocessableError, match="token ids"):
        encoder.prepare([[101, 102]], prompt_name="query")
