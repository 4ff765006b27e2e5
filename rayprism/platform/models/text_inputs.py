"""Token ids into model inputs, shared by the text encoder and the cross-encoder: a private copy of the
fast tokenizer for the pre stage, and padding of one length-sorted forward pass."""

from __future__ import annotations

from typing import Any

import numpy as np


def own_rust_tokenizer(tokenizer: Any, max_tokens: int) -> Any | None:
    """A private copy of ``tokenizer``'s fast (Rust) tokenizer, configured once to truncate at
    ``max_tokens`` and not to pad; None for a slow tokenizer.

    Calling the Rust tokenizer directly costs a third of the ``transformers`` wrapper per
    request, and a copy nobody reconfigures is safe to share between threads. Pairs are cut
    longest side first, as ``transformers`` cuts them by default.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_padding()
    copy.enable_truncation(max_tokens)
    return copy


def padded(sequences: list[list[int]], pad_id: int, *, pad_left: bool, token_types: bool = False,
           type_ids: list[list[int]] | None = None) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64, one row per sequence, padded to the longest), and with
    ``token_types`` a ``token_type_ids`` array: ``type_ids`` (a pair's segments) where given, else zeros."""
    width = max(len(ids) for ids in sequences)
    input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
    segments = np.zeros((len(sequences), width), dtype=np.int64) if token_types else None
    for row, ids in enumerate(sequences):
        columns = slice(width - len(ids), width) if pad_left else slice(0, len(ids))
        input_ids[row, columns] = ids
        attention_mask[row, columns] = 1
        if segments is not None and type_ids is not None:
            segments[row, columns] = type_ids[row]
    features = {"input_ids": input_ids, "attention_mask": attention_mask}
    if segments is not None:
        features["token_type_ids"] = segments
    return features
