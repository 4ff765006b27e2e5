"""Seal freshly written rows once writes to a collection pause.

Milvus Lite re-indexes unsealed rows for BM25 on every query, which turns a 24 ms
search into seconds after a bulk load; sealing after every batch instead leaves many
small segments (and, in Lite, per-segment BM25 statistics). So each write pushes the
collection's flush a little further into the future.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from rayprism.platform.gates import SharedExclusiveGate

logger = logging.getLogger(__name__)


class FlushScheduler:
    def __init__(self, flush: Callable[[str], None], delay_s: float):
        self._flush = flush
        self._delay_s = delay_s
        self._timers: dict[str, threading.Timer] = {}
        self._running: dict[str, threading.Thread] = {}
        """The timer thread flushing each collection now."""
        self._lock = threading.Lock()

    def schedule(self, name: str) -> None:
        """Flush ``name`` once ``delay_s`` pass without another write."""
        timer = threading.Timer(self._delay_s, self._flush_quietly, args=(name,))
        timer.daemon = True
        with self._lock:
            pending = self._timers.pop(name, None)
            self._timers[name] = timer
        if pending is not None:
            pending.cancel()
        timer.start()

    def cancel(self, name: str) -> None:
        """Drop the pending flush of ``name``, and wait for one that is running: a collection dropped while
        Milvus Lite seals it can fail to drop (its files change under the removal)."""
        with self._lock:
            pending = self._timers.pop(name, None)
            running = self._running.get(name)
        if pending is not None:
            pending.cancel()
        if running is not None and running is not threading.current_thread():
            running.join()

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._timers)

    def _flush_quietly(self, name: str) -> None:
        me = threading.current_thread()
        with self._lock:
            if self._timers.get(name) is me:  # not a newer timer
                del self._timers[name]
            self._running[name] = me
        try:
            self._flush(name)
        except Exception:  # a failed background flush must not kill the timer thread silently
            logger.exception("background flush of %r failed", name)
        finally:
            with self._lock:
                if self._running.get(name) is me:
                    del self._running[name]


class FlushGate(SharedExclusiveGate):
    """Keeps Milvus Lite's reads and writes apart from its flushes.

    Lite answers reads made while a collection flushes with rows missing (measured here: a
    ``get`` of 400 ids during a flush returned 339), so calls wait for a flush to finish, and
    a flush waits for the calls under way; calls share the gate with each other. A flush
    takes 0.5–1.5 s on a few thousand fresh rows and comes only after writes pause.
    Not re-entrant: a call must not open another inside.
    """

    call = SharedExclusiveGate.shared
    flush = SharedExclusiveGate.exclusive
