"""Training pairs and evaluation sets, read with Ray Data.

Pairs come as rows ``{query, positive, [negatives]}``, or ``{query, doc_id}`` joined with a corpus
``{id, text}``. The corpus is small next to the pairs' stream (documents by id), so the join is a
broadcast join: the corpus goes to the object store once and every read task looks its rows up.
Bad rows (no query, an unknown document) are counted by reason and reported, never dropped silently.

The chosen pairs (all of them, or ``max_pairs`` drawn by the seed) become the Ray Dataset that
Ray Train shards across workers; each row holds its texts, so workers read nothing else.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rayprism.platform.config import CorpusConfig, EvaluationConfig, TrainConfig
from rayprism.platform.errors import ConfigError


def read_dataset(path: str, fmt: str):
    """A Ray Dataset of a jsonl or parquet file (or directory, or glob)."""
    import ray

    if not _exists(path):
        raise ConfigError(f"training data {path!r}: no such file")
    if fmt == "parquet":
        return ray.data.read_parquet(path)
    return ray.data.read_json(path, lines=True)


def _exists(path: str) -> bool:
    import glob

    return Path(path).exists() or bool(glob.glob(path))


@dataclass
class Corpus:
    """Documents by id: ids as strings (json ids may be ints), texts in the same order."""

    ids: list[str]
    texts: list[str]
    _rows: dict[str, int] | None = None

    def row(self, doc_id: Any) -> int | None:
        if self._rows is None:
            self._rows = {doc_id: row for row, doc_id in enumerate(self.ids)}
        return self._rows.get(str(doc_id))

    def __len__(self) -> int:
        return len(self.ids)


def read_corpus(config: CorpusConfig) -> Corpus:
    columns = {config.id_field: [], config.text_field: []}
    dataset = read_dataset(config.path, config.resolved_format())
    missing = [name for name in columns if name not in dataset.columns()]
    if missing:
        raise ConfigError(f"corpus {config.path}: no column {missing[0]!r} (columns: {dataset.columns()})")
    for batch in dataset.select_columns(list(columns)).iter_batches(batch_format="pyarrow", batch_size=None):
        for name in columns:
            columns[name].extend(batch.column(name).to_pylist())
    ids = [str(value) for value in columns[config.id_field]]
    texts = [value if isinstance(value, str) else "" for value in columns[config.text_field]]
    return Corpus(ids, texts)


@dataclass
class TrainingPairs:
    """The pairs a run trains on, in training order."""

    queries: list[Any]
    """Texts, or images (bytes or absolute file paths)."""
    positives: list[str]
    positive_ids: list[str]
    """Document ids (with a corpus) or the positive texts: what marks duplicates in a batch."""
    negatives: list[list[str]] = field(default_factory=list)
    """Given negatives' texts per pair (may be empty lists); mined ones are added later."""
    negative_ids: list[list[str]] = field(default_factory=list)
    """Their document ids (with a corpus) or texts."""
    rows_read: int = 0
    rejected: Counter = field(default_factory=Counter)
    """Reason → rows."""

    def __len__(self) -> int:
        return len(self.queries)


_CORPORA: dict[str, dict] = {}
"""Corpora already fetched by this worker process, by object id: one deserialisation per process."""


def _fetched(reference) -> dict | None:
    import ray

    if reference is None:
        return None
    key = reference.hex()
    if key not in _CORPORA:
        _CORPORA.clear()
        _CORPORA[key] = ray.get(reference)
    return _CORPORA[key]


