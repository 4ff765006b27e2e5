"""The token route of a multi-vector collection: every document's token vectors, reranked by MaxSim.

A multi-vector collection's dense field holds each document's MUVERA encoding
(:mod:`~rayprism.platform.codecs.muvera`), whose inner product with a query's encoding
approximates their Chamfer similarity: it finds candidates. This route keeps the token
vectors themselves, back to back in one matrix in row order, so the exact MaxSim of the
candidates is one :func:`~rayprism.numba_kernels.maxsim` call over their rows, no copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rayprism.numba_kernels import maxsim
from rayprism.platform.codecs.muvera import FDEConfig
from rayprism.platform.store.routes import RowTable, grown
from rayprism.platform.store.vocabulary import Hits

TOKENS_KEY = "tokens"
"""The row key carrying a document's token vectors (float32[t, width]) from the serving replica to the
store; never a Milvus field."""


def fde_config(options: dict, token_dimensions: int) -> FDEConfig:
    """The MUVERA encoding of a collection's ``multivector.fde`` options for its model's token width."""
    return FDEConfig(dim=token_dimensions, **options)


class TokenRoute:
    """Token matrices per row: row r owns ``tokens[offsets[r]:offsets[r + 1]]``. Rows are written in the
    order the table hands them out, so each write appends; a retired row's tokens stay until compaction."""

    def __init__(self, rows: RowTable):
        self._rows = rows
        self._tokens = np.zeros((0, 0), dtype=np.float32)
        self._offsets = np.zeros(len(rows.alive) + 1, dtype=np.int64)
        self._written = 0
        """Rows whose tokens are in (all the table has handed out, after each write)."""

    def prepare(self, matrices: list[Any]) -> list[np.ndarray]:
        return [np.ascontiguousarray(matrix, dtype=np.float32) for matrix in matrices]

    def write(self, rows: np.ndarray, matrices: list[np.ndarray]) -> None:
        if len(rows) and rows[0] != self._written:
            raise ValueError(f"token rows are appended in order: expected row {self._written}, got {rows[0]}")
        if not matrices:
            return
        widths = {matrix.shape[1] for matrix in matrices if len(matrix)}
        width = self._tokens.shape[1] or next(iter(widths), 0)
        if widths - {width}:
            raise ValueError(f"token vectors of {sorted(widths)} dimensions where the collection's have {width}")
        if not self._tokens.shape[1]:  # the first tokens written set the width
            self._tokens = np.zeros((0, width), dtype=np.float32)
        position = self._offsets[self._written]
        self._tokens = grown(self._tokens, position + sum(len(matrix) for matrix in matrices))
        self._offsets = grown(self._offsets, self._written + len(matrices) + 1)
        for row, matrix in zip(rows.tolist(), matrices):
            if len(matrix):
                self._tokens[position : position + len(matrix)] = matrix
            position += len(matrix)
            self._offsets[row + 1] = position
        self._written += len(matrices)

    def retire(self, rows: np.ndarray) -> None:
        """Nothing to undo: retired rows are never candidates."""

    def compact(self, keep: np.ndarray) -> None:
        kept = [self._matrix(row) for row in keep.tolist()]
        self._tokens = np.zeros((0, self._tokens.shape[1]), dtype=np.float32)
        self._offsets = np.zeros(len(self._rows.alive) + 1, dtype=np.int64)
        self._written = 0
        self.write(np.arange(len(kept), dtype=np.int64), kept)

    def _matrix(self, row: int) -> np.ndarray:
        return self._tokens[self._offsets[row] : self._offsets[row + 1]]

    @property
    def bytes_per_document(self) -> int:
        """Mean bytes of a live document's token vectors (retired rows not counted)."""
        live = np.flatnonzero(self._rows.alive[: self._written])
        if not len(live):
            return 0
        tokens = int((self._offsets[live + 1] - self._offsets[live]).sum())
        return round(tokens * self._tokens.shape[1] * self._tokens.itemsize / len(live))

    def rerank(self, query_tokens: np.ndarray, candidates: list, k: int) -> Hits:
        """The ``k`` best of ``candidates`` (ids) by exact MaxSim with ``query_tokens``, ties in candidate
        order. Candidates deleted meanwhile, or without token vectors, are left out."""
        query_tokens = np.ascontiguousarray(query_tokens, dtype=np.float32)
        with self._rows.lock:
            rows = [row for row in (self._rows.row_of.get(doc) for doc in candidates) if row is not None]
            if not rows or not len(self._tokens):
                return []
            used = self._written
            scores = maxsim(query_tokens, self._tokens[: self._offsets[used]], self._offsets[: used + 1],
                            np.asarray(rows, dtype=np.int64))
            order = [position for position in np.argsort(-scores, kind="stable") if np.isfinite(scores[position])]
            return [(self._rows.ids[rows[position]], float(scores[position])) for position in order[:k]]

    def saved(self) -> tuple[list, list[np.ndarray]]:
        """The live rows' ids and token matrices (copies), for :class:`~rayprism.platform.store.token_files.TokenFiles`."""
        with self._rows.lock:
            live = np.flatnonzero(self._rows.alive[: self._written]).tolist()
            return [self._rows.ids[row] for row in live], [self._matrix(row).copy() for row in live]
