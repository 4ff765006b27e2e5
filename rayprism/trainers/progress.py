"""Progress from rank 0 to the driver: a tiny actor the driver drains while ``fit()`` runs.

Worker output stays in Ray's log folder by default (``start_ray`` keeps the terminal quiet), so
the lines a user should see (per-step loss, samples/s, ETA, evaluation scores, restarts) travel
through this actor instead; it works the same on a cluster, where workers share no terminal.
"""

from __future__ import annotations

import threading
from typing import Callable


class ProgressLog:
    """Ray actor (``num_cpus=0``): records posted by workers, taken by the driver."""

    def __init__(self):
        self._records: list[dict] = []

    def post(self, record: dict) -> None:
        self._records.append(record)

    def drain(self) -> list[dict]:
        records, self._records = self._records, []
        return records


class ProgressPrinter:
    """Prints every record's message from a driver thread until stopped; keeps them all."""

    def __init__(self, log, echo: Callable[[str], None], interval_s: float = 0.5):
        self._log = log
        self._echo = echo
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rayprism-train-progress", daemon=True)
        self.records: list[dict] = []

    def __enter__(self) -> ProgressPrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._print()  # what arrived after the last poll

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._print()

    def _print(self) -> None:
        import ray

        try:
            records = ray.get(self._log.drain.remote(), timeout=30)
        except Exception:  # the actor is gone with a dying Ray; nothing more to print
            return
        for record in records:
            self.records.append(record)
            self._echo(record["message"])
