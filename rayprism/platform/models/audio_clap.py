"""CLAP encoders: audio and text in one vector space (``get_audio_features`` / ``get_text_features``).

CLAP's feature extractor fits every clip to one window (10 s for the LAION checkpoints) by repeating
short clips; longer clips it would crop at random, so they are refused instead: a vector must not
depend on chance. Each clip is featurised alone, since a batched call marks a random clip "longer"
when none is.

``n_tokens``: for audio, the patches the HTSAT audio tower sees ((spec_size / patch_size)², the same
for every clip); for text, its token count.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from rayprism.platform.media import decode_audio
from rayprism.platform.models.base import Prepared
from rayprism.platform.models.text_tower import projected_text_tower
from rayprism.platform.models.towers import InputLimits, ModelLocation, TorchRuntime, Tower, TowerEncoder

_ROBERTA_POSITION_OFFSET = 2
"""CLAP's RoBERTa text tower numbers positions after the padding index: two table rows are not positions."""


class ClapFeatures(NamedTuple):
    """A clip as CLAP's audio tower takes it."""

    features: np.ndarray
    """The feature extractor's ``input_features`` for the clip."""
    is_longer: bool
    """The extractor's ``is_longer``: the clip outlasts the tower's window."""


class ClapAudioTower(Tower[ClapFeatures]):
    def __init__(self, embed: Any, extractor: Any, *, patches: int, max_seconds: float, runtime: TorchRuntime):
        """``embed(input_features=..., is_longer=...)`` returns the projected audio embeddings."""
        super().__init__(runtime)
        self._embed = embed
        self._extractor = extractor
        self._max_seconds = min(max_seconds, extractor.nb_max_samples / extractor.sampling_rate)
        self.max_input_tokens = patches

    def prepare(self, index: int, item: Any, *, truncate: bool = True) -> Prepared[ClapFeatures]:
        rate = self._extractor.sampling_rate
        samples = decode_audio(item, index, sample_rate=rate, max_seconds=self._max_seconds)
        features = self._extractor(samples, sampling_rate=rate, return_tensors="np")
        return Prepared(ClapFeatures(features["input_features"][0], bool(features["is_longer"][0][0])),
                        self.max_input_tokens)

    def forward(self, payloads: list[ClapFeatures]) -> Any:
        import torch

        features = torch.from_numpy(np.stack([clip.features for clip in payloads])).to(self._device, self._dtype)
        is_longer = torch.tensor([[clip.is_longer] for clip in payloads], device=self._device)
        return self._embed(input_features=features, is_longer=is_longer)


class ClapEncoder(TowerEncoder):
    """A ``ClapModel`` directory: ``modalities`` {"audio", "text"}."""

    def __init__(self, location: ModelLocation, runtime: TorchRuntime, limits: InputLimits):
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        model = location.load(ClapModel, dtype=runtime.torch_dtype)
        model.to(runtime.device).eval()
        config = model.config
        audio = ClapAudioTower(
            lambda **inputs: model.get_audio_features(**inputs).pooler_output,
            location.load(ClapFeatureExtractor),
            patches=(config.audio_config.spec_size // config.audio_config.patch_size) ** 2,
            max_seconds=limits.max_audio_seconds,
            runtime=runtime,
        )
        positions = config.text_config.max_position_embeddings - _ROBERTA_POSITION_OFFSET
        text = projected_text_tower(model, location.load(AutoTokenizer), positions=positions, limits=limits,
                                    runtime=runtime)
        super().__init__({"audio": audio, "text": text}, dimensions=config.projection_dim, runtime=runtime)
