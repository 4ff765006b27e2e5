"""wav2vec2-family speech encoders (wav2vec2, HuBERT): the mean of the last hidden states over real frames.

The feature extractor normalises each clip on its own in ``prepare``. Forward passes pad clips with
the extractor's padding value; models whose extractor returns an attention mask (layer-norm feature
encoders) ignore the padding, the others (group-norm feature encoders such as wav2vec2-base and
hubert-base, which normalise over time, padding included) only ever batch clips of equal length, so
a clip's vector never depends on its batch.

``n_tokens`` is the clip's encoder frames (one per 20 ms for the usual convolution stack).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rayprism.platform.errors import InvalidInputError
from rayprism.platform.media import decode_audio
from rayprism.platform.models.base import Prepared
from rayprism.platform.models.towers import InputLimits, ModelLocation, TorchRuntime, Tower, TowerEncoder, masked_mean


class Wav2Vec2Tower(Tower[np.ndarray]):
    """Payload: the feature extractor's ``input_values`` for the clip (float32)."""

    def __init__(self, model: Any, extractor: Any, *, max_seconds: float, runtime: TorchRuntime):
        super().__init__(runtime)
        self._model = model
        self._extractor = extractor
        self._max_seconds = max_seconds
        self._masks_padding = bool(extractor.return_attention_mask)
        self._convolutions = list(zip(model.config.conv_kernel, model.config.conv_stride))
        self._min_samples = 1
        for kernel, stride in reversed(self._convolutions):  # the shortest input giving one frame
            self._min_samples = (self._min_samples - 1) * stride + kernel
        self.max_input_tokens = self._frames(int(max_seconds * extractor.sampling_rate))

    def _frames(self, samples: int) -> int:
        """Frames out of the convolutional feature encoder for a clip of ``samples`` samples."""
        for kernel, stride in self._convolutions:
            samples = (samples - kernel) // stride + 1
        return samples

    def prepare(self, index: int, item: Any, *, truncate: bool = True) -> Prepared[np.ndarray]:
        rate = self._extractor.sampling_rate
        samples = decode_audio(item, index, sample_rate=rate, max_seconds=self._max_seconds)
        if samples.size < self._min_samples:
            raise InvalidInputError(f"input[{index}] is {samples.size / rate:.3f} s of audio; this model needs at "
                                    f"least {self._min_samples / rate:.3f} s", param=f"input[{index}]")
        values = self._extractor(samples, sampling_rate=rate, return_tensors="np")["input_values"][0]
        return Prepared(values.astype(np.float32, copy=False), self._frames(values.size))

    def batch_key(self, payload: np.ndarray) -> int:
        return 0 if self._masks_padding else payload.size

    def forward(self, payloads: list[np.ndarray]) -> Any:
        import torch

        lengths = np.array([values.size for values in payloads])
        values = np.full((len(payloads), lengths.max()), self._extractor.padding_value, dtype=np.float32)
        for row, clip in enumerate(payloads):
            values[row, : clip.size] = clip
        inputs = {"input_values": torch.from_numpy(values).to(self._device, self._dtype)}
        if self._masks_padding:
            mask = np.arange(values.shape[1])[None, :] < lengths[:, None]
            inputs["attention_mask"] = torch.from_numpy(mask.astype(np.int64)).to(self._device)
        frames = torch.tensor([self._frames(int(length)) for length in lengths])
        return masked_mean(self._model(**inputs).last_hidden_state, frames)


class Wav2Vec2Encoder(TowerEncoder):
    """A wav2vec2 or HuBERT directory (base model or one with a head): ``modalities`` {"audio"}."""

    def __init__(self, location: ModelLocation, runtime: TorchRuntime, limits: InputLimits):
        from transformers import AutoFeatureExtractor, AutoModel

        model = location.load(AutoModel, dtype=runtime.torch_dtype, trust_remote_code=runtime.trust_remote_code)
        model.to(runtime.device).eval()
        tower = Wav2Vec2Tower(model, location.load(AutoFeatureExtractor), max_seconds=limits.max_audio_seconds,
                              runtime=runtime)
        super().__init__({"audio": tower}, dimensions=model.config.hidden_size, runtime=runtime)
