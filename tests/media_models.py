"""Tiny image and audio models made from transformers configs, saved with their processors and tokenizers.

Each builder writes a directory that loads through the real ``from_pretrained`` code paths, as a
downloaded checkpoint would; weights are random (seeded). Vocabularies cannot be downloaded, so the
text towers get a small byte-level BPE trained here on the Debian package descriptions in tests/data.
"""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
SPEECH = DATA / "speech"

_TOWER = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2)
_BPE_VOCAB_SIZE = 400


@cache
def _debian_texts() -> tuple[str, ...]:
    lines = (DATA / "debian-sample.jsonl").read_text().splitlines()
    return tuple(json.loads(line)["text"] for line in lines)


def _train_bpe(special_tokens: list[str], *, normalizer=None, pre_tokenizer=None, end_of_word_suffix: str = ""):
    """(vocab, merges) of a byte-level BPE trained on the Debian sample, special tokens first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(end_of_word_suffix=end_of_word_suffix))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE, special_tokens=special_tokens, end_of_word_suffix=end_of_word_suffix,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(_debian_texts(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], [tuple(pair) for pair in model["merges"]]


def clip_tokenizer(model_max_length: int):
    """A ``CLIPTokenizer`` (CLIP's lower-casing, word-suffixed byte-level BPE) over a vocabulary trained here."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers import CLIPTokenizer

    words = pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"),
                                 behavior="removed", invert=True)
    vocab, merges = _train_bpe(
        ["<|startoftext|>", "<|endoftext|>"],
        normalizer=normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()]),
        pre_tokenizer=pre_tokenizers.Sequence([words, pre_tokenizers.ByteLevel(add_prefix_space=False)]),
        end_of_word_suffix="</w>",
    )
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def roberta_tokenizer(model_max_length: int):
    """A ``RobertaTokenizer`` (CLAP's text tower) over a byte-level BPE trained here."""
    from transformers import RobertaTokenizer

    vocab, merges = _train_bpe(["<pad>", "<unk>", "<s>", "</s>", "<mask>"])
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def _text_tower(tokenizer, max_positions: int) -> dict:
    return dict(_TOWER, vocab_size=len(tokenizer), max_position_embeddings=max_positions,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def _save(directory: Path, model, *processors) -> Path:
    model.save_pretrained(directory)
    for processor in processors:
        processor.save_pretrained(directory)
    return directory


def make_clip(directory: Path) -> Path:
    """CLIP: 32×32 images in 8×8 patches, text up to 32 tokens, both projected to 16 dimensions."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    tokenizer = clip_tokenizer(model_max_length=32)
    config = CLIPConfig(
        text_config=_text_tower(tokenizer, 32),
        vision_config=dict(_TOWER, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _save(directory, CLIPModel(config).eval(), processor, tokenizer)


def make_siglip(directory: Path) -> Path:
    """SigLIP: 32×32 images, texts padded to 16 tokens (SigLIP pools the last position); 32 dimensions."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    tokenizer = clip_tokenizer(model_max_length=16)
    config = SiglipConfig(
        text_config=_text_tower(tokenizer, 16),
        vision_config=dict(_TOWER, image_size=32, patch_size=8),
    )
    torch.manual_seed(0)
    processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    return _save(directory, SiglipModel(config).eval(), processor, tokenizer)


def make_whisper(directory: Path, *, width: int = 32, layers: int = 2, heads: int = 2, ffn: int = 48) -> Path:
    """Whisper's encoder at real geometry (80 mel bins, 30 s windows → 1500 frames), by default 32 wide and
    2 layers (bench/multimodal.py builds Whisper-base's 512 × 6 with the same code); a 1-layer decoder."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    config = WhisperConfig(
        vocab_size=64, d_model=width, encoder_layers=layers, decoder_layers=1, encoder_attention_heads=heads,
        decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1,
    )
    torch.manual_seed(0)
    return _save(directory, WhisperModel(config).eval(), WhisperFeatureExtractor(feature_size=80))


def make_wav2vec2(directory: Path, *, model_type: str = "wav2vec2") -> Path:
    """wav2vec2 (layer-norm feature encoder, extractor returns an attention mask, as the "lv60" models) or
    HuBERT (group-norm feature encoder, no attention mask, as hubert-base). Real conv strides: 20 ms frames."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    shape = dict(_TOWER, conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    if model_type == "wav2vec2":
        model = Wav2Vec2Model(Wav2Vec2Config(**shape, feat_extract_norm="layer", do_stable_layer_norm=True))
        extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True)
    elif model_type == "hubert":
        model = HubertModel(HubertConfig(**shape, feat_extract_norm="group"))
        extractor = Wav2Vec2FeatureExtractor(return_attention_mask=False, do_normalize=False)
    else:
        raise ValueError(f"model_type must be 'wav2vec2' or 'hubert', not {model_type!r}")
    return _save(directory, model.eval(), extractor)


def make_clap(directory: Path) -> Path:
    """CLAP: a two-stage HTSAT audio tower on 4 s windows of 48 kHz, 32-bin mel (LAION's take 10 s of 64 bins:
    smaller here to keep tests fast), a RoBERTa text tower, 16 dimensions."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    tokenizer = roberta_tokenizer(model_max_length=32)
    text = _text_tower(tokenizer, 32 + 2)  # RoBERTa positions start after the padding index
    config = ClapConfig(
        text_config=dict(text, type_vocab_size=1),
        # spec_size × (spec_size / mel bins) must hold the window's 401 frames: 128 × 4 = 512.
        audio_config=dict(depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32,
                          window_size=8, spec_size=128, num_mel_bins=32, enable_fusion=False),
        projection_dim=16,
    )
    torch.manual_seed(0)
    extractor = ClapFeatureExtractor(feature_size=32, max_length_s=4, truncation="rand_trunc", padding="repeatpad")
    return _save(directory, ClapModel(config).eval(), extractor, tokenizer)


BUILDERS = {
    "clip": make_clip,
    "siglip": make_siglip,
    "whisper": make_whisper,
    "wav2vec2": make_wav2vec2,
    "hubert": lambda directory: make_wav2vec2(directory, model_type="hubert"),
    "clap": make_clap,
}


# Inputs made on this machine: handwritten digits from scikit-learn, the committed speech clips.


def digit_pngs(count: int, size: int = 32) -> list[bytes]:
    """scikit-learn's 8×8 handwritten digits, upscaled to ``size``×``size`` greyscale PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images[:count]
    return [png_bytes(Image.fromarray((image * 255 / 16).astype(np.uint8), "L").resize((size, size), Image.NEAREST))
            for image in images]


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def wav_bytes(samples: np.ndarray, sample_rate: int, *, subtype: str = "PCM_16", format: str = "WAV") -> bytes:
    """``samples``, shape (frames,) or (frames, channels), encoded as a sound file."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sample_rate, subtype=subtype, format=format)
    return buffer.getvalue()


def speech_clips() -> dict[str, bytes]:
    """The committed clips by file name: wav, flac and ogg, 16 kHz mono."""
    return {path.name: path.read_bytes() for path in sorted(SPEECH.iterdir()) if path.suffix != ".md"}


def read_clip(name: str) -> tuple[np.ndarray, int]:
    import soundfile

    samples, sample_rate = soundfile.read(SPEECH / name, dtype="float32")
    return samples, sample_rate


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 45-byte PNG whose header declares ``width``×``height`` RGB pixels and that holds no pixel data:
    a decoder that trusts the header before checking it would allocate tens of gigabytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
