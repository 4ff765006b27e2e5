"""Encoders built from towers: one model, one vector space, one tower per modality it embeds.

CLIP has an image tower and a text tower, CLAP an audio and a text tower, Whisper a single audio
tower. A :class:`Tower` owns its modality's pre stage (decode, preprocess with the model's own
processor, cost) and its forward pass; :class:`TowerEncoder` owns what they share: argument
checks, cost-sorted forward passes of ``forward_batch_size`` (a batch gathered from many requests
may mix modalities: each pass holds one), torch threads, L2 normalisation and warm-up.

Vectors are always L2-normalised: towers of one model then compare by dot product, as the text
models served beside them do.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, Mapping, Sequence

import numpy as np

from rayprism.platform.errors import InvalidInputError
from rayprism.platform.models.base import Modality, P, Prepared, check_prompt_name
from rayprism.platform.models.torch_inference import inference


@dataclass(frozen=True, slots=True)
class TorchRuntime:
    """Where and how forward passes run: the torch backend's settings shared by every encoder."""

    device: str
    dtype: str
    forward_batch_size: int
    torch_threads: int | None
    trust_remote_code: bool

    @property
    def torch_dtype(self) -> Any:
        """``dtype`` as the torch dtype models are loaded and run in."""
        import torch

        return getattr(torch, self.dtype)


@dataclass(frozen=True, slots=True)
class InputLimits:
    """What one input may be, from the model's config; towers also apply the model's own limits."""

    max_input_tokens: int | None
    max_image_pixels: int
    max_audio_seconds: float


@dataclass(frozen=True, slots=True)
class ModelLocation:
    """A model directory or hub id, and the folder inside it that holds the transformers model
    (a sentence-transformers directory keeps it in its first module's folder)."""

    source: str
    subfolder: str = ""

    def load(self, loader: Any, **kwargs: Any) -> Any:
        """``loader.from_pretrained`` on this location: models, processors and tokenizers alike."""
        return loader.from_pretrained(self.source, subfolder=self.subfolder, **kwargs)


class Tower(Generic[P]):
    """One modality of a model: its pre stage (``prepare``) and its forward pass (``forward``), run where
    and in the precision its runtime says. ``P`` is its payload: what the one becomes and the other takes."""

    max_input_tokens: int
    """The largest cost (``Prepared.n_tokens``) one input can have."""

    def __init__(self, runtime: TorchRuntime):
        self._device = runtime.device
        self._dtype = runtime.torch_dtype

    def prepare(self, index: int, item: Any, *, truncate: bool = True) -> Prepared[P]:
        """Decode and preprocess ``inputs[index]``; raise InvalidInputError naming it if it is bad. ``truncate``
        is for text (a text over ``max_input_tokens`` cut, else refused): media over a tower's limits is refused."""
        raise NotImplementedError

    def forward(self, payloads: list[P]) -> Any:
        """Embeddings (a torch tensor, one row per payload) for payloads of one forward pass."""
        raise NotImplementedError

    def batch_key(self, payload: P) -> int:
        """Payloads with different keys never share a forward pass (for models that cannot mask padding)."""
        return 0


@dataclass(frozen=True, slots=True)
class _Routed:
    """A tower encoder's payload: its tower's, with the modality that picks the tower."""

    modality: str
    data: Any


class TowerEncoder:
    """An :class:`~rayprism.platform.models.base.Encoder` over towers that share one vector space."""

    prompts: Mapping[str, str] = MappingProxyType({})

    def __init__(self, towers: Mapping[str, Tower], *, dimensions: int, runtime: TorchRuntime):
        import torch

        self._torch = torch
        self._towers = dict(towers)
        self._runtime = runtime
        self.modalities = frozenset(self._towers)
        self.dimensions = dimensions
        self.max_input_tokens = max(tower.max_input_tokens for tower in self._towers.values())

    def prepare(self, inputs: Sequence[Any], modality: Modality = "text", prompt_name: str | None = None, *,
                truncate: bool = True) -> list[Prepared[_Routed]]:
        tower = self._towers.get(modality)
        if tower is None:
            raise InvalidInputError(f"this model embeds {' and '.join(sorted(self.modalities))}, not {modality}",
                                    param="modality")
        if prompt_name is not None:
            check_prompt_name(self.prompts, prompt_name)
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise InvalidInputError(f"input must be a list of {modality} inputs", param="input")
        if not inputs:
            raise InvalidInputError("input must not be empty", param="input")
        prepared = (tower.prepare(index, item, truncate=truncate) for index, item in enumerate(inputs))
        return [Prepared(_Routed(modality, item.payload), item.n_tokens) for item in prepared]

    def encode(self, items: Sequence[Prepared[_Routed]]) -> np.ndarray:
        vectors = np.empty((len(items), self.dimensions), dtype=np.float32)
        with inference(self._torch, self._runtime.torch_threads):
            for group in self._forward_groups(items):
                modality = items[group[0]].payload.modality
                output = self._towers[modality].forward([items[i].payload.data for i in group])
                output = self._torch.nn.functional.normalize(output.float(), dim=-1)
                vectors[group] = output.cpu().numpy()
        return vectors

    def _forward_groups(self, items: Sequence[Prepared[_Routed]]) -> list[list[int]]:
        """Indices of each forward pass: one modality and batch key per pass, costliest first."""

        def key(i: int) -> tuple:
            routed = items[i].payload
            return routed.modality, self._towers[routed.modality].batch_key(routed.data)

        groups: list[list[int]] = []
        for index in sorted(range(len(items)), key=lambda i: (key(i), -items[i].n_tokens)):
            if not groups or len(groups[-1]) == self._runtime.forward_batch_size or key(groups[-1][0]) != key(index):
                groups.append([index])
            else:
                groups[-1].append(index)
        return groups

    def warmup(self) -> dict[str, np.ndarray]:
        """One small synthetic input per modality (:func:`warmup_input`) through every stage; returns each
        modality's vector (float32[1, dimensions]), so what warming up produced can be checked."""
        return {modality: self.encode(self.prepare([warmup_input(modality)], modality))
                for modality in sorted(self.modalities)}


def warmup_input(modality: str) -> Any:
    """The input :meth:`TowerEncoder.warmup` embeds: an 8×8 PNG, 0.5 s of a 440 Hz tone (16 kHz WAV), a word."""
    if modality == "text":
        return "warm up"
    if modality == "image":
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (128, 64, 32)).save(buffer, format="PNG")
        return buffer.getvalue()
    import soundfile

    rate = 16_000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate // 2) / rate)
    buffer = io.BytesIO()
    soundfile.write(buffer, tone, rate, format="WAV")
    return buffer.getvalue()


def masked_mean(hidden: Any, lengths: Any) -> Any:
    """Mean over the first ``lengths[i]`` frames of each row of ``hidden`` (batch, frames, width)."""
    import torch

    frames = torch.arange(hidden.shape[1], device=hidden.device)
    mask = (frames[None, :] < lengths.to(hidden.device)[:, None]).to(hidden.dtype)
    return (hidden * mask[:, :, None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)
