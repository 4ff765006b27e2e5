"""Cross-encoder (reranker) on sentence-transformers + torch.

Scores match ``CrossEncoder(path).predict``: the same tokenisation of each (query, document) pair
(cut to the model's ``max_seq_length``, longest side first; or, where a request refuses truncation, a
longer pair refused), the same module stack and activation.
As for the text encoder, scheduling is ours: pairs are tokenised once in ``prepare_pairs`` (exact
token counts for batching and usage), and ``score`` runs length-sorted forward passes gathered from
any number of requests.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from rayprism.platform.errors import InvalidInputError
from rayprism.platform.models.base import Prepared, check_fits, to_tokenise
from rayprism.platform.models.text_inputs import own_rust_tokenizer, padded
from rayprism.platform.models.torch_inference import inference
from rayprism.platform.threads import quiet_tokenizers


class PairIds(NamedTuple):
    """A (query, document) pair as the scorer's forward pass takes it: one sequence of both."""

    ids: list[int]
    type_ids: list[int]
    """Each id's segment: 0 for the query's, 1 for the document's (for models that read segments)."""


class CrossEncoderScorer:
    modalities = frozenset({"text"})

    def __init__(self, path: str, *, device: str = "cpu", max_input_tokens: int | None = None,
                 forward_batch_size: int = 32, torch_threads: int | None = None, dtype: str = "float32",
                 trust_remote_code: bool = False):
        import torch
        from sentence_transformers import CrossEncoder

        quiet_tokenizers()
        model = CrossEncoder(path, device=device, trust_remote_code=trust_remote_code,
                             model_kwargs={"dtype": getattr(torch, dtype)})
        model.eval()
        self._setup(model, path, device=device, max_input_tokens=max_input_tokens,
                    forward_batch_size=forward_batch_size, torch_threads=torch_threads)

    @classmethod
    def around(cls, model, *, device: str = "cpu", forward_batch_size: int = 32) -> CrossEncoderScorer:
        """A scorer over an already loaded ``CrossEncoder`` (``rayprism train``'s, being trained): the
        tokenisation and forward passes the service runs, on that model's current weights."""
        scorer = cls.__new__(cls)
        scorer._setup(model, "the model being trained", device=device, max_input_tokens=None,
                      forward_batch_size=forward_batch_size, torch_threads=None)
        return scorer

    def _setup(self, model, path: str, *, device: str, max_input_tokens: int | None, forward_batch_size: int,
               torch_threads: int | None) -> None:
        import torch

        self._torch = torch
        self._torch_threads = torch_threads
        self._model = model
        if self._model.num_labels != 1:
            from rayprism.platform.errors import ConfigError

            raise ConfigError(f"a reranker gives one score per pair; the model at {path} has "
                              f"{self._model.num_labels} labels (a classifier, not a reranker)")
        self._tokenizer = self._model.tokenizer
        model_limit = self._model.max_seq_length or self._tokenizer.model_max_length
        self.max_input_tokens = min(max_input_tokens or model_limit, model_limit)
        self._rust_tokenizer = own_rust_tokenizer(self._tokenizer, self.max_input_tokens)
        self._pad_id = self._tokenizer.pad_token_id or 0
        self._pad_left = self._tokenizer.padding_side == "left"
        self._with_token_types = "token_type_ids" in self._tokenizer.model_input_names
        self.forward_batch_size = forward_batch_size
        self.device = device

    def warmup(self) -> None:
        self.score(self.prepare_pairs("warm up", ["a document"]))

    def prepare_pairs(self, query: str, documents: Sequence[str], *, truncate: bool = True
                      ) -> list[Prepared[PairIds]]:
        if not query.strip():
            raise InvalidInputError("query is empty or only whitespace", param="query")
        if not documents:
            raise InvalidInputError("documents must not be empty", param="documents")
        for index, document in enumerate(documents):
            if not isinstance(document, str) or not document.strip():
                raise InvalidInputError(f"documents[{index}] is empty or only whitespace", param=f"documents[{index}]")
        query = to_tokenise(query, self.max_input_tokens, truncate)
        pairs = [(query, to_tokenise(document, self.max_input_tokens, truncate)) for document in documents]
        if self._rust_tokenizer is not None:
            encodings = self._rust_tokenizer.encode_batch(pairs)
            if not truncate:
                for index, encoding in enumerate(encodings):
                    if encoding.overflowing:  # a pair's pieces are not a partition: count the refused one whole
                        self._check_fits(index, len(self._tokenizer(*pairs[index])["input_ids"]))
            encoded = [(encoding.ids, encoding.type_ids) for encoding in encodings]
        else:
            features = self._tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation=truncate,
                                       max_length=self.max_input_tokens if truncate else None,
                                       return_token_type_ids=True)
            encoded = list(zip(features["input_ids"], features["token_type_ids"]))
            if not truncate:
                for index, (ids, _) in enumerate(encoded):
                    self._check_fits(index, len(ids))
        return [Prepared(PairIds(ids, type_ids), len(ids)) for ids, type_ids in encoded]

    def _check_fits(self, index: int, n_tokens: int) -> None:
        check_fits(f"documents[{index}]", n_tokens, self.max_input_tokens, counted=" with the query")

    def score(self, items: Sequence[Prepared[PairIds]]) -> np.ndarray:
        scores = np.empty(len(items), dtype=np.float32)
        with inference(self._torch, self._torch_threads):
            for rows, features in self.forward_passes(items):
                output = self.logits(features)
                if self._model.activation_fn is not None:
                    output = self._model.activation_fn(output)
                scores[rows] = output.cpu().numpy()
        return scores

    def forward_passes(self, items: Sequence[Prepared[PairIds]]) -> list[tuple[list[int], dict]]:
        """Length-sorted forward passes of ``forward_batch_size`` pairs: each pass's rows of ``items``
        and its model inputs (tensors on the device)."""
        order = sorted(range(len(items)), key=lambda i: -items[i].n_tokens)
        passes = []
        for start in range(0, len(order), self.forward_batch_size):
            rows = order[start:start + self.forward_batch_size]
            ids = [items[i].payload.ids for i in rows]
            type_ids = [items[i].payload.type_ids for i in rows] if self._with_token_types else None
            arrays = padded(ids, self._pad_id, pad_left=self._pad_left, token_types=self._with_token_types,
                            type_ids=type_ids)
            passes.append((rows, {name: self._torch.from_numpy(array).to(self.device) for name, array in arrays.items()}))
        return passes

    def logits(self, features: dict):
        """One forward pass: a logit per pair (float32; the activation, sigmoid for one label, not applied)."""
        output = self._model({**features, "modality": "text"})["scores"].float()
        return output.reshape(output.shape[0], -1)[:, 0]
