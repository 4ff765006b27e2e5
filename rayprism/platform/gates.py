"""A gate that many holders share and one holder takes alone (a writer-preferring readers-writer lock)."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator


class SharedExclusiveGate:
    """``shared()`` blocks run together; ``exclusive()`` waits for the shared ones under way and keeps
    new ones out until it ends (they wait, so a busy gate still lets the exclusive holder in).
    Not re-entrant: a holder must not open the gate again inside."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive)
            self._shared += 1
        try:
            yield
        finally:
            with self._condition:
                self._shared -= 1
                self._condition.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive)
            self._exclusive = True  # shared holders arriving from now on wait
            self._condition.wait_for(lambda: not self._shared)
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()
