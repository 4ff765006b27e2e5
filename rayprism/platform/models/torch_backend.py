"""The ``torch`` backend: models loaded with transformers / sentence-transformers and run by torch.

The model directory says which encoder runs it (see :mod:`rayprism.platform.models.architectures`):
text models through sentence-transformers, CLIP/SigLIP, Whisper, wav2vec2/HuBERT and CLAP through
their own encoders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from rayprism.platform.config.base import StrictModel

if TYPE_CHECKING:
    from rayprism.platform.config.models import ModelConfig
    from rayprism.platform.models.architectures import EncoderChoice
    from rayprism.platform.models.base import Encoder, Reranker


class Options(StrictModel):
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Weights and activations; half precision is for GPUs (CPUs run it, slowly)."""
    trust_remote_code: bool = False
    """Let the model directory run its own Python (some LLM-based embedders need it)."""


def load(config: ModelConfig, *, num_cpus: float | None) -> Encoder | Reranker:
    from rayprism.platform.errors import ConfigError
    from rayprism.platform.models.architectures import choose_encoder
    from rayprism.platform.models.source import resolve_source

    if config.kind == "reranker":
        return _load_text(resolve_source(config.source), config, num_cpus)
    choice = choose_encoder(resolve_source(config.source))
    if choice.model_type is None:
        encoder = _load_text(choice.location.source, config, num_cpus)
    else:
        encoder = _load_towers(choice, config, num_cpus)
    if config.modality not in encoder.modalities:
        raise ConfigError(f"model {config.name!r} embeds {' and '.join(sorted(encoder.modalities))}, not "
                          f"{config.modality}: set its modality to one of those")
    return encoder


def _load_text(path: str, config: ModelConfig, num_cpus: float | None) -> Encoder | Reranker:
    """A sentence-transformers directory: a SentenceTransformer, or for a reranker a CrossEncoder."""
    from rayprism.platform.models.cross_encoder import CrossEncoderScorer
    from rayprism.platform.models.text_torch import SentenceTransformerEncoder

    options: Options = config.options
    model_class = CrossEncoderScorer if config.kind == "reranker" else SentenceTransformerEncoder
    return model_class(
        path,
        device=config.device,
        max_input_tokens=config.max_input_tokens,
        forward_batch_size=config.batching.forward_batch_size,
        torch_threads=config.threads(num_cpus),
        dtype=options.dtype,
        trust_remote_code=options.trust_remote_code,
    )


def _load_towers(choice: EncoderChoice, config: ModelConfig, num_cpus: float | None) -> Encoder:
    from rayprism.platform.models.towers import InputLimits, TorchRuntime

    options: Options = config.options
    runtime = TorchRuntime(
        device=config.device,
        dtype=options.dtype,
        forward_batch_size=config.batching.forward_batch_size,
        torch_threads=config.threads(num_cpus),
        trust_remote_code=options.trust_remote_code,
    )
    limits = InputLimits(
        max_input_tokens=config.max_input_tokens,
        max_image_pixels=config.max_image_pixels,
        max_audio_seconds=config.max_audio_seconds,
    )
    return choice.encoder_class()(choice.location, runtime, limits)
