"""The ``torch`` backend: models loaded with transformers / sentence-transformers and run by torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from rayprism.platform.config.base import StrictModel

if TYPE_CHECKING:
    from rayprism.platform.config import ModelConfig
    from rayprism.platform.models.base import Encoder


class Options(StrictModel):
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Weights and activations; half precision is for GPUs (CPUs run it, slowly)."""
    trust_remote_code: bool = False
    """Let the model directory run its own Python (some LLM-based embedders need it)."""


def load(config: ModelConfig, *, num_cpus: float | None) -> Encoder:
    from rayprism.platform.models.source import resolve_source
    from rayprism.platform.models.text_torch import SentenceTransformerEncoder

    options: Options = config.options
    return SentenceTransformerEncoder(
        resolve_source(config.source),
        device=config.device,
        max_input_tokens=config.max_input_tokens,
        forward_batch_size=config.batching.forward_batch_size,
        torch_threads=config.threads(num_cpus),
        dtype=options.dtype,
        trust_remote_code=options.trust_remote_code,
    )
