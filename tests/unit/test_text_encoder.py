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


REFUSAL = '{param} is {tokens:,} tokens; this model reads at most {limit} (send "truncate": true to cut it to fit)'


def refusal(encoder, inputs, **options) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        encoder.prepare(inputs, truncate=False, **options)
    assert caught.value.http_status == 400
    return caught.value


def test_a_long_text_is_cut_to_the_limit_or_refused_with_its_whole_length(minilm, reference_minilm):
    """By default a text is cut to the model's 256 tokens and counted so; with ``truncate=False`` it is a 400
    naming it, with its whole length as the model's tokenizer counts it uncut: one token over the limit,
    several times the limit, and beyond the 256 × 100 characters a truncated text is cut at before tokenising."""
    tokenizer = reference_minilm.tokenizer
    short = len(tokenizer("hi")["input_ids"])
    for words in (255, 400, 2_000, 30_000):
        text = "word " * words
        whole = len(tokenizer(text)["input_ids"])
        assert whole > 256
        assert embed(minilm, ["hi", text]).token_counts == [short, 256]
        error = refusal(minilm, ["hi", text])
        assert error.param == "input[1]"
        assert error.message == REFUSAL.format(param="input[1]", tokens=whole, limit=256)


def test_an_input_that_fits_is_embedded_alike_whether_or_not_truncation_is_allowed(minilm, reference_minilm):
    texts = ["hello world", "word " * 254]
    ids = reference_minilm.tokenizer(texts)["input_ids"]
    assert len(ids[1]) == 256  # exactly the limit
    for fits in (texts, ids):
        allowed, refused = embed(minilm, fits), embed(minilm, fits, truncate=False)
        assert allowed.token_counts == refused.token_counts == [len(i) for i in ids]
        np.testing.assert_array_equal(allowed.vectors, refused.vectors)


def test_token_ids_over_the_limit_are_cut_or_refused(minilm, reference_minilm):
    ids = reference_minilm.tokenizer("word " * 400)["input_ids"]
    assert embed(minilm, [ids]).token_counts == [256]
    error = refusal(minilm, [ids[:5], ids])
    assert error.message == REFUSAL.format(param="input[1]", tokens=len(ids), limit=256)


def test_the_prompt_counts_toward_the_limit(prompted_model_path):
    """The model reads the prompt and the text together: a text of exactly the limit fits alone, not prompted."""
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder(ModelConfig(source=prompted_model_path))
    tokenizer = SentenceTransformer(prompted_model_path, device="cpu").tokenizer
    text = "word " * 62
    assert len(tokenizer(text)["input_ids"]) == encoder.max_input_tokens == 64
    assert embed(encoder, [text], truncate=False).token_counts == [64]
    whole = len(tokenizer(encoder.prompts["query"] + text)["input_ids"])
    error = refusal(encoder, [text], prompt_name="query")
    assert error.message == REFUSAL.format(param="input[0]", tokens=whole, limit=64)
    assert embed(encoder, [text], prompt_name="query").token_counts == [64]
