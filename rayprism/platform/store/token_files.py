"""Multi-vector collections' token vectors in files beside a Milvus Lite file.

Milvus keeps a multi-vector document's MUVERA encoding; its token vectors have no Milvus
field to live in (Lite has no vector arrays), and the store has no model to compute them
again, so these files are their only copy. Each write is appended as a segment before it
reaches Milvus (ids with their tokens, or deleted ids), and a restart replays the segments
in order: the last word on an id wins. Once writes pause and the log has grown to twice
its oldest segment, the live tokens replace every segment (the mirror's copy, which has
seen every write), so the files stay within about twice the live tokens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from rayprism.platform.store.write_counts import WriteCounts

logger = logging.getLogger(__name__)

Snapshot = Callable[[], "tuple[list, list[np.ndarray]] | None"]
"""The live documents' ids and token matrices, or None when they are not all known."""


class TokenFiles:
    """``<directory>/<collection>/<sequence>.npz``: segments of ``ids``, ``offsets`` and ``tokens``
    (a write) or ``deleted`` (a delete), replayed in sequence order."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._lock = threading.Lock()
        self._writes = WriteCounts(self._lock)

    def _segments(self, name: str) -> list[Path]:
        folder = self.directory / name
        return sorted(folder.glob("*.npz")) if folder.exists() else []

    def _next_path(self, name: str) -> Path:
        segments = self._segments(name)
        sequence = int(segments[-1].stem) + 1 if segments else 0
        return self.directory / name / f"{sequence:012d}.npz"

    def _write_segment(self, name: str, arrays: dict[str, np.ndarray]) -> Path:
        """A new last segment, complete or absent (written aside, then renamed)."""
        path = self._next_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)
        return path

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[None]:
        """Around a write that is logged here, then made in Milvus and the mirror: no compaction meanwhile."""
        with self._writes.counted(name):
            yield

    def append(self, name: str, ids: list, matrices: list[np.ndarray]) -> None:
        arrays = _packed(ids, matrices)
        with self._lock:
            self._write_segment(name, arrays)

    def delete(self, name: str, ids: list) -> None:
        with self._lock:
            self._write_segment(name, {"deleted": np.asarray(ids)})

    def load(self, name: str) -> dict:
        """Every document's token matrix by id, as the log last wrote it."""
        found: dict = {}
        for path in self._segments(name):
            with np.load(path, allow_pickle=False) as segment:
                if "deleted" in segment.files:
                    for doc in segment["deleted"].tolist():
                        found.pop(doc, None)
                    continue
                offsets, tokens = segment["offsets"], segment["tokens"]
                for index, doc in enumerate(segment["ids"].tolist()):
                    found[doc] = tokens[offsets[index] : offsets[index + 1]]
        return found

    def compact_if_grown(self, name: str, snapshot: Snapshot) -> bool:
        """Replace the segments with ``snapshot()`` when no write is under way and the segments after
        the oldest add up to at least its size."""
        with self._lock:
            segments = self._segments(name)
            if self._writes.under_way(name) or len(segments) < 2:
                return False
            if sum(path.stat().st_size for path in segments[1:]) < segments[0].stat().st_size:
                return False
            saved = snapshot()
            if saved is None:
                return False
            kept = self._write_segment(name, _packed(*saved))
            for path in segments:
                path.unlink()
            logger.info("token vectors of %r compacted: %d segments into %s", name, len(segments), kept.name)
            return True

    def drop(self, name: str) -> None:
        with self._lock:
            shutil.rmtree(self.directory / name, ignore_errors=True)


def _packed(ids: list, matrices: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A write's segment: the matrices back to back, document i owning ``tokens[offsets[i]:offsets[i + 1]]``."""
    width = next((matrix.shape[1] for matrix in matrices if len(matrix)), 0)
    offsets = np.concatenate([[0], np.cumsum([len(matrix) for matrix in matrices])]).astype(np.int64)
    tokens = np.zeros((int(offsets[-1]), width), dtype=np.float32)
    for index, matrix in enumerate(matrices):
        if len(matrix):
            tokens[offsets[index] : offsets[index + 1]] = matrix
    return {"ids": np.asarray(ids), "offsets": offsets, "tokens": tokens}
