"""The text tower of a multimodal model (CLIP, SigLIP, CLAP): tokenised in ``prepare``, padded per pass.

``n_tokens`` is the text's token count, special tokens included, after truncation to the tower's limit (or, where
the request refuses truncation, the text refused if it is longer).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from rayprism.platform.errors import InvalidInputError
from rayprism.platform.models.base import Prepared
from rayprism.platform.models.text_inputs import encode_texts_with_transformers
from rayprism.platform.models.towers import InputLimits, TorchRuntime, Tower


class TextTower(Tower[list[int]]):
    """Payload: the text's token ids."""

    def __init__(
        self,
        embed: Callable[..., Any],
        tokenizer: Any,
        *,
        max_tokens: int,
        runtime: TorchRuntime,
        pad_to: int | None = None,
    ):
        """``embed(input_ids=..., attention_mask=...)`` returns the projected text embeddings.

        ``pad_to``: every text is padded to this many tokens, for towers trained that way (SigLIP pools
        the last position, so its padding is part of the input). The attention mask is passed when the
        tokenizer returns one, as the model's processor would.
        """
        super().__init__(runtime)
        self._embed = embed
        self._tokenizer = tokenizer
        self._pad_to = pad_to
        self._with_mask = "attention_mask" in tokenizer.model_input_names
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.max_input_tokens = max_tokens

    def prepare(self, index: int, item: Any, *, truncate: bool = True) -> Prepared[list[int]]:
        if not isinstance(item, str):
            raise InvalidInputError(f"input[{index}] is of type {type(item).__name__}; text inputs are strings",
                                    param=f"input[{index}]")
        if not item.strip():
            raise InvalidInputError(f"input[{index}] is empty or only whitespace", param=f"input[{index}]")
        [ids] = encode_texts_with_transformers(self._tokenizer, [item], max_tokens=self.max_input_tokens,
                                               truncate=truncate, first_index=index)
        return Prepared(ids, len(ids))

    def forward(self, payloads: list[list[int]]) -> Any:
        import torch

        lengths = np.array([len(ids) for ids in payloads])
        width = self._pad_to or lengths.max()
        input_ids = np.full((len(payloads), width), self._pad_id, dtype=np.int64)
        for row, ids in enumerate(payloads):
            input_ids[row, : len(ids)] = ids
        features = {"input_ids": input_ids}
        if self._with_mask:
            features["attention_mask"] = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        return self._embed(**{name: torch.from_numpy(array).to(self._device) for name, array in features.items()})


def projected_text_tower(model: Any, tokenizer: Any, *, positions: int, limits: InputLimits, runtime: TorchRuntime,
                         pad_to_full_length: bool = False) -> TextTower:
    """The text tower of a two-tower model (CLIP, SigLIP, CLAP): ``model.get_text_features``' projection of
    at most ``positions`` tokens (fewer where the config says), padded to that length where asked."""
    return TextTower(
        lambda **inputs: model.get_text_features(**inputs).pooler_output,
        tokenizer,
        max_tokens=text_limit(tokenizer, positions, limits.max_input_tokens),
        runtime=runtime,
        pad_to=text_limit(tokenizer, positions, None) if pad_to_full_length else None,
    )


def text_limit(tokenizer: Any, max_positions: int, configured: int | None) -> int:
    """Tokens a text tower takes: the tokenizer's and the position table's limit, lowered by config."""
    model_limit = min(tokenizer.model_max_length, max_positions)
    return min(configured or model_limit, model_limit)
