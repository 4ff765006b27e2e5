"""Compressed dense tiers: a collection's vectors held in memory only as binary or int8 codes.

A search ranks every row on its codes with :mod:`rayprism.numba_kernels` (Hamming distance
over sign bits, or inner products over int8 buckets), keeps the best ``k × rescore_multiplier``,
and rescores those with the float vectors read back from Milvus: the hits' scores are exact,
and the memory a mirror spends on vectors drops 32× (binary) or 4× (int8). On a Milvus
server the binary codes are a ``BINARY_VECTOR`` field of the collection, searched there.

A Lite store keeps each compressed collection's codes in a file beside the Lite file
(:class:`CodeFiles`), so a restart reads them back instead of encoding every vector again.
A write marks the file stale before it reaches Milvus and a save after writes pause clears
the mark, so a crash in between (or a batch job writing the Lite file) costs a re-encode,
never wrong codes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from rayprism.numba_kernels import hamming_topk, int8_dot_topk, pack_bits
from rayprism.platform.codecs.quantize import calibrate_int8, to_int8
from rayprism.platform.store.routes import RowTable, grown
from rayprism.platform.store.vocabulary import Hits
from rayprism.platform.store.write_counts import WriteCounts
from rayprism.platform.vectors import normalised

logger = logging.getLogger(__name__)

FetchVectors = Callable[[list], dict[Any, Any]]
"""Ids to their float vectors, as stored in Milvus (missing ids: deleted meanwhile)."""


def encode_bits(vectors: np.ndarray) -> np.ndarray:
    """Sign bits packed eight to a byte: the binary tier's codes, in memory and in Milvus alike."""
    return pack_bits(np.ascontiguousarray(vectors, dtype=np.float32))


@dataclass
class SavedCodes:
    """One collection's codes as last saved: ``codes[i]`` belongs to ``ids[i]``."""

    ids: list
    codes: np.ndarray
    ranges: np.ndarray | None


