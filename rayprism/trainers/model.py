"""The model a worker trains: a sentence-transformers model, and how its inputs become forward passes.

Text models are the sentence-transformers stack the service loads (transformer, pooling, optional
dense layers, normalisation); CLIP-style models are the same stack around a ``CLIPModel`` (its
``Transformer`` module picks the text or image tower by the input's modality). So a checkpoint is
saved with ``SentenceTransformer.save`` and is at once servable and loadable by sentence-transformers.

Inputs are prepared as the service prepares them (the model's prompts, its tokenizer and image
processor), then length-sorted and cut into forward passes of ``forward_batch_size`` so a short
query is not padded to the longest document of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from rayprism.platform.threads import quiet_tokenizers

Layer = int | None
"""A transformer layer whose pooled output is wanted (1-based); None: the model's own output."""


@dataclass
class Chunk:
    """One forward pass: model features and the batch positions of its rows."""

    features: dict[str, Any]
    rows: list[int]


def in_input_order(parts: Sequence[torch.Tensor], rows: Sequence[int]) -> torch.Tensor:
    """The outputs of length-sorted forward passes (``parts``, concatenated, for input ``rows`` in that
    order) back in input order."""
    inverse = torch.empty(len(rows), dtype=torch.long)
    inverse[torch.tensor(list(rows), dtype=torch.long)] = torch.arange(len(rows))
    return torch.cat(list(parts))[inverse.to(parts[0].device)]


class Embedder(torch.nn.Module):
    """Wraps the sentence-transformers model so one call (one DDP forward) embeds every chunk of a
    step, returning for each layer asked for the embeddings of all rows, in input order."""

    def __init__(self, model, layers: Sequence[Layer] = (None,)):
        super().__init__()
        self.model = model
        self.layers = list(layers)

    def forward(self, groups: list[list[Chunk]]) -> list[dict[Layer, torch.Tensor]]:
        return [self._embed_group(chunks) for chunks in groups]

    def _embed_group(self, chunks: list[Chunk]) -> dict[Layer, torch.Tensor]:
        outputs: dict[Layer, list[torch.Tensor]] = {layer: [] for layer in self.layers}
        rows: list[int] = []
        for chunk in chunks:
            for layer, tensor in self._embed_chunk(chunk.features).items():
                outputs[layer].append(tensor)
            rows.extend(chunk.rows)
        return {layer: in_input_order(parts, rows) for layer, parts in outputs.items()}

    def _embed_chunk(self, features: dict[str, Any]) -> dict[Layer, torch.Tensor]:
        if self.layers == [None]:
            return {None: self.model(dict(features))["sentence_embedding"]}
        transformer, rest = self.model[0], list(self.model)[1:]
        inputs = {key: value for key, value in features.items() if key in ("input_ids", "attention_mask",
                                                                            "token_type_ids")}
        output = transformer.auto_model(**inputs, output_hidden_states=True, return_dict=True)
        result = {}
        for layer in self.layers:
            pooled = dict(features)
            pooled["token_embeddings"] = output.last_hidden_state if layer is None else output.hidden_states[layer]
            for module in rest:
                pooled = module(pooled)
            result[layer] = pooled["sentence_embedding"]
        return result


