"""Search routes over an in-memory mirror: one row numbering, many ways to rank the rows.

A mirror (:mod:`~rayprism.platform.store.mirror`) keeps several representations of the
same documents: dense vectors, BM25 postings, and whatever else a collection asks for
(binary or int8 codes, token matrices, filterable columns). They share one
:class:`RowTable`, so a boolean mask over rows (``allowed``, e.g. from a compiled filter)
means the same documents to every route.

Rows are append-only: writing an id again gives it a new row and retires the old one
(its data stays behind, masked, until the table is compacted). Routes are not
thread-safe on their own; they take the table's lock.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, Iterable

import numpy as np

from rayprism.numba_kernels import dot_topk
from rayprism.platform.store.vocabulary import Hits
from rayprism.platform.vectors import normalised


def grown(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` with room for at least ``rows`` rows (doubling), the new ones zero."""
    if rows <= len(array):
        return array
    bigger = np.zeros((max(rows, 2 * len(array)), *array.shape[1:]), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


class RowTable:
    """Ids ↔ row numbers shared by every route of one mirror, and which rows are alive."""

    def __init__(self, initial_rows: int = 1024):
        self.lock = threading.RLock()
        self.ids: list[Any] = []
        self.row_of: dict[Any, int] = {}
        self.alive = np.zeros(initial_rows, dtype=bool)

    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def used(self) -> int:
        """Rows handed out so far, live or retired: the length every route's arrays cover."""
        return len(self.ids)

    def assign(self, ids: list) -> tuple[np.ndarray, np.ndarray]:
        """New rows for ``ids``, in order; returns (new rows, the rows they retire)."""
        retired = self.remove(ids)
        start = len(self.ids)
        self.alive = grown(self.alive, start + len(ids))
        for offset, row_id in enumerate(ids):
            self.row_of[row_id] = start + offset
        self.ids.extend(ids)
        rows = np.arange(start, start + len(ids), dtype=np.int64)
        self.alive[rows] = True
        return rows, retired

    def remove(self, ids: Iterable) -> np.ndarray:
        """Retire the rows of ``ids`` that exist; returns them."""
        rows = [row for row in (self.row_of.pop(row_id, None) for row_id in ids) if row is not None]
        retired = np.array(rows, dtype=np.int64)
        self.alive[retired] = False
        return retired

    def worth_compacting(self) -> bool:
        dead = self.used - len(self.row_of)
        return dead > max(1024, len(self.row_of))

    def compact(self) -> np.ndarray:
        """Renumber the live rows 0..n-1 in their current order; returns their old row numbers."""
        keep = np.flatnonzero(self.alive[: self.used])
        self.ids = [self.ids[row] for row in keep]
        self.row_of = {row_id: row for row, row_id in enumerate(self.ids)}
        self.alive = np.zeros(max(1024, len(keep)), dtype=bool)
        self.alive[: len(keep)] = True
        return keep

    def eligible(self, allowed: np.ndarray | None) -> np.ndarray:
        """Rows a search may return: alive, and allowed when a mask is given."""
        eligible = self.alive[: self.used]
        return eligible if allowed is None else eligible & allowed[: self.used]

    def best(self, scores: np.ndarray, eligible: np.ndarray, k: int) -> Hits:
        """The ``k`` highest-scoring eligible rows as hits, ties kept in row order."""
        candidates = np.flatnonzero(eligible)
        if len(candidates) > k:
            candidates = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        best = candidates[np.argsort(-scores[candidates], kind="stable")]
        return [(self.ids[row], float(scores[row])) for row in best]


class DenseRoute:
    """Exact inner-product (cosine when normalising) search over one matrix: Milvus Lite searches
    row by row in Python, tens of milliseconds per query on 10k rows; this takes well under one
    (:func:`~rayprism.numba_kernels.dot_topk`, on numba's threads: see rayprism.platform.threads)."""

    def __init__(self, rows: RowTable, dimensions: int, *, normalise: bool):
        self._rows = rows
        self._normalise = normalise
        self._matrix = np.zeros((len(rows.alive), dimensions), dtype=np.float32)

    def prepare(self, vectors: Any) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        vectors = vectors.reshape(len(vectors), -1)
        return normalised(vectors) if self._normalise else vectors

    def write(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Store prepared vectors at ``rows`` (under the table's lock)."""
        self._matrix = grown(self._matrix, self._rows.used)
        self._matrix[rows] = vectors

    def retire(self, rows: np.ndarray) -> None:
        """Nothing to undo: retired rows are masked out of every search."""

    def compact(self, keep: np.ndarray) -> None:
        self._matrix = grown(self._matrix[keep], len(self._rows.alive))

    @property
    def bytes_per_document(self) -> int:
        return self._matrix.shape[1] * self._matrix.itemsize

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The vectors stored at ``rows`` (as prepared: unit length when normalising), a copy (under the table's lock)."""
        return self._matrix[rows]

    def top_k(self, query: Any, k: int, allowed: np.ndarray | None = None) -> Hits:
        vector = self.prepare(np.asarray(query)[None, :])
        with self._rows.lock:
            used = self._rows.used
            ids, scores = dot_topk(self._matrix[:used], vector, k, self._rows.eligible(allowed))
            return [(self._rows.ids[row], float(score)) for row, score in zip(ids[0], scores[0]) if row >= 0]


Analyze = Callable[[str], dict[int, float]]
"""Text to ``{term id: frequency}``, exactly as the collection's BM25 function computes it."""


class _Postings:
    """One term's (row, frequency) pairs: numpy arrays plus a tail of recent appends."""

    __slots__ = ("rows", "frequencies", "tail")

    def __init__(self) -> None:
        self.rows = np.empty(0, dtype=np.int64)
        self.frequencies = np.empty(0, dtype=np.float64)
        self.tail: list[tuple[int, float]] = []

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.tail:
            rows, frequencies = zip(*self.tail)
            self.rows = np.concatenate([self.rows, np.array(rows, dtype=np.int64)])
            self.frequencies = np.concatenate([self.frequencies, np.array(frequencies, dtype=np.float64)])
            self.tail = []
        return self.rows, self.frequencies


class Bm25Route:
    """BM25 over numpy posting arrays, tokenised with the collection's own analyzer.

    Milvus Lite scores BM25 in Python, posting by posting, after a Python pass over every row
    of every segment (35–50 ms per query on 10k documents here); this costs a few vector
    operations per query term. Statistics (document count, average length, document
    frequencies) are global over the collection, as a Milvus server computes them; Milvus
    Lite computes them per segment, so its scores differ slightly once a collection spans
    several segments.
    """

    def __init__(self, rows: RowTable, analyze: Analyze, *, k1: float = 1.5, b: float = 0.75):
        self._rows = rows
        self._analyze = analyze
        self._k1, self._b = k1, b
        self._reset()

    def _reset(self) -> None:
        self._terms: list[dict[int, float] | None] = []  # per row, kept to undo its statistics when retired
        self._lengths = np.zeros(len(self._rows.alive), dtype=np.float64)
        self._postings: dict[int, _Postings] = {}
        self._document_frequency: dict[int, int] = {}
        self._total_length = 0.0

    def prepare(self, texts: list[str]) -> list[dict[int, float]]:
        """Analyse outside the lock: the slow part of a write."""
        return [self._analyze(text or "") for text in texts]

    def write(self, rows: np.ndarray, analysed: list[dict[int, float]]) -> None:
        self._lengths = grown(self._lengths, self._rows.used)
        self._terms.extend([None] * (self._rows.used - len(self._terms)))
        for row, terms in zip(rows.tolist(), analysed):
            self._terms[row] = terms
            length = sum(terms.values())
            self._lengths[row] = length
            self._total_length += length
            for term, frequency in terms.items():
                self._postings.setdefault(term, _Postings()).tail.append((row, frequency))
                self._document_frequency[term] = self._document_frequency.get(term, 0) + 1

    def retire(self, rows: np.ndarray) -> None:
        """Forget retired rows' statistics; their postings stay behind, masked, until compaction."""
        for row in rows.tolist():
            self._total_length -= self._lengths[row]
            for term in self._terms[row]:
                self._document_frequency[term] -= 1

    def compact(self, keep: np.ndarray) -> None:
        live = [self._terms[row] for row in keep.tolist()]
        self._reset()
        self.write(np.arange(len(live), dtype=np.int64), live)

    def top_k(self, query: Any, k: int, allowed: np.ndarray | None = None) -> Hits:
        """Documents sharing no term with the query are left out."""
        terms = self._analyze(query)
        with self._rows.lock:
            documents = len(self._rows)
            if not documents or not terms:
                return []
            used = self._rows.used
            average_length = self._total_length / documents or 1.0
            k1, b = self._k1, self._b
            scores = np.zeros(used, dtype=np.float64)
            for term, weight in terms.items():
                frequency_in_corpus = self._document_frequency.get(term, 0)
                if not frequency_in_corpus:
                    continue
                idf = math.log((documents - frequency_in_corpus + 0.5) / (frequency_in_corpus + 0.5) + 1.0)
                rows, frequencies = self._postings[term].arrays()
                norm = k1 * (1.0 - b + b * self._lengths[rows] / average_length)
                scores[rows] += idf * weight * frequencies * (k1 + 1.0) / (frequencies + norm)
            return self._rows.best(scores, self._rows.eligible(allowed) & (scores > 0), k)
