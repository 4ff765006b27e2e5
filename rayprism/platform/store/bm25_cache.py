"""An in-memory BM25 index over a Milvus Lite collection's text, for unfiltered sparse search.

Milvus Lite scores BM25 in Python, posting by posting, after a Python pass over every
row of every segment (35–50 ms per query on 10k documents here). This index holds the
same term frequencies (it tokenises with the collection's own analyzer) as numpy
posting arrays, so a query costs a few vector operations per query term.

Statistics (document count, average length, document frequencies) are global over the
collection, as a Milvus server computes them; Milvus Lite computes them per segment,
so its scores differ slightly once a collection spans several segments. Like the dense
cache it is exact only where this process is the collection's sole writer.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, Iterable

import numpy as np

from rayprism.platform.store.dense_cache import grown

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


class Bm25Cache:
    def __init__(self, analyze: Analyze, *, k1: float = 1.5, b: float = 0.75, initial_rows: int = 1024):
        self._analyze = analyze
        self._k1, self._b = k1, b
        self._lock = threading.Lock()
        self._reset(initial_rows)

    def _reset(self, capacity: int) -> None:
        self._ids: list[Any] = []
        self._terms: list[dict[int, float]] = []  # per row, kept to undo its statistics on delete
        self._row_of: dict[Any, int] = {}
        self._lengths = np.zeros(capacity, dtype=np.float64)
        self._alive = np.zeros(capacity, dtype=bool)
        self._postings: dict[int, _Postings] = {}
        self._document_frequency: dict[int, int] = {}
        self._total_length = 0.0

    def __len__(self) -> int:
        return len(self._row_of)

    def upsert(self, ids: list, texts: list[str]) -> None:
        analysed = [self._analyze(text or "") for text in texts]  # outside the lock: the slow part
        with self._lock:
            for row_id, terms in zip(ids, analysed):
                self._remove(row_id)
                self._append(row_id, terms)
            self._compact_if_sparse()

    def delete(self, ids: Iterable) -> None:
        with self._lock:
            for row_id in ids:
                self._remove(row_id)
            self._compact_if_sparse()

    def _append(self, row_id: Any, terms: dict[int, float]) -> None:
        row = len(self._ids)
        if row == len(self._alive):
            self._lengths, self._alive = grown(self._lengths), grown(self._alive)
        self._ids.append(row_id)
        self._terms.append(terms)
        self._row_of[row_id] = row
        length = sum(terms.values())
        self._lengths[row] = length
        self._alive[row] = True
        self._total_length += length
        for term, frequency in terms.items():
            self._postings.setdefault(term, _Postings()).tail.append((row, frequency))
            self._document_frequency[term] = self._document_frequency.get(term, 0) + 1

    def _remove(self, row_id: Any) -> None:
        """Forget a row's statistics; its postings stay behind, masked, until compaction."""
        row = self._row_of.pop(row_id, None)
        if row is None:
            return
        self._alive[row] = False
        self._total_length -= self._lengths[row]
        for term in self._terms[row]:
            self._document_frequency[term] -= 1

    def _compact_if_sparse(self) -> None:
        dead = len(self._ids) - len(self._row_of)
        if dead <= max(1024, len(self._row_of)):
            return
        live = [(row_id, self._terms[row]) for row_id, row in self._row_of.items()]
        self._reset(max(1024, len(live)))
        for row_id, terms in live:
            self._append(row_id, terms)

    def top_k(self, text: str, k: int) -> list[tuple[Any, float]]:
        """(id, BM25 score) best first; documents sharing no term with the query are left out."""
        query = self._analyze(text)
        with self._lock:
            documents = len(self._row_of)
            if not documents or not query:
                return []
            used = len(self._ids)
            average_length = self._total_length / documents or 1.0
            k1, b = self._k1, self._b
            scores = np.zeros(used, dtype=np.float64)
            for term, weight in query.items():
                frequency_in_corpus = self._document_frequency.get(term, 0)
                if not frequency_in_corpus:
                    continue
                idf = math.log((documents - frequency_in_corpus + 0.5) / (frequency_in_corpus + 0.5) + 1.0)
                rows, frequencies = self._postings[term].arrays()
                norm = k1 * (1.0 - b + b * self._lengths[rows] / average_length)
                scores[rows] += idf * weight * frequencies * (k1 + 1.0) / (frequencies + norm)
            scores[~self._alive[:used]] = 0.0
            matching = np.flatnonzero(scores > 0)
            if len(matching) > k:
                matching = matching[np.argpartition(-scores[matching], k - 1)[:k]]
            best = matching[np.argsort(-scores[matching], kind="stable")]
            return [(self._ids[row], float(scores[row])) for row in best]