class CodeRoute:
    """The dense route of a compressed mirror: codes per row, a coarse top-k over them, and
    exact rescoring of the candidates with vectors fetched from Milvus."""

    def __init__(self, rows: RowTable, dimensions: int, kind: str, rescore_multiplier: int, *, normalise: bool,
                 ranges: list | None = None):
        """``ranges``: an int8 tier's buckets as its config gives them (else calibrated on the first write)."""
        if kind == "binary" and dimensions % 8:
            raise ValueError(f"binary codes need a multiple of 8 dimensions, got {dimensions}")
        self._rows = rows
        self.kind = kind
        self.rescore_multiplier = rescore_multiplier
        self._normalise = normalise
        width, dtype = (dimensions // 8, np.uint8) if kind == "binary" else (dimensions, np.int8)
        self._codes = np.zeros((len(rows.alive), width), dtype=dtype)
        self.ranges: np.ndarray | None = None if ranges is None else np.asarray(ranges, dtype=np.float32)
        self._calibrating = threading.Lock()

    def prepare(self, vectors: Any) -> np.ndarray:
        """Codes for float vectors (outside the table's lock: the costly part of a write)."""
        vectors = normalised(vectors) if self._normalise else np.asarray(vectors, dtype=np.float32)
        vectors = vectors.reshape(len(vectors), -1)
        if self.kind == "binary":
            return encode_bits(vectors)
        return to_int8(vectors, self._ranges_for(vectors))

    def _ranges_for(self, vectors: np.ndarray) -> np.ndarray:
        """The int8 buckets, calibrated once on the first vectors written (later ones outside are clipped)."""
        with self._calibrating:
            if self.ranges is None and len(vectors):
                sample = vectors if len(vectors) > 1 else np.vstack((vectors, -vectors))  # symmetric around one vector
                self.ranges = calibrate_int8(sample)
            return self.ranges

    def write(self, rows: np.ndarray, codes: np.ndarray) -> None:
        self._codes = grown(self._codes, self._rows.used)
        self._codes[rows] = codes

    def retire(self, rows: np.ndarray) -> None:
        """Nothing to undo: retired rows are masked out of every search."""

    def compact(self, keep: np.ndarray) -> None:
        self._codes = grown(self._codes[keep], len(self._rows.alive))

    @property
    def bytes_per_document(self) -> int:
        return self._codes.shape[1]

    def top_k(self, query: Any, k: int, allowed: np.ndarray | None = None) -> Hits:
        """Coarse hits by code alone: higher is better (negated Hamming distance, or the int8 score)."""
        vector = (normalised if self._normalise else np.asarray)(np.asarray(query, dtype=np.float32)[None, :])
        with self._rows.lock:
            used = self._rows.used
            eligible = self._rows.eligible(allowed)
            if self.kind == "binary":
                ids, distances = hamming_topk(self._codes[:used], encode_bits(vector), k, eligible)
                scores = -distances.astype(np.float64)
            elif self.ranges is None:  # nothing written yet
                return []
            else:
                ids, scores = int8_dot_topk(self._codes[:used], self.ranges, vector.astype(np.float32), k, eligible)
            return [(self._rows.ids[row], float(score)) for row, score in zip(ids[0], scores[0]) if row >= 0]

    def rescore(self, query: Any, candidates: list, k: int, fetch: FetchVectors) -> Hits:
        """The ``k`` best of ``candidates`` by exact score against their float vectors."""
        return exact_rescore(query, candidates, k, fetch, normalise=self._normalise)

    def saved(self) -> SavedCodes:
        """The live rows' codes, for :class:`CodeFiles` (under the table's lock)."""
        with self._rows.lock:
            live = np.flatnonzero(self._rows.alive[: self._rows.used])
            return SavedCodes([self._rows.ids[row] for row in live], self._codes[live].copy(), self.ranges)


def exact_rescore(query: Any, candidates: list, k: int, fetch: FetchVectors, *, normalise: bool) -> Hits:
    """The ``k`` best ``candidates`` (ids) by inner product (cosine when normalising) with ``query``."""
    if not candidates:
        return []
    vectors = fetch(candidates)
    found = [doc for doc in candidates if doc in vectors]
    if not found:
        return []
    matrix = np.asarray([vectors[doc] for doc in found], dtype=np.float32)
    vector = np.asarray(query, dtype=np.float32)[None, :]
    if normalise:
        matrix, vector = normalised(matrix), normalised(vector)
    scores = matrix @ vector[0]
    best = np.argsort(-scores, kind="stable")[:k]
    return [(found[row], float(scores[row])) for row in best]


class CodeFiles:
    """Compressed collections' codes in files beside a Lite file, and whether each is current.

    ``<name>.npz`` holds the codes; ``<name>.stale`` exists from the first write after a
    save until the next save, so codes that missed a write are never read back.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self._lock = threading.Lock()
        self._writes = WriteCounts(self._lock)
        self._marked: set[str] = set()

    def _path(self, name: str, suffix: str) -> Path:
        return self.directory / f"{name}{suffix}"

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[None]:
        """Around a write to ``name``: the saved codes are stale from before it starts."""
        with self._writes.counted(name, lambda: self._mark_stale(name)):
            yield

    def _mark_stale(self, name: str) -> None:
        if name not in self._marked:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._path(name, ".stale").touch()
            self._marked.add(name)

    def save(self, name: str, snapshot: Callable[[], SavedCodes | None], *, always: bool = False) -> bool:
        """Save ``snapshot()`` when writes to ``name`` are stale on disk (or ``always``, after
        codes were encoded afresh) and no write is under way."""
        with self._lock:
            if not (always or name in self._marked) or self._writes.under_way(name):
                return False
            saved = snapshot()
            if saved is None:
                return False
            temporary = self._path(name, ".npz.tmp")
            with temporary.open("wb") as file:
                np.savez(file, ids=np.asarray(saved.ids), codes=saved.codes,
                         ranges=saved.ranges if saved.ranges is not None else np.empty(0, dtype=np.float32))
            os.replace(temporary, self._path(name, ".npz"))
            self._path(name, ".stale").unlink(missing_ok=True)
            self._marked.discard(name)
            return True

    def load(self, name: str) -> SavedCodes | None:
        """The saved codes, or None when there are none or they missed a write."""
        path = self._path(name, ".npz")
        if self._path(name, ".stale").exists() or not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                ranges = saved["ranges"]
                return SavedCodes(saved["ids"].tolist(), saved["codes"], ranges if ranges.size else None)
        except (OSError, ValueError, KeyError) as error:
            logger.warning("cannot read the saved codes of %r (%s); encoding them again", name, error)
            return None

    def drop(self, name: str) -> None:
        with self._lock:
            for suffix in (".npz", ".stale", ".npz.tmp"):
                self._path(name, suffix).unlink(missing_ok=True)
            self._marked.discard(name)
