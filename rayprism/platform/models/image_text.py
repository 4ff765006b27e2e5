"""CLIP-family encoders (CLIP, SigLIP): images and text in one vector space.

Images are preprocessed by the model's own image processor (``AutoImageProcessor``, which resolves
to the PIL backend), text by its own tokenizer; vectors are the towers' projections, what
``get_image_features`` / ``get_text_features`` return.

``n_tokens``: for an image, the vision tower's patch count ((image_size / patch_size)², the same for
every image since the processor resizes to one resolution); for text, its token count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rayprism.platform.media import decode_image
from rayprism.platform.models.base import Prepared
from rayprism.platform.models.text_tower import projected_text_tower
from rayprism.platform.models.towers import InputLimits, ModelLocation, TorchRuntime, Tower, TowerEncoder


class ImageTower(Tower[np.ndarray]):
    """Payload: the image's pixel values, as the model's processor makes them."""

    def __init__(self, embed: Any, processor: Any, *, patches: int, max_pixels: int, runtime: TorchRuntime):
        """``embed(pixel_values=...)`` returns the projected image embeddings."""
        super().__init__(runtime)
        self._embed = embed
        self._processor = processor
        self._max_pixels = max_pixels
        self.max_input_tokens = patches

    def prepare(self, index: int, item: Any, *, truncate: bool = True) -> Prepared[np.ndarray]:
        image = decode_image(item, index, max_pixels=self._max_pixels)
        pixels = self._processor(images=[image], return_tensors="np")["pixel_values"][0]
        return Prepared(pixels, self.max_input_tokens)

    def forward(self, payloads: list[np.ndarray]) -> Any:
        import torch

        pixels = torch.from_numpy(np.stack(payloads)).to(self._device, self._dtype)
        return self._embed(pixel_values=pixels)


class ImageTextEncoder(TowerEncoder):
    """A ``CLIPModel`` or ``SiglipModel`` directory: ``modalities`` {"image", "text"}."""

    def __init__(self, location: ModelLocation, runtime: TorchRuntime, limits: InputLimits):
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        model = location.load(AutoModel, dtype=runtime.torch_dtype, trust_remote_code=runtime.trust_remote_code)
        model.to(runtime.device).eval()
        config = model.config
        image = ImageTower(
            lambda **inputs: model.get_image_features(**inputs).pooler_output,
            location.load(AutoImageProcessor),
            patches=(config.vision_config.image_size // config.vision_config.patch_size) ** 2,
            max_pixels=limits.max_image_pixels,
            runtime=runtime,
        )
        text = projected_text_tower(
            model, location.load(AutoTokenizer, trust_remote_code=runtime.trust_remote_code),
            positions=config.text_config.max_position_embeddings, limits=limits, runtime=runtime,
            # SigLIP was trained on texts padded to full length and pools the last position.
            pad_to_full_length=config.model_type == "siglip",
        )
        # CLIP projects both towers to projection_dim; SigLIP's text head maps to the width both towers share.
        dimensions = config.projection_dim if config.model_type == "clip" else config.text_config.projection_size
        super().__init__({"image": image, "text": text}, dimensions=dimensions, runtime=runtime)
