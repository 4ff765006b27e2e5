"""Writes under way per collection, for files beside a Lite file that must not be saved or
compacted while a write they log is still on its way to Milvus."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator


class WriteCounts:
    """Counts kept under the owner's lock, so the owner's other state changes with them atomically."""

    def __init__(self, lock: threading.Lock):
        self._lock = lock
        self._counts: dict[str, int] = {}

    @contextlib.contextmanager
    def counted(self, name: str, on_start: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Around one write to ``name``; ``on_start`` runs under the lock as it begins."""
        with self._lock:
            on_start()
            self._counts[name] = self._counts.get(name, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._counts[name] -= 1

    def under_way(self, name: str) -> bool:
        """Whether a write to ``name`` is under way; the caller holds the lock."""
        return bool(self._counts.get(name))
