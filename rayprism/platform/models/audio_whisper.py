"""Whisper-family speech encoder: the mean of Whisper's encoder states over the frames of real audio.

Whisper's encoder always takes a 30 s window of log-mel (3000 feature frames → 1500 encoder frames),
padded with silence. Averaging all 1500 frames would make a clip's vector depend mostly on the
padding, so:

* digital silence is trimmed from both ends of the waveform first (samples whose magnitude is at most
  :data:`SILENCE_THRESHOLD`), so a clip with silence added before or after it is the same input;
* the encoder states are averaged over the frames that cover the trimmed audio only,
  ``ceil(samples / hop_length / 2)`` (the encoder's second convolution halves the frame rate).

``n_tokens`` is the encoder frames one window costs (1500 for Whisper's 30 s): every clip runs the
full window whatever its length, and that is what a forward pass spends.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from rayprism.platform.errors import InvalidInputError
from rayprism.platform.media import decode_audio
from rayprism.platform.models.base import Prepared
from rayprism.platform.models.towers import InputLimits, ModelLocation, TorchRuntime, Tower, TowerEncoder, masked_mean

SILENCE_THRESHOLD = 1e-4
"""-80 dBFS: three steps of 16-bit audio, so dithered digital silence is trimmed too; speech is far louder."""


def trim_silence(samples: np.ndarray, threshold: float = SILENCE_THRESHOLD) -> np.ndarray:
    """``samples`` without the runs at either end whose magnitude is at most ``threshold``."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples[:0]


class WhisperFeatures(NamedTuple):
    """A clip as Whisper's encoder takes it."""

    features: np.ndarray
    """The feature extractor's log-mel ``input_features``, the clip padded to Whisper's window."""
    frames: int
    """Encoder frames the clip fills: the mean pools these, not the padding's."""


class WhisperTower(Tower[WhisperFeatures]):
    def __init__(self, encoder: Any, extractor: Any, *, max_seconds: float, runtime: TorchRuntime):
        super().__init__(runtime)
        self._encoder = encoder
        self._extractor = extractor
        self.max_input_tokens = encoder.config.max_source_positions
        self._samples_per_frame = extractor.hop_length * extractor.nb_max_frames // self.max_input_tokens
        window_seconds = extractor.n_samples / extractor.sampling_rate
        self._max_seconds = min(max_seconds, window_seconds)

    def prepare(self, index: int, item: Any, *, truncate: bool = True) -> Prepared[WhisperFeatures]:
        rate = self._extractor.sampling_rate
        samples = trim_silence(decode_audio(item, index, sample_rate=rate, max_seconds=self._max_seconds))
        if not samples.size:
            raise InvalidInputError(f"input[{index}] is silent: no sample above {SILENCE_THRESHOLD:g} in magnitude",
                                    param=f"input[{index}]")
        features = self._extractor(samples, sampling_rate=rate, return_tensors="np")["input_features"][0]
        frames = min(math.ceil(samples.size / self._samples_per_frame), self.max_input_tokens)
        return Prepared(WhisperFeatures(features, frames), self.max_input_tokens)

    def forward(self, payloads: list[WhisperFeatures]) -> Any:
        import torch

        features = torch.from_numpy(np.stack([clip.features for clip in payloads])).to(self._device, self._dtype)
        frames = torch.tensor([clip.frames for clip in payloads])
        return masked_mean(self._encoder(input_features=features).last_hidden_state, frames)


class WhisperEncoder(TowerEncoder):
    """A Whisper directory (``WhisperModel`` or ``WhisperForConditionalGeneration``): ``modalities`` {"audio"}."""

    def __init__(self, location: ModelLocation, runtime: TorchRuntime, limits: InputLimits):
        from transformers import WhisperFeatureExtractor, WhisperModel

        # The decoder is loaded with the checkpoint and dropped: only the encoder is kept.
        encoder = location.load(WhisperModel, dtype=runtime.torch_dtype).get_encoder()
        encoder.to(runtime.device).eval()
        tower = WhisperTower(encoder, location.load(WhisperFeatureExtractor), max_seconds=limits.max_audio_seconds,
                             runtime=runtime)
        super().__init__({"audio": tower}, dimensions=encoder.config.d_model, runtime=runtime)