class TrainableModel:
    """A sentence-transformers model loaded for training, with the input preparation it needs."""

    def __init__(self, path: str, *, device: str = "cpu", trust_remote_code: bool = False,
                 max_query_tokens: int = 64, max_document_tokens: int | None = None, forward_batch_size: int = 32,
                 gradient_checkpointing: bool = False):
        quiet_tokenizers()
        from sentence_transformers import SentenceTransformer

        from rayprism.platform.models.base import prompt_for_role

        self.path = path
        self.device = device
        self.st = SentenceTransformer(path, device=device, trust_remote_code=trust_remote_code)
        self.forward_batch_size = forward_batch_size
        transformer = self.st[0]
        config = transformer.auto_model.config
        self.model_type = getattr(config, "model_type", None)
        self.is_image_text = self.model_type in ("clip", "siglip")
        self.tokenizer = self.st.tokenizer
        if self.is_image_text:
            from transformers import AutoImageProcessor

            text_config = config.text_config
            self.max_tokens = min(text_config.max_position_embeddings, self.tokenizer.model_max_length)
            self.image_processor = AutoImageProcessor.from_pretrained(path)
            self.layers = None
            self.pad_to = self.max_tokens if self.model_type == "siglip" else None
        else:
            self.max_tokens = self.st.max_seq_length or self.tokenizer.model_max_length
            self.layers = getattr(config, "num_hidden_layers", None)
            self.pad_to = None
        self.max_query_tokens = min(max_query_tokens, self.max_tokens)
        self.max_document_tokens = min(max_document_tokens or self.max_tokens, self.max_tokens)
        self.dimensions = int(self.st.get_embedding_dimension())
        prompts = dict(self.st.prompts or {})
        default = prompts.get(self.st.default_prompt_name) if self.st.default_prompt_name else None
        self.prompts = {role: prompts.get(prompt_for_role(prompts, role)) or default for role in ("query", "document")}
        from sentence_transformers.sentence_transformer.modules import Pooling

        self._pooling_skips_prompt = any(isinstance(m, Pooling) and not m.include_prompt for m in self.st)
        self._pad_id = self.tokenizer.pad_token_id or 0
        self._with_token_types = "token_type_ids" in self.tokenizer.model_input_names
        if gradient_checkpointing:
            transformer.auto_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # -- inputs -------------------------------------------------------------------------------------------

    def text_chunks(self, texts: Sequence[str], role: str, *, max_tokens: int | None = None) -> list[Chunk]:
        """Forward passes for ``texts`` as a query or a document (the model's prompt for that role)."""
        limit = max_tokens or (self.max_query_tokens if role == "query" else self.max_document_tokens)
        prompt = self.prompts.get(role)
        if prompt:
            texts = [prompt + text for text in texts]
        ids = self.tokenizer(list(texts), truncation=True, max_length=min(limit, self.max_tokens))["input_ids"]
        prompt_length = self._prompt_length(prompt) if prompt and self._pooling_skips_prompt else 0
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        chunks = []
        for start in range(0, len(order), self.forward_batch_size):
            rows = order[start: start + self.forward_batch_size]
            features = self._pad([ids[i] for i in rows])
            if prompt_length:
                features["prompt_length"] = prompt_length
            if self.is_image_text:
                features["modality"] = "text"
            chunks.append(Chunk(features, rows))
        return chunks

    def image_chunks(self, images: Sequence[Any]) -> list[Chunk]:
        """Forward passes for images (bytes, or paths to image files), preprocessed as the service does."""
        from rayprism.platform.media import decode_image

        decoded = [decode_image(_image_bytes(item), index, max_pixels=40_000_000) for index, item in enumerate(images)]
        chunks = []
        for start in range(0, len(decoded), self.forward_batch_size):
            rows = list(range(start, min(start + self.forward_batch_size, len(decoded))))
            pixels = self.image_processor(images=[decoded[i] for i in rows], return_tensors="np")["pixel_values"]
            chunks.append(Chunk({"pixel_values": torch.from_numpy(np.asarray(pixels)).to(self.device),
                                 "modality": "image"}, rows))
        return chunks

    def chunks(self, items: Sequence[Any], role: str, modality: str = "text", *,
               max_tokens: int | None = None) -> list[Chunk]:
        if modality == "image":
            return self.image_chunks(items)
        return self.text_chunks(items, role, max_tokens=max_tokens)

    def _prompt_length(self, prompt: str) -> int:
        ids = self.tokenizer(prompt)["input_ids"]
        return len(ids) - (ids[-1] in self.tokenizer.all_special_ids)

    def _pad(self, sequences: list[list[int]]) -> dict[str, Any]:
        width = self.pad_to or max(len(ids) for ids in sequences)
        input_ids = np.full((len(sequences), width), self._pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._with_token_types and not self.is_image_text:
            features["token_type_ids"] = np.zeros_like(input_ids)
        return {name: torch.from_numpy(array).to(self.device) for name, array in features.items()}

    # -- inference ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, items: Sequence[Any], role: str, modality: str = "text", *,
               max_tokens: int | None = None) -> np.ndarray:
        """Vectors as the exported model serves them (eval mode, L2-normalised), in input order."""
        was_training = self.st.training
        self.st.eval()
        try:
            output = Embedder(self.st)([self.chunks(items, role, modality, max_tokens=max_tokens)])[0][None]
        finally:
            self.st.train(was_training)
        return torch.nn.functional.normalize(output.float(), dim=-1).cpu().numpy()

    def save(self, directory: str) -> None:
        self.st.save(directory)


def _image_bytes(item: Any) -> Any:
    """Images arrive as bytes (parquet) or as file paths (already made absolute by the reader)."""
    if isinstance(item, str) and not item.startswith("data:"):
        with open(item, "rb") as file:
            return file.read()
    return item


def document_key(value: Any) -> int:
    """A stable int64 for a document id or text: equal keys mark duplicates within a batch."""
    import hashlib

    digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)
