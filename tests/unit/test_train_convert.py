"""rayprism convert: merges, truncation and vocabulary transfer on tiny models; ONNX parity on MiniLM."""

import numpy as np
import pytest
import torch

from rayprism.platform.config import ModelConfig
from rayprism.platform.errors import ConfigError, InvalidInputError
from rayprism.platform.models.registry import load_encoder
from tests.conftest import cosines, embed

TEXTS = ["a tool to view package descriptions", "the GNU C library: shared libraries", "x",
         "Debian package descriptions are written by thousands of maintainers, " * 6]


def st(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


def perturbed_copy(source: str, target, scale: float, seed: int) -> str:
    model = st(source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    model.save(str(target))
    return str(target)


def test_a_soup_of_identical_checkpoints_is_the_checkpoint(tiny_model_path, tmp_path):
    from rayprism.trainers.convert.merge import merge_models

    merge_models([tiny_model_path] * 3, tmp_path / "soup")
    original, soup = st(tiny_model_path), st(tmp_path / "soup")
    for (name, value), (_, merged) in zip(original.state_dict().items(), soup.state_dict().items()):
        assert torch.equal(value, merged), name
    assert np.array_equal(original.encode(TEXTS), soup.encode(TEXTS))
    # the merged directory serves like any model
    served = embed(load_encoder(ModelConfig(source=str(tmp_path / "soup"))), TEXTS).vectors
    assert cosines(served, original.encode(TEXTS)).min() > 0.99999


def test_soup_is_the_mean_and_task_arithmetic_adds_and_negates(tiny_model_path, tmp_path):
    from rayprism.trainers.convert.merge import merge_models, merge_state_dicts

    a = perturbed_copy(tiny_model_path, tmp_path / "a", 0.01, 1)
    b = perturbed_copy(tiny_model_path, tmp_path / "b", 0.01, 2)
    base, first, second = (st(path).state_dict() for path in (tiny_model_path, a, b))
    name = next(key for key, value in base.items() if value.is_floating_point() and value.ndim == 2)
    soup = merge_state_dicts([first, second])
    assert torch.allclose(soup[name], (first[name] + second[name]) / 2, atol=1e-7)
    same = merge_state_dicts([first], base=base, weights=[1.0])
    assert torch.allclose(same[name], first[name], atol=1e-6)
    negated = merge_state_dicts([first], base=base, weights=[-1.0])
    assert torch.allclose(negated[name], 2 * base[name] - first[name], atol=1e-6)
    merge_models([a, b], tmp_path / "sum", base=tiny_model_path, weights=[0.5, 0.5])
    assert torch.allclose(st(tmp_path / "sum").state_dict()[name], soup[name], atol=1e-6)
    with pytest.raises(ConfigError, match="give --base"):
        merge_state_dicts([first, second], weights=[0.5, 0.5])
    with pytest.raises(ConfigError, match="2 weights for 1 models"):
        merge_state_dicts([first], base=base, weights=[1.0, 1.0])


def test_models_of_different_shapes_do_not_merge(tiny_model_path, minilm_path):
    from rayprism.trainers.convert.merge import merge_state_dicts

    with pytest.raises(ConfigError, match="merge checkpoints of one base model|has shape"):
        merge_state_dicts([st(tiny_model_path).state_dict(), st(minilm_path).state_dict()])


def test_truncate_keeps_the_leading_dimensions_renormalised(tiny_model_path, tmp_path):
    from rayprism.trainers.convert.truncate import truncate_model

    truncate_model(tiny_model_path, tmp_path / "t8", dimensions=8)
    full = st(tiny_model_path).encode(TEXTS)
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    truncated = st(tmp_path / "t8")
    assert truncated.get_embedding_dimension() == 8
    assert np.allclose(truncated.encode(TEXTS), expected, atol=1e-5)
    encoder = load_encoder(ModelConfig(source=str(tmp_path / "t8")))
    assert encoder.dimensions == 8
    assert np.allclose(embed(encoder, TEXTS).vectors, expected, atol=1e-5)
    with pytest.raises(ConfigError, match=r"dimensions must be in \[1, 16\]"):
        truncate_model(tiny_model_path, tmp_path / "bad", dimensions=17)


def test_truncate_layers_is_the_first_layers_pooled(tiny_model_path, tmp_path):
    from rayprism.trainers.convert.truncate import truncate_model
    from rayprism.trainers.model import Embedder, TrainableModel

    truncate_model(tiny_model_path, tmp_path / "l1", dimensions=16, layers=1)
    model = TrainableModel(tiny_model_path)
    model.st.eval()
    with torch.no_grad():
        (layers,) = Embedder(model.st, [1])([model.text_chunks(TEXTS, "document", max_tokens=64)])
    expected = torch.nn.functional.normalize(layers[1], dim=-1).numpy()
    assert np.allclose(st(tmp_path / "l1").encode(TEXTS), expected, atol=1e-5)


def write_vectors(path, words, vectors):
    with open(path, "w") as file:
        file.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, vector in zip(words, vectors):
            file.write(word + " " + " ".join(f"{value:.6f}" for value in vector) + "\n")


def test_wechsel_maps_target_tokens_to_their_aligned_source_tokens(tiny_model_path, tmp_path):
    """Aligned vectors: each target word shares its vector with its translation; the target token then
    takes (almost exactly) that source token's embedding, and a sentence embeds like its translation."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rayprism.trainers.convert.wechsel import transfer_vocabulary

    pairs = {"house": "haus", "tree": "baum", "water": "wasser", "book": "buch", "green": "gruen",
             "small": "klein", "dog": "hund", "city": "stadt"}
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: index for index, token in enumerate(specials + list(pairs.values()) + ["zzz"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers.processors import TemplateProcessing

    backend.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    target = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    target.save_pretrained(tmp_path / "target-tokenizer")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(pairs), 20)).astype(np.float32)
    write_vectors(tmp_path / "en.vec", list(pairs), vectors)
    write_vectors(tmp_path / "de.vec", list(pairs.values()), vectors + rng.normal(scale=0.01, size=vectors.shape))

    report = transfer_vocabulary(tiny_model_path, str(tmp_path / "target-tokenizer"), tmp_path / "en.vec",
                                 tmp_path / "de.vec", tmp_path / "moved", neighbours=3, temperature=0.01)
    assert (report.vocabulary, report.mapped, report.random) == (len(vocab), len(pairs), 1)  # zzz: random
    moved, source = st(tmp_path / "moved"), st(tiny_model_path)
    source_embeddings = source[0].auto_model.get_input_embeddings().weight
    moved_embeddings = moved[0].auto_model.get_input_embeddings().weight
    for english, german in pairs.items():
        expected = source_embeddings[source.tokenizer.convert_tokens_to_ids(english)]
        got = moved_embeddings[vocab[german]]
        assert torch.nn.functional.cosine_similarity(expected, got, dim=0) > 0.999, german
    assert torch.equal(moved_embeddings[vocab["[CLS]"]], source_embeddings[source.tokenizer.cls_token_id])
    english, german = ["house tree water", "small green dog"], ["haus baum wasser", "klein gruen hund"]
    assert cosines(moved.encode(german), source.encode(english)).min() > 0.99
    served = embed(load_encoder(ModelConfig(source=str(tmp_path / "moved"))), german).vectors
    assert cosines(served, moved.encode(german)).min() > 0.99999


@pytest.mark.slow
def test_onnx_export_serves_minilm_at_fp32_and_int8_parity(minilm_path, tmp_path, reference_minilm):
    """Pooling and normalisation live in the graph; the onnx backend serves both files."""
    import json
    from pathlib import Path

    from rayprism.trainers.convert.onnx import export_onnx

    data = Path(__file__).resolve().parents[1] / "data" / "debian-sample.jsonl"
    documents = [json.loads(line)["text"] for line in data.read_text().splitlines()[:48]]
    inputs = TEXTS + documents
    export_onnx(minilm_path, tmp_path / "onnx-minilm")
    expected = reference_minilm.encode(inputs)
    fp32 = load_encoder(ModelConfig(source=str(tmp_path / "onnx-minilm"), backend="onnx"))
    int8 = load_encoder(ModelConfig(source=str(tmp_path / "onnx-minilm"), backend="onnx",
                                    options={"file": "onnx/model_int8.onnx"}))
    assert fp32.dimensions == 384 and fp32.max_input_tokens == 256
    assert cosines(embed(fp32, inputs).vectors, expected).min() >= 0.9999
    # int8 weights and activations: on average within 0.01 of fp32 (bench/train.py: mean 0.993, min 0.986
    # over 1,024 dev queries); the worst inputs here are one-word ones
    quantised = cosines(embed(int8, inputs).vectors, expected)
    assert quantised.mean() >= 0.99 and quantised.min() >= 0.97
    # the exported directory is still a sentence-transformers model
    assert np.allclose(st(tmp_path / "onnx-minilm").encode(inputs[:4]), expected[:4], atol=1e-5)
    # a text over the limit: cut to it and counted so, or refused with its whole length as the torch backend does
    long = "word " * 400
    assert embed(fp32, [long]).token_counts == [256]
    whole = len(reference_minilm.tokenizer(long)["input_ids"])
    with pytest.raises(InvalidInputError, match=rf"input\[1\] is {whole} tokens; this model reads at most 256"):
        fp32.prepare(["fits", long], truncate=False)
    np.testing.assert_array_equal(embed(fp32, inputs[:4], truncate=False).vectors, embed(fp32, inputs[:4]).vectors)
    with pytest.raises(ConfigError, match="does not exist; export it"):
        load_encoder(ModelConfig(source=minilm_path, backend="onnx"))
