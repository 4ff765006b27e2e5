"""Backends by name, imported only when a model asks for one.

``import rayprism`` stays fast and works without optional backends installed;
a missing backend dependency is reported with the extra to install.
"""

from __future__ import annotations

import importlib

from rayprism.platform.config import ModelConfig
from rayprism.platform.errors import MissingDependencyError
from rayprism.platform.models.base import Encoder
from rayprism.platform.models.source import resolve_source

BACKENDS: dict[str, str] = {
    "torch": "rayprism.platform.models.text_torch:SentenceTransformerEncoder",
}


def load_encoder(config: ModelConfig, *, torch_threads: int | None = None) -> Encoder:
    """Load the model a config names; ``torch_threads`` is the replica's default if the config has none."""
    module_name, _, class_name = BACKENDS[config.backend].partition(":")
    try:
        encoder_class = getattr(importlib.import_module(module_name), class_name)
    except ImportError as error:
        raise MissingDependencyError(
            f"backend {config.backend!r} needs {error.name!r}: pip install 'rayprism[{config.backend}]'"
        ) from error
    return encoder_class(
        resolve_source(config.source),
        device=config.device,
        max_input_tokens=config.max_input_tokens,
        forward_batch_size=config.batching.forward_batch_size,
        torch_threads=config.torch_threads or torch_threads,
    )
