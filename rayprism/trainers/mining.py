"""Hard negatives mined once, before training, with the base model.

For each query the base model ranks the mining corpus; the candidates are the documents ranked
``rank_from..rank_to`` (1-based, as KaLM-Embedding-V2 takes ranks 30–100: close enough to teach,
far enough not to be unlabelled answers). The positive and near-duplicates of it (cosine to the
positive ≥ ``max_similarity_to_positive`` under the base model) are skipped; ``per_query`` of the
rest are drawn at random (seeded).

Embedding the corpus is the expensive part: it runs on a Ray Data actor pool with the Encoder the
service loads, and its vectors are cached in the run's directory under a fingerprint of the
model and the texts, so a rerun (or a resumed run) does not pay for it again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from rayprism.platform.vectors import normalised

if TYPE_CHECKING:
    from rayprism.platform.config import ModelConfig
    from rayprism.platform.models.base import Prepared


def select_negatives(query_vectors: np.ndarray, corpus_vectors: np.ndarray, positive_rows: np.ndarray, *,
                     rank_from: int, rank_to: int, per_query: int, max_similarity_to_positive: float,
                     seed: int, chunk: int = 512) -> np.ndarray:
    """Corpus rows of ``per_query`` hard negatives per query, shape (queries, per_query); -1 where the
    window held too few usable candidates.

    ``positive_rows``: each query's positive as a row of ``corpus_vectors``.
    """
    queries, corpus = normalised(query_vectors), normalised(corpus_vectors)
    positive_rows = np.asarray(positive_rows, dtype=np.int64)
    window_end = min(rank_to, len(corpus))
    chosen = np.full((len(queries), per_query), -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for start in range(0, len(queries), chunk):
        scores = queries[start: start + chunk] @ corpus.T
        # the best window_end + 1 rows (one more: the positive may sit inside), best first
        take = min(window_end + 1, len(corpus))
        best = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
        ranked = np.take_along_axis(best, order, axis=1)
        for offset, row in enumerate(ranked):
            query = start + offset
            positive = positive_rows[query]
            without_positive = row[row != positive][: window_end]
            window = without_positive[rank_from - 1:]
            if len(window) == 0:
                continue
            similar = corpus[window] @ corpus[positive] >= max_similarity_to_positive
            candidates = window[~similar]
            if len(candidates) == 0:
                continue
            picked = rng.choice(candidates, size=min(per_query, len(candidates)), replace=False)
            chosen[query, : len(picked)] = picked
    return chosen


def fingerprint(model: str, settings: dict, *texts: Sequence[str]) -> str:
    digest = hashlib.sha256(json.dumps({"model": model, **settings}, sort_keys=True).encode())
    for group in texts:
        for text in group:
            digest.update(text.encode())
            digest.update(b"\0")
        digest.update(b"\1")
    return digest.hexdigest()[:20]


def cached_vectors(path: Path, compute: Callable[[], list[np.ndarray]]) -> tuple[list[np.ndarray], bool]:
    """``compute()`` once; later calls load ``path`` (an .npz). Returns the arrays and whether they came
    from the cache."""
    if path.exists():
        with np.load(path) as saved:
            return [saved[f"a{i}"] for i in range(len(saved.files))], True
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, **{f"a{i}": array for i, array in enumerate(arrays)})
    partial.rename(path)
    return arrays, False


class _EmbedActor:
    """Ray Data actor: the service's Encoder for the base model, one batch of texts at a time, each
    with its role's prompt (queries and documents may take different prompts)."""

    def __init__(self, model: ModelConfig):
        from rayprism.platform.models.base import prompt_for_role
        from rayprism.platform.models.registry import load_encoder

        self._encoder = load_encoder(model)
        self._prompts = {role: prompt_for_role(self._encoder.prompts, role) for role in ("query", "document")}

    def __call__(self, batch: dict) -> dict:
        from rayprism.platform.models.text_torch import TokenIds, truncated

        prepared: list[Prepared[TokenIds]] = [None] * len(batch["text"])
        for role in ("query", "document"):
            rows = [i for i, value in enumerate(batch["role"]) if value == role]
            if not rows:
                continue
            limit = int(batch["max_tokens"][rows[0]])
            items = self._encoder.prepare([batch["text"][i] for i in rows], "text", self._prompts[role])
            for row, item in zip(rows, items):
                prepared[row] = truncated(item, limit)
        return {"index": batch["index"], "vector": list(self._encoder.encode(prepared))}


def embed_texts(groups: Sequence[tuple[str, Sequence[str], int]], *, source: str, workers: int,
                cpus_per_worker: float, threads: int, batch_size: int, use_gpu: bool = False) -> list[np.ndarray]:
    """Vectors from the base model, in order, for each ``(role, texts, max_tokens)`` group, on one Ray
    Data actor pool; ``role`` (query or document) picks the model's prompt as the service would."""
    import ray

    from rayprism.platform.config import BatchingConfig, ModelConfig

    model = ModelConfig(source=source, torch_threads=threads, device="cuda" if use_gpu else "cpu",
                        batching=BatchingConfig(forward_batch_size=batch_size))
    rows: list[dict] = []
    for role, texts, max_tokens in groups:
        for text in texts:
            rows.append({"index": len(rows), "role": role, "text": text, "max_tokens": max_tokens})
    blocks = max(workers * 4, len(rows) // (batch_size * 16) or 1)
    dataset = ray.data.from_items(rows, override_num_blocks=min(blocks, max(1, len(rows))))

    class EmbedActor(_EmbedActor):
        # the model travels with the class, not as a constructor argument in the object store
        # (which Ray warns an actor that may restart could lose)
        def __init__(self):
            super().__init__(model)

    dataset = dataset.map_batches(
        EmbedActor, batch_size=batch_size * 8, num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0,
        compute=ray.data.ActorPoolStrategy(size=workers),
    )
    vectors: np.ndarray | None = None
    for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
        stacked = np.stack(batch["vector"]).astype(np.float32)
        if vectors is None:
            vectors = np.empty((len(rows), stacked.shape[1]), dtype=np.float32)
        vectors[batch["index"]] = stacked
    result, start = [], 0
    for _, texts, _ in groups:
        result.append(vectors[start: start + len(texts)] if vectors is not None else np.empty((0, 0), np.float32))
        start += len(texts)
    return result