def _join_batch(batch: pa.Table, *, fields: dict, corpus, image_root: str | None) -> pa.Table:
    """One read task's rows: the positive's text from the corpus, negatives resolved, each bad row's reason."""
    corpus = _fetched(corpus)
    columns = set(batch.column_names)
    rows = batch.to_pylist()
    queries, positives, positive_ids, negatives, negative_ids, errors = [], [], [], [], [], []
    for row in rows:
        query = row.get(fields["query"])
        error = None
        positive = positive_id = None
        found_negatives: list[str] = []
        found_negative_ids: list[str] = []
        if query is None or (isinstance(query, str) and not query.strip()) or query == b"":
            error = f"no {fields['query']!r}"
        elif corpus is not None and fields["doc_id"] in columns:
            doc_id = row.get(fields["doc_id"])
            positive = corpus.get(str(doc_id)) if doc_id is not None else None
            positive_id = str(doc_id)
            if positive is None:
                error = f"{fields['doc_id']} not in the corpus"
        else:
            positive = row.get(fields["positive"])
            # a doc_id column without a corpus names the positive (captions of one class share it)
            doc_id = row.get(fields["doc_id"]) if fields["doc_id"] in columns else None
            positive_id = str(doc_id) if doc_id is not None else positive
        if error is None and (not isinstance(positive, str) or not positive.strip()):
            error = error or f"no {fields['positive']!r} text"
        raw_negatives = row.get(fields["negatives"]) if fields["negatives"] in columns else None
        for negative in raw_negatives or []:
            by_id = corpus is not None and str(negative) in corpus
            text = corpus[str(negative)] if by_id else negative
            if isinstance(text, str) and text.strip():
                found_negatives.append(text)
                found_negative_ids.append(str(negative) if by_id else text)
        if error is None and image_root is not None and isinstance(query, str) and not query.startswith("data:"):
            query = query if os.path.isabs(query) else os.path.join(image_root, query)
        queries.append(query if error is None else None)
        positives.append(positive if error is None else None)
        positive_ids.append(positive_id if error is None else None)
        negatives.append(found_negatives)
        negative_ids.append(found_negative_ids)
        errors.append(error)
    query_type = pa.binary() if any(isinstance(q, bytes) for q in queries) else pa.string()
    return pa.table({
        "query": pa.array(queries, type=query_type), "positive": pa.array(positives, type=pa.string()),
        "positive_id": pa.array(positive_ids, type=pa.string()),
        "negatives": pa.array(negatives, type=pa.list_(pa.string())),
        "negative_ids": pa.array(negative_ids, type=pa.list_(pa.string())), "error": pa.array(errors, type=pa.string()),
    })


def read_pairs(config: TrainConfig, corpus: Corpus | None) -> TrainingPairs:
    """Every pair of the file, joined with the corpus, in a seeded random order; ``max_pairs`` of them."""
    import ray

    pairs = config.data.pairs
    dataset = read_dataset(pairs.path, pairs.resolved_format())
    if pairs.query_field not in dataset.columns():
        raise ConfigError(f"training data {pairs.path}: no column {pairs.query_field!r} "
                          f"(columns: {dataset.columns()})")
    by_id = ray.put(dict(zip(corpus.ids, corpus.texts))) if corpus is not None else None
    image_root = str(Path(pairs.path).parent) if pairs.query_modality == "image" else None
    fields = {"query": pairs.query_field, "positive": pairs.positive_field, "negatives": pairs.negatives_field,
              "doc_id": pairs.doc_id_field}
    joined = dataset.map_batches(_join_batch, batch_format="pyarrow", batch_size=4096,
                                 fn_kwargs={"fields": fields, "corpus": by_id, "image_root": image_root})
    result = TrainingPairs([], [], [], [], [])
    for batch in joined.iter_batches(batch_format="pyarrow", batch_size=None):
        errors = batch.column("error").to_pylist()
        result.rows_read += len(errors)
        result.rejected.update(error for error in errors if error is not None)
        good = [i for i, error in enumerate(errors) if error is None]
        if not good:
            continue
        batch = batch.take(pa.array(good))
        result.queries.extend(batch.column("query").to_pylist())
        result.positives.extend(batch.column("positive").to_pylist())
        result.positive_ids.extend(batch.column("positive_id").to_pylist())
        result.negatives.extend(batch.column("negatives").to_pylist())
        result.negative_ids.extend(batch.column("negative_ids").to_pylist())
    if not result.queries:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in result.rejected.most_common(3))
        raise ConfigError(f"training data {pairs.path}: no usable pairs in {result.rows_read} rows ({reasons})")
    order = _order(result.positive_ids, config.training.seed, pairs.max_pairs)
    return TrainingPairs(
        [result.queries[i] for i in order], [result.positives[i] for i in order],
        [result.positive_ids[i] for i in order], [result.negatives[i] for i in order],
        [result.negative_ids[i] for i in order], result.rows_read, result.rejected,
    )


def _order(keys: list[str], seed: int, limit: int | None) -> np.ndarray:
    """A seeded permutation (independent of the order the read tasks returned rows in), cut to ``limit``."""
    stable = np.argsort(np.array(keys, dtype=object).astype(str), kind="stable")
    order = stable[np.random.default_rng(seed).permutation(len(stable))]
    return order[:limit] if limit is not None else order


