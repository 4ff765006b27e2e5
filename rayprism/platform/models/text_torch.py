"""Text encoder on sentence-transformers + torch.

The model's own module stack (pooling, dense layers, normalisation) runs as
saved, so vectors match ``SentenceTransformer(path).encode``, prompts included.
What differs is scheduling: tokenisation happens once per request in ``prepare``
(giving exact token counts for batching and usage), and ``encode`` pads
length-sorted groups itself so a batch gathered from many requests wastes little
compute on padding.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

from rayprism.platform.models.base import Prepared
from rayprism.platform.models.text_inputs import (
    TextPreStage,
    encode_texts,
    encode_texts_with_transformers,
    own_rust_tokenizer,
    padded,
)
from rayprism.platform.models.torch_inference import inference
from rayprism.platform.threads import quiet_tokenizers


class TokenIds(NamedTuple):
    """A text as this encoder's forward pass takes it."""

    ids: list[int]
    prompt_length: int
    """Leading ids that are the prompt, which the model's pooling leaves out; 0 where it pools them all."""


def truncated(item: Prepared[TokenIds], max_tokens: int) -> Prepared[TokenIds]:
    """``item`` with its first ``max_tokens`` ids only: a limit lower than the model's (a role's, in training)."""
    ids, prompt_length = item.payload.ids[:max_tokens], item.payload.prompt_length
    return Prepared(TokenIds(ids, prompt_length), min(item.n_tokens, max_tokens))


class SentenceTransformerEncoder(TextPreStage):
    def __init__(
        self,
        path: str,
        *,
        device: str = "cpu",
        max_input_tokens: int | None = None,
        forward_batch_size: int = 32,
        torch_threads: int | None = None,
        dtype: str = "float32",
        trust_remote_code: bool = False,
    ):
        quiet_tokenizers()
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

        self._torch = torch
        self._torch_threads = torch_threads
        self._model = SentenceTransformer(
            path, device=device, trust_remote_code=trust_remote_code, model_kwargs={"dtype": getattr(torch, dtype)}
        )
        self._model.eval()
        self._tokenizer = self._model.tokenizer
        model_limit = self._model.max_seq_length or self._tokenizer.model_max_length
        self.max_input_tokens = min(max_input_tokens or model_limit, model_limit)
        self.dimensions = int(self._model.get_embedding_dimension())
        first = self._model[0]
        self.token_dimensions = int(first.get_embedding_dimension()) if isinstance(first, Transformer) else None
        """The width of token vectors (the transformer's hidden size: a Dense head may change ``dimensions``);
        None when the model does not start with a transformer (a static embedding has no token vectors)."""
        self._special_ids = sorted(self._tokenizer.all_special_ids)
        self.vocab_size = len(self._tokenizer)
        self.prompts: dict[str, str] = dict(self._model.prompts or {})
        self._default_prompt_name = self._model.default_prompt_name
        self._pooling_skips_prompt = any(
            isinstance(module, Pooling) and not module.include_prompt for module in self._model
        )
        self._prompt_lengths: dict[str, int] = {}
        self._pad_id = self._tokenizer.pad_token_id or 0
        self._pad_left = self._tokenizer.padding_side == "left"
        self._with_token_types = "token_type_ids" in self._tokenizer.model_input_names
        self._rust_tokenizer = own_rust_tokenizer(self._tokenizer, self.max_input_tokens)
        self.forward_batch_size = forward_batch_size
        self.device = device

    def _prepare_texts(self, texts: list[str], prompt: str | None, truncate: bool) -> list[Prepared[TokenIds]]:
        prompt_length = self._prompt_length(prompt) if prompt and self._pooling_skips_prompt else 0
        if self._rust_tokenizer is not None:
            encoded = encode_texts(self._rust_tokenizer, texts, max_tokens=self.max_input_tokens, truncate=truncate)
        else:
            encoded = encode_texts_with_transformers(self._tokenizer, texts, max_tokens=self.max_input_tokens,
                                                     truncate=truncate)
        return [Prepared(TokenIds(ids, prompt_length), len(ids)) for ids in encoded]

    def _prompt_length(self, prompt: str) -> int:
        """Tokens of the prompt without a trailing special token, as sentence-transformers counts them
        for pooling that leaves the prompt out (``include_prompt: false``)."""
        if prompt not in self._prompt_lengths:
            ids = self._tokenizer(prompt)["input_ids"]
            self._prompt_lengths[prompt] = len(ids) - (ids[-1] in self._tokenizer.all_special_ids)
        return self._prompt_lengths[prompt]

    def _prepare_token_ids(self, ids: list[int]) -> Prepared[TokenIds]:
        return Prepared(TokenIds(ids, 0), len(ids))

    def encode(self, items: Sequence[Prepared[TokenIds]]) -> np.ndarray:
        vectors = np.empty((len(items), self.dimensions), dtype=np.float32)

        def read(group: list[int], output: dict) -> None:
            vectors[group] = output["sentence_embedding"].float().cpu().numpy()

        self._forward(items, read)
        return vectors

    def encode_tokens(self, items: Sequence[Prepared[TokenIds]]) -> list[np.ndarray]:
        """Each input's token vectors, float32[t, token_dimensions] at unit length: the model's output
        before pooling (``token_embeddings``, as ``SentenceTransformer.encode`` gives it), without
        padding and special tokens ([CLS], [SEP], [UNK], ...), which carry no term of the text."""
        matrices: list[np.ndarray] = [np.empty((0, self.token_dimensions), dtype=np.float32)] * len(items)
        special = self._torch.tensor(self._special_ids, device=self.device)
        functional = self._torch.nn.functional

        def read(group: list[int], output: dict) -> None:
            keep = output["attention_mask"].bool() & ~self._torch.isin(output["input_ids"], special)
            tokens = functional.normalize(output["token_embeddings"].float(), dim=-1)
            for row, index in enumerate(group):
                matrices[index] = tokens[row][keep[row]].cpu().numpy()

        self._forward(items, read)
        return matrices

    def _forward(self, items: Sequence[Prepared[TokenIds]], read: Callable[[list[int], dict], None]) -> None:
        """The model over ``items`` in length-sorted forward passes; ``read(positions, output)`` takes
        each pass's output (the features of every module) for the items at those positions."""
        # Longest first; where pooling skips the prompt, one forward pass holds one prompt length.
        order = sorted(range(len(items)), key=lambda i: (items[i].payload.prompt_length, -items[i].n_tokens))
        with inference(self._torch, self._torch_threads):
            for group in self._forward_groups(order, items):
                features = self._pad([items[i].payload.ids for i in group])
                prompt_length = items[group[0]].payload.prompt_length
                if prompt_length:
                    features["prompt_length"] = prompt_length
                read(group, self._model.forward(features))

    def _forward_groups(self, order: list[int], items: Sequence[Prepared[TokenIds]]) -> list[list[int]]:
        groups: list[list[int]] = []
        for index in order:
            group = groups[-1] if groups else None
            if (group is None or len(group) == self.forward_batch_size
                    or items[group[0]].payload.prompt_length != items[index].payload.prompt_length):
                groups.append([index])
            else:
                group.append(index)
        return groups

    def _pad(self, sequences: list[list[int]]) -> dict:
        """Model inputs for one forward pass, padded on the tokenizer's side."""
        features = padded(sequences, self._pad_id, pad_left=self._pad_left, token_types=self._with_token_types)
        return {name: self._torch.from_numpy(array).to(self.device) for name, array in features.items()}