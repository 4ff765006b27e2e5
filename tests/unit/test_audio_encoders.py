"""Speech and audio encoders (Whisper, wav2vec2, HuBERT, CLAP) against plain transformers, on real speech clips."""

import io
import math

import numpy as np
import pytest

from rayprism.platform.config import ModelConfig
from rayprism.platform.errors import InvalidInputError
from rayprism.platform.models.registry import load_encoder
from rayprism.platform.models.towers import warmup_input
from tests.conftest import cosines, embed
from tests.media_models import digit_pngs, read_clip, speech_clips, wav_bytes

FAMILIES = ["whisper", "wav2vec2", "hubert", "clap"]
CLIPS = speech_clips()
FORMATS = ["hello_world.wav", "good_morning.flac", "thank_you.ogg"]
SILENCE_THRESHOLD = 1e-4  # Whisper's documented trimming rule: samples of at most -80 dBFS at either end


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, media_model_path):
    """(model_type, directory, encoder), with forward passes of 2 so that batches split."""
    path = media_model_path(request.param)
    config = ModelConfig(name=request.param, source=path, modality="audio", batching={"forward_batch_size": 2})
    return request.param, path, load_encoder(config)


def reference(model_type: str, path: str):
    """A function giving the embedding plain transformers computes for one 16 kHz clip, as each family documents it."""
    import soxr
    import transformers

    if model_type == "whisper":
        extractor = transformers.WhisperFeatureExtractor.from_pretrained(path)
        encoder = transformers.WhisperModel.from_pretrained(path).encoder.eval()

        def whisper(samples):
            loud = np.flatnonzero(np.abs(samples) > SILENCE_THRESHOLD)
            trimmed = samples[loud[0] : loud[-1] + 1]
            features = extractor(trimmed, sampling_rate=16_000, return_tensors="pt")["input_features"]
            hidden = encoder(features).last_hidden_state[0]
            return hidden[: math.ceil(len(trimmed) / 320)].mean(dim=0)  # 10 ms hop, halved by the encoder

        return whisper
    if model_type == "clap":
        extractor = transformers.ClapFeatureExtractor.from_pretrained(path)
        clap = transformers.ClapModel.from_pretrained(path).eval()

        def clap_audio(samples):
            features = extractor(soxr.resample(samples, 16_000, 48_000), sampling_rate=48_000, return_tensors="pt")
            return clap.get_audio_features(**features).pooler_output[0]

        return clap_audio
    extractor = transformers.AutoFeatureExtractor.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    return lambda samples: model(**extractor(samples, sampling_rate=16_000, return_tensors="pt")
                                 ).last_hidden_state[0].mean(dim=0)


def test_vectors_are_the_plain_transformers_computation(family):
    import torch

    model_type, path, encoder = family
    result = embed(encoder, [CLIPS[name] for name in FORMATS], "audio")
    assert result.vectors.dtype == np.float32 and result.vectors.shape == (len(FORMATS), encoder.dimensions)
    vector_of = reference(model_type, path)
    with torch.inference_mode():
        expected = np.vstack([vector_of(read_clip(name)[0]).numpy() for name in FORMATS])
    assert cosines(result.vectors, expected).min() >= 0.9999


def test_a_clip_gets_the_same_vector_alone_or_in_any_batch(family):
    encoder = family[2]
    clips = [CLIPS[name] for name in ("seven.wav", "open_the_door.wav", "seven.wav")]
    together = embed(encoder, clips, "audio").vectors
    alone = np.vstack([embed(encoder, [clip], "audio").vectors for clip in clips[:2]])
    assert cosines(together, alone[[0, 1, 0]]).min() >= 0.99999


def test_a_44khz_stereo_copy_gets_nearly_the_same_vector(family):
    import soxr

    encoder = family[2]
    samples, rate = read_clip("hello_world.wav")
    upsampled = soxr.resample(samples, rate, 44_100)
    stereo = wav_bytes(np.stack([upsampled, upsampled], axis=1), 44_100)
    vectors = embed(encoder, [CLIPS["hello_world.wav"], stereo], "audio").vectors
    assert cosines(vectors[:1], vectors[1:])[0] >= 0.99


def test_warmup_embeds_each_modality(family):
    """Warming up gives each tower's vector of its synthetic input: what plain transformers computes for it."""
    import soundfile
    import torch

    model_type, path, encoder = family
    produced = encoder.warmup()
    assert set(produced) == encoder.modalities
    for vectors in produced.values():
        assert vectors.shape == (1, encoder.dimensions) and np.isfinite(vectors).all()
    samples, rate = soundfile.read(io.BytesIO(warmup_input("audio")), dtype="float32")
    assert rate == 16_000
    with torch.inference_mode():
        expected = reference(model_type, path)(samples).numpy()[None]
    assert cosines(produced["audio"], expected)[0] >= 0.9999
    if model_type == "clap":
        import transformers

        clap = transformers.ClapModel.from_pretrained(path).eval()
        tokens = transformers.AutoTokenizer.from_pretrained(path)([warmup_input("text")], return_tensors="pt")
        with torch.inference_mode():
            text = clap.get_text_features(**tokens).pooler_output.numpy()
        assert cosines(produced["text"], text)[0] >= 0.9999


