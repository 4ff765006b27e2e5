"""Contrastive losses over embeddings gathered from every worker, and the cross-encoder's pair loss.

One step's batch is spread over the workers. Each worker gathers every worker's embeddings
(:func:`gather_with_grad`: its own part keeps its gradient, the others are constants), so every
worker computes the same loss over the global batch: 2 workers × B queries score exactly what
1 worker × 2B queries scores. Each worker's gradient covers only its own embeddings; the sum over
workers is the gradient of the global loss, which is why :attr:`ContrastiveLoss.backward_scale` is
the world size (DDP averages gradients over workers).

The batch layout: ``n`` queries; documents are the ``n`` positives, then ``n × k`` hard negatives
(``k`` per query, query-major), each with an integer key (the document's id hashed): a document
with the positive's key that is not the positive is masked, not counted as a negative (a duplicate
in the batch, or a caption shared by several images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) outside distributed training."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every worker's ``tensor`` concatenated in rank order (equal first dimensions); this worker's
    own rows keep their gradient."""
    import torch.distributed as dist

    rank, size = world()
    if size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[rank] = tensor
    return torch.cat(parts)


@dataclass(frozen=True)
class ContrastiveBatch:
    """One worker's share of a step: embeddings of one view (a layer and dimension prefix)."""

    queries: torch.Tensor
    """(n, d)"""
    documents: torch.Tensor
    """(n × (1 + k), d): the positives, then k negatives per query."""
    document_keys: torch.Tensor
    """(n × (1 + k),) int64"""


def info_nce(queries: torch.Tensor, documents: torch.Tensor, document_keys: torch.Tensor, *,
             positives_per_block: Sequence[int] | None = None, temperature: float,
             symmetric: bool = False) -> torch.Tensor:
    """InfoNCE of ``queries`` (n, d) against ``documents`` whose first n rows are the positives.

    Vectors are L2-normalised here (cosine logits). ``positives_per_block`` describes gathered
    layouts: ``documents`` is the concatenation of blocks, block ``b`` starting with its own
    ``positives_per_block[b]`` positives (for block b's queries, in order) followed by its negatives.
    """
    queries = F.normalize(queries.float(), dim=-1)
    documents = F.normalize(documents.float(), dim=-1)
    n = queries.shape[0]
    if positives_per_block is None:
        positives_per_block = [n]
    positive_columns = _positive_columns(positives_per_block, documents.shape[0], queries.device)
    logits = queries @ documents.T / temperature
    same = document_keys[positive_columns][:, None] == document_keys[None, :]
    same[torch.arange(n, device=queries.device), positive_columns] = False
    logits = logits.masked_fill(same, float("-inf"))
    loss = F.cross_entropy(logits, positive_columns)
    if symmetric:
        # each positive document against every query: columns of the positives, rows of the queries
        backward_logits = logits[:, positive_columns].T
        loss = (loss + F.cross_entropy(backward_logits, torch.arange(n, device=queries.device))) / 2
    return loss


def _positive_columns(positives_per_block: Sequence[int], total: int, device) -> torch.Tensor:
    """Column of each query's positive when every block holds the same share of the documents."""
    blocks = len(positives_per_block)
    per_block = total // blocks
    columns = [block * per_block + i for block, count in enumerate(positives_per_block) for i in range(count)]
    return torch.tensor(columns, dtype=torch.long, device=device)


@dataclass(frozen=True)
class View:
    """What one loss term scores: the embeddings of ``layer`` (None: the model's output), cut to
    ``dimensions`` (None: all), with ``weight``."""

    layer: int | None
    dimensions: int | None
    weight: float = 1.0


class ContrastiveLoss:
    """InfoNCE summed over views (one view plainly; several for Matryoshka and Starbucks)."""

    def __init__(self, views: Sequence[View], *, temperature: float, symmetric: bool, gather: bool):
        self.views = list(views)
        self.temperature = temperature
        self.symmetric = symmetric
        self.gather = gather

    @property
    def layers(self) -> list[int | None]:
        """The layers whose embeddings the model must return, each once."""
        return sorted({view.layer for view in self.views}, key=lambda layer: (layer is None, layer or 0))

    @property
    def backward_scale(self) -> float:
        """Multiply the loss by this before ``backward`` under DDP (see the module docstring)."""
        return float(world()[1]) if self.gather else 1.0

    def __call__(self, batches: dict[int | None, ContrastiveBatch]) -> torch.Tensor:
        """``batches``: this worker's embeddings per layer (as :attr:`layers` lists them)."""
        gathered = {layer: self._gather(batch) for layer, batch in batches.items()}
        total = None
        for view in self.views:
            queries, documents, keys, blocks = gathered[view.layer]
            if view.dimensions is not None:
                queries, documents = queries[:, : view.dimensions], documents[:, : view.dimensions]
            term = view.weight * info_nce(queries, documents, keys, positives_per_block=blocks,
                                          temperature=self.temperature, symmetric=self.symmetric)
            total = term if total is None else total + term
        return total

    def _gather(self, batch: ContrastiveBatch):
        n = batch.queries.shape[0]
        if not self.gather or world()[1] == 1:
            return batch.queries, batch.documents, batch.document_keys, [n]
        size = world()[1]
        return (gather_with_grad(batch.queries), gather_with_grad(batch.documents),
                gather_with_grad(batch.document_keys), [n] * size)


def views_for(loss_config, *, model_dimensions: int, model_layers: int | None) -> list[View]:
    """The loss views a :class:`~rayprism.platform.config.LossConfig` asks for, checked against the model."""
    from rayprism.platform.errors import ConfigError

    if loss_config.matryoshka_dimensions is not None:
        dimensions = loss_config.matryoshka_dimensions
        too_big = [d for d in dimensions if d > model_dimensions]
        if too_big:
            raise ConfigError(f"loss.matryoshka_dimensions {too_big} exceed the model's {model_dimensions} dimensions")
        weights = loss_config.matryoshka_weights or [1.0] * len(dimensions)
        return [View(None, None if d == model_dimensions else d, w) for d, w in zip(dimensions, weights)]
    if loss_config.starbucks is not None:
        if model_layers is None:
            raise ConfigError("loss.starbucks needs a transformer text model (its layers are pooled)")
        views = []
        for layers, dimensions in loss_config.starbucks:
            if layers > model_layers or dimensions > model_dimensions:
                raise ConfigError(f"loss.starbucks pair [{layers}, {dimensions}] exceeds the model's {model_layers} "
                                  f"layers or {model_dimensions} dimensions")
            views.append(View(None if layers == model_layers else layers,
                              None if dimensions == model_dimensions else dimensions))
        return views
    return [View(None, None)]


def pair_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, keep: torch.Tensor | None = None,
                       positive_weight: float | None = None) -> torch.Tensor:
    """The cross-encoder's loss: binary cross-entropy of one logit per (query, document) pair against its
    label (1 relevant, 0 not), the mean over the pairs ``keep`` marks (all by default); ``positive_weight``
    multiplies the positives' term (``pos_weight``).

    Pairs are scored and labelled on each worker alone (no gathering): every worker holds the same number
    of pairs, so DDP's mean of the workers' gradients is the gradient of the mean over the global batch.
    """
    logits, labels = logits.float(), labels.float()
    if keep is not None:
        logits, labels = logits[keep], labels[keep]
    weight = None if positive_weight is None else torch.tensor(positive_weight, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=weight)
