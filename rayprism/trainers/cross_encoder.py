"""``objective: cross_encoder``: a reranker trained on the same Ray Train loop as the bi-encoder.

The model is a sentence-transformers ``CrossEncoder`` with one logit per (query, document) pair: a
CrossEncoder directory as it is, or the encoder of a bi-encoder (or of a plain transformers model)
under a fresh, seeded one-logit classification head (:func:`initial_cross_encoder`, built once by
the driver so every worker starts from the same weights).

A step scores each of the worker's queries with its positive (label 1) and its ``k`` negatives
(label 0: mined with the retriever, the bi-encoder, from its rank window; or given) and takes the
binary cross-entropy (:func:`~rayprism.trainers.losses.pair_cross_entropy`). Pairs are tokenised
and batched by the service's own reranker backend
(:class:`~rayprism.platform.models.cross_encoder.CrossEncoderScorer`), so training sees the inputs
that ``kind: reranker`` serving sees, and evaluation scores what ``/v1/rerank`` would answer.

Evaluation reranks each held-out query's candidates (the retriever's top ``candidates`` by exact
dense search, computed once by the driver, or given in the queries file) and scores the new order
with the bi-encoder's metrics (:mod:`rayprism.trainers.evaluation`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rayprism.platform.errors import ConfigError
from rayprism.platform.threads import quiet_tokenizers
from rayprism.trainers.model import in_input_order
from rayprism.trainers.worker import TrainerState, Worker

CROSS_ENCODER_TYPE = "CrossEncoder"


def _sentence_transformers_config(path: Path) -> dict:
    file = path / "config_sentence_transformers.json"
    return json.loads(file.read_text()) if file.exists() else {}


def is_cross_encoder(path: str | Path) -> bool:
    """Whether ``path`` is a saved sentence-transformers CrossEncoder (not a bi-encoder or plain model)."""
    path = Path(path)
    return (path / "modules.json").exists() and _sentence_transformers_config(path).get("model_type") == \
        CROSS_ENCODER_TYPE


def encoder_directory(path: str | Path) -> tuple[str, int | None]:
    """Where the transformer of a bi-encoder (or plain transformers) directory lies, and the sequence
    limit it was trained at (its ``sentence_bert_config.json``; None: the tokenizer's)."""
    path = Path(path)
    modules_file = path / "modules.json"
    folder = path
    if modules_file.exists():
        modules = json.loads(modules_file.read_text())
        transformer = next((m for m in modules if m.get("type", "").endswith("Transformer")), None)
        if transformer is None:
            raise ConfigError(f"{path} has no Transformer module to start a cross-encoder from "
                              f"(modules: {[m.get('type') for m in modules]})")
        folder = path / transformer.get("path", "")
    settings = folder / "sentence_bert_config.json"
    limit = json.loads(settings.read_text()).get("max_seq_length") if settings.exists() else None
    return str(folder), limit


def initial_cross_encoder(source: str, directory: Path, *, max_tokens: int | None, seed: int,
                          trust_remote_code: bool = False) -> str:
    """A local CrossEncoder directory with one logit to start training from: ``source`` itself when it is
    one and nothing changes, else ``directory`` (written): ``source``'s encoder with a head drawn by
    ``seed``, cut at ``max_tokens`` (default: the limit ``source`` was trained at)."""
    from sentence_transformers import CrossEncoder

    if is_cross_encoder(source):
        model = CrossEncoder(source, device="cpu", trust_remote_code=trust_remote_code)
        if model.num_labels != 1:
            raise ConfigError(f"model.source {source} is a CrossEncoder with {model.num_labels} labels; a "
                              "reranker has one")
        if max_tokens is None or max_tokens == model.max_seq_length:
            return source
        model.max_seq_length = max_tokens
    else:
        folder, trained_at = encoder_directory(source)
        if not (Path(folder) / "config.json").exists():
            raise ConfigError(f"model.source {source}: no transformers model (config.json) in {folder}")
        torch.manual_seed(seed)
        model = CrossEncoder(folder, num_labels=1, device="cpu", trust_remote_code=trust_remote_code)
        model.max_seq_length = min(max_tokens or trained_at or model.max_seq_length, model.max_seq_length)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(str(directory))
    return str(directory)


class TrainableCrossEncoder:
    """The CrossEncoder a worker trains, with the service's scorer over it (tokenisation, batching)."""

    def __init__(self, path: str, *, device: str = "cpu", trust_remote_code: bool = False,
                 forward_batch_size: int = 32, gradient_checkpointing: bool = False):
        quiet_tokenizers()
        from sentence_transformers import CrossEncoder

        from rayprism.platform.models.cross_encoder import CrossEncoderScorer

        self.ce = CrossEncoder(path, device=device, trust_remote_code=trust_remote_code)
        self.scorer = CrossEncoderScorer.around(self.ce, device=device, forward_batch_size=forward_batch_size)
        if gradient_checkpointing:
            self.ce.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def pairs(self, queries: Sequence[str], documents: Sequence[Sequence[str]]):
        """Each query with each of its documents, tokenised as the service tokenises them, query-major."""
        return [item for query, texts in zip(queries, documents) for item in self.scorer.prepare_pairs(query, texts)]

    def save(self, directory: str) -> None:
        self.ce.save(directory)


class PairLogits(torch.nn.Module):
    """One call (one DDP forward) scores every forward pass of a step: a logit per pair, in input order."""

    def __init__(self, model: TrainableCrossEncoder):
        super().__init__()
        self.model = model.ce
        self._scorer = model.scorer

    def forward(self, passes: list[tuple[list[int], dict]]) -> torch.Tensor:
        parts, rows = [], []
        for pass_rows, features in passes:
            parts.append(self._scorer.logits(features))
            rows.extend(pass_rows)
        return in_input_order(parts, rows)


def pair_layout(positive_keys: Sequence[int], negative_keys: Sequence[Sequence[int]], k: int):
    """Labels (1 for each query's positive, then 0 for its ``k`` negatives, query-major) and which pairs
    count: a negative with its positive's key (the same document) is left out."""
    labels, keep = [], []
    for positive, negatives in zip(positive_keys, negative_keys):
        labels.append(1.0)
        keep.append(True)
        for key in list(negatives)[:k]:
            labels.append(0.0)
            keep.append(int(key) != int(positive))
    return torch.tensor(labels), torch.tensor(keep)


def batch_loss(model: TrainableCrossEncoder, forward: Callable, batch: dict[str, Any], k: int, *,
               positive_weight: float | None) -> torch.Tensor:
    """A batch's loss: every (query, positive) and (query, negative) pair scored by ``forward`` (the
    wrapped :class:`PairLogits`), against its label."""
    from rayprism.trainers.losses import pair_cross_entropy

    queries = [str(query) for query in batch["query"]]
    documents = [[str(positive), *[str(text) for text in list(negatives)[:k]]]
                 for positive, negatives in zip(batch["positive"], batch["negatives"])]
    labels, keep = pair_layout(list(batch["positive_key"]), list(batch["negative_keys"]), k)
    logits = forward(model.scorer.forward_passes(model.pairs(queries, documents)))
    return pair_cross_entropy(logits, labels.to(logits.device), keep=keep.to(logits.device),
                              positive_weight=positive_weight)


class CrossEncoderWorker(Worker):
    """``objective: cross_encoder``: binary cross-entropy on each query's positive and negatives."""

    def load(self, source: str) -> TrainableCrossEncoder:
        training = self.job.training
        return TrainableCrossEncoder(source, device=str(self.device), trust_remote_code=self.job.model.trust_remote_code,
                                     forward_batch_size=training.forward_batch_size,
                                     gradient_checkpointing=training.gradient_checkpointing)

    def prepare(self, optimizer_state: dict | None) -> None:
        self.model.ce.train()
        self.prepare_training(PairLogits(self.model), self.model.ce, optimizer_state)

    def step(self, batch: dict[str, Any]) -> float:
        with self.autocast():
            loss = batch_loss(self.model, self.module, batch, self.plan.negatives_per_query,
                              positive_weight=self.job.reranking.positive_weight)
        return self.apply(loss)

    def evaluate(self, state: TrainerState, evaluation, *, epoch: int) -> None:
        """Every worker reranks its share of the queries' candidates; rank 0 scores the new orders."""
        import ray

        from rayprism.trainers.evaluation import score_rankings

        data = ray.get(evaluation) if isinstance(evaluation, ray.ObjectRef) else evaluation
        started = time.perf_counter()
        was_training = self.model.ce.training
        self.model.ce.eval()
        try:
            scores = self.shared(np.arange(len(data.queries)), lambda rows: rerank_scores(
                self.model.scorer, [data.queries[row] for row in rows], data.candidates[rows], data.corpus))
        finally:
            self.model.ce.train(was_training)
        if self.rank == 0:
            self.record_evaluation(state, score_rankings(reranked(data.candidates, scores), data.relevant),
                                   epoch=epoch, started=started)


def rerank_scores(scorer, queries: Sequence[str], candidates: np.ndarray, corpus: Sequence[str]) -> np.ndarray:
    """The reranker's score of each query's candidates (rows of ``corpus``; -1 pads), as the service
    scores them; -inf for pads and empty documents (they sort last)."""
    scores = np.full(candidates.shape, -np.inf, dtype=np.float32)
    for index, (query, rows) in enumerate(zip(queries, candidates)):
        usable = [column for column, row in enumerate(rows) if row >= 0 and corpus[row].strip()]
        if usable:
            scores[index, usable] = scorer.score(scorer.prepare_pairs(query, [corpus[rows[c]] for c in usable]))
    return scores


def reranked(candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Candidates in the order of their scores, best first (ties keep the retriever's order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)