def test_whisper_ignores_silence_added_before_and_after_a_clip(media_model_path):
    encoder = load_encoder(ModelConfig(source=media_model_path("whisper"), modality="audio"))
    samples, rate = read_clip("hello_world.wav")
    padded = wav_bytes(np.concatenate([np.zeros(rate), samples, np.zeros(3 * rate)]), rate)
    tone = 0.05 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)
    toned = wav_bytes(np.concatenate([samples, tone]), rate)
    result = embed(encoder, [CLIPS["hello_world.wav"], padded, toned], "audio")
    assert result.token_counts == [1500] * 3  # each runs one 30 s window
    assert cosines(result.vectors[:1], result.vectors[1:2])[0] >= 0.99999
    assert cosines(result.vectors[:1], result.vectors[2:])[0] < 0.999  # sound, unlike silence, counts


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert"])
def test_wav2vec_tokens_are_the_models_output_frames(media_model_path, model_type):
    import torch
    from transformers import AutoModel

    path = media_model_path(model_type)
    encoder = load_encoder(ModelConfig(source=path, modality="audio"))
    lengths = [len(read_clip(name)[0]) for name in FORMATS]
    expected = AutoModel.from_pretrained(path)._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
    assert [item.n_tokens for item in encoder.prepare([CLIPS[name] for name in FORMATS], "audio")] == expected
    assert encoder.max_input_tokens == 1499  # 30 s at one frame per 20 ms, less the convolutions' edges


def test_clap_embeds_text_in_the_audio_space(media_model_path):
    import torch
    from transformers import AutoTokenizer, ClapModel

    path = media_model_path("clap")
    encoder = load_encoder(ModelConfig(source=path, modality="audio"))
    assert encoder.modalities == {"audio", "text"}
    texts = ["a person says hello", "a dog barks in the distance"]
    tokens = AutoTokenizer.from_pretrained(path)(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = ClapModel.from_pretrained(path).get_text_features(**tokens).pooler_output.numpy()
    result = embed(encoder, texts, "text")
    assert result.vectors.shape == (2, encoder.dimensions)
    assert cosines(result.vectors, expected).min() >= 0.9999
    assert result.token_counts == tokens["attention_mask"].sum(dim=1).tolist()
    assert [item.n_tokens for item in encoder.prepare([CLIPS["seven.wav"]], "audio")] == [(128 // 4) ** 2]


@pytest.mark.parametrize(
    "model_type, max_audio_seconds, seconds, message",
    [
        ("whisper", 1, 1.3, r"input\[1\] is 1\.3 s of audio; this model accepts at most 1 s"),
        ("wav2vec2", 1, 1.3, "at most 1 s"),
        ("whisper", 60, 31, "is 31.0 s of audio; this model accepts at most 30 s"),  # Whisper's window
        ("clap", 30, 5, "is 5.0 s of audio; this model accepts at most 4 s"),  # this CLAP's window
    ],
)
def test_audio_longer_than_the_limit_is_refused(media_model_path, model_type, max_audio_seconds, seconds, message):
    encoder = load_encoder(ModelConfig(source=media_model_path(model_type), modality="audio",
                                       max_audio_seconds=max_audio_seconds))
    samples, rate = read_clip("hello_world.wav")
    clip = np.resize(samples, round(seconds * rate))
    with pytest.raises(InvalidInputError, match=message) as caught:
        encoder.prepare([CLIPS["seven.wav"], wav_bytes(clip, rate)], "audio")
    assert caught.value.param == "input[1]"


@pytest.mark.parametrize(
    "model_type, inputs, modality, message",
    [
        ("whisper", [wav_bytes(np.zeros(8000), 16_000)], "audio", r"input\[0\] is silent"),
        ("wav2vec2", [CLIPS["seven.wav"], wav_bytes(np.ones(100) / 2, 16_000)], "audio",
         r"input\[1\] is 0\.006 s of audio; this model needs at least 0\.025 s"),
        ("whisper", ["hello"], "text", "this model embeds audio, not text"),
        ("hubert", [digit_pngs(1)[0]], "image", "this model embeds audio, not image"),
        ("clap", [digit_pngs(1)[0]], "image", "this model embeds audio and text, not image"),
        ("clap", [digit_pngs(1)[0]], "audio", r"input\[0\] could not be decoded as audio"),
        ("whisper", ["https://example.com/hello.wav"], "audio", r"input\[0\] is a URL"),
        ("wav2vec2", ["data:audio/wav;base64,%%%"], "audio", "not valid base64"),
    ],
)
def test_bad_inputs_are_input_errors(media_model_path, model_type, inputs, modality, message):
    encoder = load_encoder(ModelConfig(source=media_model_path(model_type), modality="audio"))
    with pytest.raises(InvalidInputError, match=message) as caught:
        encoder.prepare(inputs, modality)
    assert caught.value.http_status == 400


@pytest.mark.parametrize("model_type, head", [("whisper", "WhisperForConditionalGeneration"),
                                              ("wav2vec2", "Wav2Vec2ForCTC")])
def test_a_checkpoint_with_a_head_serves_its_base_model(media_model_path, tmp_path, model_type, head):
    """Published Whisper and wav2vec2 checkpoints carry a decoder or CTC head: the encoder uses the base model."""
    import transformers

    base = media_model_path(model_type)
    getattr(transformers, head).from_pretrained(base).save_pretrained(tmp_path)
    transformers.AutoFeatureExtractor.from_pretrained(base).save_pretrained(tmp_path)
    clips = [CLIPS["seven.wav"]]
    with_head = embed(load_encoder(ModelConfig(source=str(tmp_path), modality="audio")), clips, "audio").vectors
    bare = embed(load_encoder(ModelConfig(source=base, modality="audio")), clips, "audio").vectors
    assert cosines(with_head, bare)[0] >= 0.99999
