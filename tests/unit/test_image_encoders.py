"""CLIP-family encoders against plain transformers, and how the torch backend picks an encoder from a directory."""

import base64
import io
import json
import shutil

import numpy as np
import pytest

from rayprism.platform.config import ModelConfig
from rayprism.platform.errors import ConfigError, InvalidInputError, UnprocessableError
from rayprism.platform.models.registry import load_encoder
from rayprism.platform.models.towers import warmup_input
from tests.conftest import cosines, embed
from tests.media_models import bomb_png, digit_pngs, speech_clips

FAMILIES = ["clip", "siglip"]
TEXTS = ["a handwritten digit", "seven", "Debian packages " * 20]  # the last is truncated to the tower's limit


@pytest.fixture(scope="module")
def pngs():
    return digit_pngs(6)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, media_model_path):
    """(model_type, directory, encoder) per family, with forward passes of 4 to mix full and partial ones."""
    path = media_model_path(request.param)
    config = ModelConfig(name=request.param, source=path, modality="image", batching={"forward_batch_size": 4})
    return request.param, path, load_encoder(config)


@pytest.fixture(scope="module")
def references(family):
    """The family's transformers model, image processor and tokenizer, loaded independently of rayprism."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    _, path, _ = family
    return AutoModel.from_pretrained(path).eval(), AutoImageProcessor.from_pretrained(path), \
        AutoTokenizer.from_pretrained(path)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def test_image_vectors_are_the_models_image_features(family, references, pngs):
    import torch
    from PIL import Image

    model, processor, _ = references
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    with torch.inference_mode():
        expected = model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
    result = embed(family[2], [data_uri(png) for png in pngs], "image")
    assert result.vectors.dtype == np.float32 and result.vectors.shape == expected.shape
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1, atol=1e-6)
    assert cosines(result.vectors, expected.numpy()).min() >= 0.9999
    assert result.token_counts == [(32 // 8) ** 2] * len(pngs)  # patches of a 32×32 image in 8×8 patches


def test_text_vectors_are_the_models_text_features(family, references):
    import torch

    model_type, _, encoder = family
    model, _, tokenizer = references
    # SigLIP's processor pads to max_length, as SigLIP was trained; CLIP pads to the longest text.
    padding = "max_length" if model_type == "siglip" else True
    tokens = tokenizer(TEXTS, padding=padding, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model.get_text_features(**tokens).pooler_output
    result = embed(encoder, TEXTS, "text")
    assert cosines(result.vectors, expected.numpy()).min() >= 0.9999
    assert result.token_counts == tokens["attention_mask"].sum(dim=1).tolist()
    assert result.token_counts[-1] == encoder.max_input_tokens == tokenizer.model_max_length


def test_images_and_texts_share_one_space_and_any_batch(family, pngs):
    """One encode call over images and texts interleaved (as requests meet in the batcher) gives each
    input the vector it gets alone."""
    encoder = family[2]
    assert encoder.modalities == {"image", "text"}
    images, texts = encoder.prepare(pngs, "image"), encoder.prepare(TEXTS, "text")
    items = [item for pair in zip(images, texts) for item in pair] + images[len(texts):]
    together = encoder.encode(items)
    assert together.shape == (len(items), encoder.dimensions)
    alone = np.vstack([encoder.encode([item]) for item in items])
    assert cosines(together, alone).min() >= 0.99999


def test_config_limits_truncate_text_and_refuse_large_images(family, pngs):
    model_type, path, _ = family
    encoder = load_encoder(ModelConfig(source=path, modality="image", max_input_tokens=4, max_image_pixels=1000))
    assert embed(encoder, TEXTS, "text").token_counts == [4, 4, 4]
    with pytest.raises(InvalidInputError, match=r"input\[1\] is 32×32 = 1,024 pixels; this model accepts at most 1,000"):
        encoder.prepare([digit_pngs(1, size=31)[0], pngs[0]], "image")


def test_a_text_over_the_towers_limit_is_refused_with_its_length_unless_truncated(family, references):
    _, path, _ = family
    tokenizer = references[2]
    encoder = load_encoder(ModelConfig(source=path, modality="image", max_input_tokens=4))
    fits = ["a"]
    assert len(tokenizer(fits[0])["input_ids"]) <= 4
    whole = len(tokenizer(TEXTS[2])["input_ids"])
    with pytest.raises(InvalidInputError, match=rf"input\[1\] is {whole} tokens; this model reads at most 4 ") as caught:
        encoder.prepare([fits[0], TEXTS[2]], "text", truncate=False)
    assert caught.value.param == "input[1]"
    kept, cut = embed(encoder, fits, "text", truncate=False), embed(encoder, fits, "text")
    assert kept.token_counts == cut.token_counts
    np.testing.assert_array_equal(kept.vectors, cut.vectors)


@pytest.mark.parametrize(
    "inputs, modality, message",
    [
        (["data:image/png;base64,not base64!"], "image", r"input\[0\] is a data: URI whose data is not valid base64"),
        ([bomb_png()], "image", r"input\[0\] is too large to decode"),
        (["https://example.com/cat.png"], "image", r"input\[0\] is a URL"),
        ([b"x", "data:audio/wav;base64,UklGRg=="], "image", r"input\[0\] is not an image"),
        ([list(speech_clips().values())[0]], "image", r"input\[0\] is not an image"),
        ([b"\x89PNG"], "audio", "this model embeds image and text, not audio"),
        ([""], "text", r"input\[0\] is empty or only whitespace"),
        ([[1, 2, 3]], "text", r"input\[0\] is of type list; text inputs are strings"),
        ([], "image", "input must not be empty"),
        ("data:image/png;base64,AAAA", "image", "input must be a list"),
    ],
)
def test_bad_inputs_are_input_errors(family, inputs, modality, message):
    with pytest.raises(InvalidInputError, match=message) as caught:
        family[2].prepare(inputs, modality)
    assert caught.value.http_status == 400


def test_prompts_are_refused_as_the_model_declares_none(family, pngs):
    with pytest.raises(UnprocessableError, match="this model declares no prompts"):
        family[2].prepare(pngs[:1], "image", prompt_name="query")


def test_warmup_embeds_each_modality(family, references):
    """Warming up gives each tower's vector of its synthetic input: the model's own features of it."""
    import torch
    from PIL import Image

    model_type, _, encoder = family
    model, processor, tokenizer = references
    produced = encoder.warmup()
    assert set(produced) == {"image", "text"}
    for vectors in produced.values():
        assert vectors.shape == (1, encoder.dimensions) and np.isfinite(vectors).all()
    image = Image.open(io.BytesIO(warmup_input("image"))).convert("RGB")
    padding = "max_length" if model_type == "siglip" else True
    with torch.inference_mode():
        image_features = model.get_image_features(**processor(images=[image], return_tensors="pt")).pooler_output
        text_features = model.get_text_features(
            **tokenizer([warmup_input("text")], padding=padding, truncation=True, return_tensors="pt")).pooler_output
    assert cosines(produced["image"], image_features.numpy())[0] >= 0.9999
    assert cosines(produced["text"], text_features.numpy())[0] >= 0.9999


# Choosing the encoder from the model directory.


def test_a_text_only_model_refuses_images(tiny_model_path, pngs):
    encoder = load_encoder(ModelConfig(source=tiny_model_path))
    with pytest.raises(InvalidInputError, match="this model embeds text, not image"):
        encoder.prepare([data_uri(pngs[0])], "image")


def test_a_plain_text_transformer_directory_is_served_by_sentence_transformers(tiny_model_path):
    """make_tiny_model saves its BERT and tokenizer in hf/: sentence-transformers wraps it with mean pooling."""
    from pathlib import Path

    from sentence_transformers import SentenceTransformer

    from rayprism.platform.models.text_torch import SentenceTransformerEncoder

    bare = str(Path(tiny_model_path).parent / "hf")
    encoder = load_encoder(ModelConfig(source=bare))
    assert isinstance(encoder, SentenceTransformerEncoder)
    reference = SentenceTransformer(bare, device="cpu").encode(TEXTS)
    assert cosines(embed(encoder, TEXTS).vectors, reference).min() >= 0.99999


def test_a_sentence_transformers_directory_wrapping_clip_is_served_as_clip(media_model_path, tmp_path, pngs):
    clip = media_model_path("clip")
    shutil.copytree(clip, tmp_path / "0_CLIPModel")
    modules = [{"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"},
               {"idx": 1, "name": "1", "path": "1_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    wrapped = load_encoder(ModelConfig(source=str(tmp_path), modality="image"))
    direct = load_encoder(ModelConfig(source=clip, modality="image"))
    assert wrapped.modalities == {"image", "text"}
    inputs = [data_uri(png) for png in pngs]
    assert cosines(embed(wrapped, inputs, "image").vectors, embed(direct, inputs, "image").vectors).min() >= 0.99999

    modules[1] = {"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.models.Dense"}
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ConfigError, match=r"modules after its clip model \(\['sentence_transformers.models.Dense'\]\)"):
        load_encoder(ModelConfig(source=str(tmp_path), modality="image"))


def test_an_unsupported_architecture_is_a_config_error_naming_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit", "architectures": ["ViTModel"]}))
    (tmp_path / "preprocessor_config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"model_type 'vit' \(architectures \['ViTModel'\]\) is not supported.*"
                                          r"clap, clip, hubert, siglip, wav2vec2, whisper"):
        load_encoder(ModelConfig(source=str(tmp_path)))
    (tmp_path / "config.json").unlink()
    with pytest.raises(ConfigError, match="neither modules.json .* nor config.json"):
        load_encoder(ModelConfig(source=str(tmp_path)))


def test_a_modality_the_model_cannot_embed_is_a_config_error(media_model_path):
    with pytest.raises(ConfigError, match="model 'pictures' embeds image and text, not audio"):
        load_encoder(ModelConfig(name="pictures", source=media_model_path("clip"), modality="audio"))