def to_dataset(pairs: TrainingPairs, negatives_per_query: int, seed: int):
    """The Ray Dataset Ray Train shards: one row per pair with ``negatives_per_query`` negatives (the
    batch layout needs the same count on every row): a pair with fewer gets other pairs' positives,
    drawn by the seed, as easy negatives."""
    import ray

    from rayprism.trainers.model import document_key

    keys = [document_key(value) for value in pairs.positive_ids]
    rows = {"query": pairs.queries, "positive": pairs.positives, "positive_key": keys}
    if negatives_per_query:
        rng = np.random.default_rng(seed)
        texts, negative_keys = [], []
        for index, given in enumerate(pairs.negatives):
            chosen = list(given[:negatives_per_query])
            chosen_keys = [document_key(value) for value in pairs.negative_ids[index][:negatives_per_query]]
            while len(chosen) < negatives_per_query and len(pairs) > 1:
                other = int(rng.integers(len(pairs)))
                if keys[other] != keys[index]:
                    chosen.append(pairs.positives[other])
                    chosen_keys.append(keys[other])
            texts.append(chosen)
            negative_keys.append(chosen_keys)
        rows["negatives"] = texts
        rows["negative_keys"] = negative_keys
    table = pa.table(rows)
    # a handful of blocks: enough to deal rows to every worker, few enough to keep the split cheap
    return ray.data.from_arrow(table).repartition(max(1, min(16, len(pairs) // 512 or 1))).materialize()


@dataclass
class EvaluationSet:
    queries: list[Any]
    relevant: np.ndarray
    """Each query's relevant document as a row of ``corpus``."""
    corpus: list[str]
    query_modality: str = "text"
    candidates: np.ndarray | None = None
    """For a reranker: each query's candidates, best first, as rows of ``corpus`` (-1 pads a short list)."""

    def __len__(self) -> int:
        return len(self.queries)


def read_evaluation(config: EvaluationConfig, *, candidates_field: str | None = None,
                    candidates: int | None = None) -> EvaluationSet:
    """The held-out queries and their relevant documents; with ``candidates_field``, also each query's
    listed candidate ids (the first ``candidates`` of them) as corpus rows."""
    corpus = read_corpus(config.corpus)
    fmt = "parquet" if config.queries.endswith(".parquet") else "jsonl"
    dataset = read_dataset(config.queries, fmt)
    columns = [config.query_field, config.doc_id_field, *([candidates_field] if candidates_field else [])]
    for name in columns:
        if name not in dataset.columns():
            raise ConfigError(f"evaluation queries {config.queries}: no column {name!r} (columns: {dataset.columns()})")
    queries, relevant, listed, unknown, unknown_candidates = [], [], [], 0, 0
    root = str(Path(config.queries).parent)
    for batch in dataset.select_columns(columns).iter_batches(batch_format="pyarrow", batch_size=None):
        given = batch.column(candidates_field).to_pylist() if candidates_field else None
        for index, (query, doc_id) in enumerate(zip(batch.column(config.query_field).to_pylist(),
                                                    batch.column(config.doc_id_field).to_pylist())):
            row = corpus.row(doc_id)
            if row is None or query is None:
                unknown += 1
                continue
            if config.query_modality == "image" and isinstance(query, str) and not os.path.isabs(query):
                query = os.path.join(root, query)
            queries.append(query)
            relevant.append(row)
            if given is not None:
                rows = [corpus.row(value) for value in (given[index] or [])[:candidates]]
                unknown_candidates += sum(row is None for row in rows)
                listed.append([row for row in rows if row is not None])
            if config.max_queries is not None and len(queries) == config.max_queries:
                break
        if config.max_queries is not None and len(queries) == config.max_queries:
            break
    if unknown:
        raise ConfigError(f"evaluation queries {config.queries}: {unknown} rows have no query or name a document "
                          f"that is not in {config.corpus.path}")
    if unknown_candidates:
        raise ConfigError(f"evaluation queries {config.queries}: {unknown_candidates} ids in {candidates_field!r} "
                          f"are not in {config.corpus.path}")
    result = EvaluationSet(queries, np.array(relevant, dtype=np.int64), corpus.texts, config.query_modality)
    if candidates_field:
        result.candidates = padded_rows(listed, candidates or max(map(len, listed), default=0))
    return result


def padded_rows(lists: list[list[int]], width: int) -> np.ndarray:
    """Lists of rows as one (len(lists), width) int64 array, -1 where a list is short."""
    rows = np.full((len(lists), width), -1, dtype=np.int64)
    for index, values in enumerate(lists):
        rows[index, : len(values[:width])] = values[:width]
    return rows
