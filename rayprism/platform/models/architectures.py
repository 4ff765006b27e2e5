"""Which encoder a model needs, read from the model directory itself (``backend: torch``).

* A sentence-transformers directory (``modules.json``) is served by sentence-transformers, unless its
  first module wraps an image or audio model (sentence-transformers' CLIP directories): then that
  module's folder is served by the model's own encoder.
* Otherwise ``config.json``'s ``model_type`` picks the encoder; a text transformer (a tokenizer and no
  image or audio processor) is served by sentence-transformers, which adds mean pooling.

Only small JSON files are read here (for a hub id, through the hub's cache); encoder modules are
imported when chosen.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass

from rayprism.platform.errors import ConfigError
from rayprism.platform.models.towers import ModelLocation

ENCODERS: dict[str, str] = {
    "clip": "rayprism.platform.models.image_text:ImageTextEncoder",
    "siglip": "rayprism.platform.models.image_text:ImageTextEncoder",
    "whisper": "rayprism.platform.models.audio_whisper:WhisperEncoder",
    "wav2vec2": "rayprism.platform.models.audio_wav2vec:Wav2Vec2Encoder",
    "hubert": "rayprism.platform.models.audio_wav2vec:Wav2Vec2Encoder",
    "clap": "rayprism.platform.models.audio_clap:ClapEncoder",
}
"""Encoder classes by transformers ``model_type``, as ``module:Class``."""

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


@dataclass(frozen=True, slots=True)
class EncoderChoice:
    location: ModelLocation
    model_type: str | None
    """A key of :data:`ENCODERS`, or None for a text model served by sentence-transformers."""

    def encoder_class(self) -> type:
        module, _, name = ENCODERS[self.model_type].partition(":")
        return getattr(importlib.import_module(module), name)


def choose_encoder(source: str) -> EncoderChoice:
    """The encoder for a resolved model ``source`` (a local directory or a hub id)."""
    modules = _read_json(source, "modules.json")
    if modules is not None:
        return _choose_for_sentence_transformers(source, modules)
    config = _read_json(source, "config.json")
    if config is None:
        raise ConfigError(f"model source {source!r} has neither modules.json (sentence-transformers) nor config.json "
                          "(transformers); a hub id must be in the local hub cache when HF_HUB_OFFLINE is set")
    model_type = config.get("model_type")
    if model_type in ENCODERS:
        return EncoderChoice(ModelLocation(source), model_type)
    if _has_any(source, _TOKENIZER_FILES) and not _has_any(source, _PROCESSOR_FILES):
        return EncoderChoice(ModelLocation(source), None)
    raise ConfigError(
        f"model source {source!r}: model_type {model_type!r} (architectures {config.get('architectures')}) is not "
        f"supported by the torch backend, which serves sentence-transformers and text transformer directories and "
        f"these model types: {', '.join(sorted(ENCODERS))}"
    )


def _choose_for_sentence_transformers(source: str, modules: list[dict]) -> EncoderChoice:
    first = modules[0] if modules else {}
    subfolder = first.get("path", "")
    config = _read_json(source, "config.json", subfolder) or {}
    model_type = config.get("model_type")
    if model_type not in ENCODERS:
        return EncoderChoice(ModelLocation(source), None)
    # Normalize is saved as "...models.Normalize" or "...modules.normalize": we normalise anyway.
    extra = [module.get("type") for module in modules[1:]
             if str(module.get("type")).rsplit(".", 1)[-1].lower() != "normalize"]
    if extra:
        raise ConfigError(f"model source {source!r}: modules after its {model_type} model ({extra}) are not supported; "
                          f"rayprism serves {model_type} with its own projection, L2-normalised")
    return EncoderChoice(ModelLocation(source, subfolder), model_type)


def _read_json(source: str, name: str, subfolder: str = "") -> dict | list | None:
    path = _locate(source, name, subfolder)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise ConfigError(f"model source {source!r}: cannot read {name}: {error}") from error


def _has_any(source: str, names: tuple[str, ...]) -> bool:
    return any(_locate(source, name) is not None for name in names)


def _locate(source: str, name: str, subfolder: str = "") -> str | None:
    """The local path of a model file (from the hub's cache for a hub id), or None if the model has none."""
    from transformers.utils import cached_file

    return cached_file(source, name, subfolder=subfolder, _raise_exceptions_for_missing_entries=False)
