"""Text into model inputs, shared by the text encoders (torch, onnx, vllm) and the cross-encoder: the pre stage's
checks and prompts, a private copy of the fast tokenizer, and padding of one length-sorted forward pass."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from rayprism.platform.errors import InvalidInputError, UnprocessableError
from rayprism.platform.models.base import Modality, Prepared, check_fits, check_prompt_name, to_tokenise


class TextPreStage:
    """``prepare`` and ``warmup`` of a text encoder, the same whatever runs the model: inputs checked, texts
    cut to what is worth tokenising (:func:`~rayprism.platform.models.base.to_tokenise`) and given the model's
    prompt, token ids taken as the model's whole input. A backend tokenises (:meth:`_prepare_texts`) and shapes
    its payloads."""

    modalities = frozenset({"text"})
    max_input_tokens: int
    vocab_size: int
    prompts: dict[str, str]
    _default_prompt_name: str | None

    def encode(self, items: Sequence[Prepared]) -> np.ndarray:
        raise NotImplementedError

    def _prepare_texts(self, texts: list[str], prompt: str | None, truncate: bool) -> list[Prepared]:
        """Tokenise checked ``texts``, which already start with ``prompt`` where there is one; a text over
        ``max_input_tokens`` is cut with ``truncate``, else refused (:func:`encode_texts` does both)."""
        raise NotImplementedError

    def _prepare_token_ids(self, ids: list[int]) -> Prepared:
        """Checked token ids, cut to ``max_input_tokens``."""
        raise NotImplementedError

    def warmup(self) -> None:
        self.encode(self.prepare(["warm up"]))

    def prepare(self, inputs: Sequence[Any], modality: Modality = "text", prompt_name: str | None = None, *,
                truncate: bool = True) -> list[Prepared]:
        if modality not in self.modalities:
            raise InvalidInputError(f"this model embeds text, not {modality}", param="modality")
        if not inputs:
            raise InvalidInputError("input must not be empty", param="input")
        if all(isinstance(item, str) for item in inputs):
            texts = [to_tokenise(_checked_text(index, text), self.max_input_tokens, truncate)
                     for index, text in enumerate(inputs)]
            prompt = self._prompt(prompt_name)
            return self._prepare_texts([prompt + text for text in texts] if prompt else texts, prompt, truncate)
        if all(isinstance(item, list) for item in inputs):
            if prompt_name is not None:
                raise UnprocessableError("prompt_name applies to text; token ids are the model's whole input",
                                         param="prompt_name")
            return [self._prepare_token_ids(self._checked_ids(index, ids, truncate))
                    for index, ids in enumerate(inputs)]
        raise InvalidInputError(
            "input must be a string, a list of strings, a list of token ids or a list of lists of token ids",
            param="input",
        )

    def _prompt(self, prompt_name: str | None) -> str | None:
        """As ``SentenceTransformer.encode``: the named prompt, else the model's default one, if any."""
        if prompt_name is not None:
            return check_prompt_name(self.prompts, prompt_name)
        return self.prompts.get(self._default_prompt_name) if self._default_prompt_name else None

    def _checked_ids(self, index: int, ids: list, truncate: bool) -> list[int]:
        """Token ids are the model's full input, special tokens included (as vLLM takes them)."""
        if not ids:
            raise InvalidInputError(f"input[{index}] is an empty list of token ids", param=f"input[{index}]")
        for token in ids:
            if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < self.vocab_size:
                raise InvalidInputError(
                    f"input[{index}] has token id {token!r}; ids must be integers in [0, {self.vocab_size})",
                    param=f"input[{index}]",
                )
        if not truncate:
            check_fits(f"input[{index}]", len(ids), self.max_input_tokens)
        return ids[: self.max_input_tokens]


def _checked_text(index: int, text: str) -> str:
    if not text.strip():
        raise InvalidInputError(f"input[{index}] is empty or only whitespace", param=f"input[{index}]")
    return text


def encode_texts(tokenizer: Any, texts: list[str], *, max_tokens: int, truncate: bool) -> list[list[int]]:
    """Each text's token ids, by a Rust tokenizer that cuts at ``max_tokens`` (:func:`own_rust_tokenizer`).
    Without ``truncate`` a text it had to cut is refused, its whole length counted from the pieces the cut
    left over (``Encoding.overflowing``), so no text is tokenised twice."""
    encodings = tokenizer.encode_batch(texts)
    if not truncate:
        specials = tokenizer.num_special_tokens_to_add(False)
        for index, encoding in enumerate(encodings):
            if encoding.overflowing:  # each piece repeats the special tokens; truncation has no stride
                whole = len(encoding.ids) + sum(len(piece.ids) - specials for piece in encoding.overflowing)
                check_fits(f"input[{index}]", whole, max_tokens)
    return [encoding.ids for encoding in encodings]


def encode_texts_with_transformers(tokenizer: Any, texts: list[str], *, max_tokens: int, truncate: bool,
                                   first_index: int = 0) -> list[list[int]]:
    """:func:`encode_texts` by a ``transformers`` tokenizer: vLLM's, a text tower's (whose ``texts`` start at
    ``input[first_index]``), or a model's without a Rust tokenizer."""
    if truncate:
        return tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]
    encoded = tokenizer(texts, truncation=False)["input_ids"]
    for index, ids in enumerate(encoded, start=first_index):
        check_fits(f"input[{index}]", len(ids), max_tokens)
    return encoded


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
