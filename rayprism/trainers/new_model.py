"""A CLIP-style model built from scratch (``model.new_image_text``), saved as a sentence-transformers
directory: for image–caption data that no pretrained model covers, such as scikit-learn's digits.

Its tokenizer is a CLIP byte-level BPE trained on the run's captions; its image processor resizes
to ``image_size``. Built once per run in the run's directory, so restarted workers load the same
initial weights and vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rayprism.platform.config import NewImageTextModel


def build_clip(directory: Path, settings: NewImageTextModel, captions: Sequence[str], *, seed: int) -> Path:
    """Write the model to ``directory/model`` (once) and return that path."""
    target = directory / "model"
    if (target / "modules.json").exists():
        return target
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Transformer
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    transformers.utils.logging.disable_progress_bar()  # the driver prints progress lines, not bars
    raw = directory / "clip"
    tokenizer = _clip_tokenizer(captions, settings)
    tower = dict(hidden_size=settings.hidden_size, intermediate_size=settings.hidden_size * 4,
                 num_hidden_layers=settings.layers, num_attention_heads=settings.heads)
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=len(tokenizer), max_position_embeddings=settings.max_text_tokens,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(tower, image_size=settings.image_size, patch_size=settings.patch_size),
        projection_dim=settings.projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    CLIPImageProcessorPil(size={"shortest_edge": settings.image_size},
                       crop_size={"height": settings.image_size, "width": settings.image_size}).save_pretrained(raw)
    SentenceTransformer(modules=[Transformer(str(raw)), Normalize()]).save(str(target))
    return target


def _clip_tokenizer(captions: Sequence[str], settings: NewImageTextModel):
    """CLIP's lower-casing, word-suffixed byte-level BPE over a vocabulary learnt from ``captions``."""
    import json

    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    special = ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    words = pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"),
                                 behavior="removed", invert=True)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([words, pre_tokenizers.ByteLevel(add_prefix_space=False)])
    trainer = trainers.BpeTrainer(vocab_size=settings.vocab_size, special_tokens=special, end_of_word_suffix="</w>",
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(list(captions), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return CLIPTokenizer(vocab=model["vocab"], merges=[tuple(pair) for pair in model["merges"]],
                         model_max_length=settings.max_text_tokens)
