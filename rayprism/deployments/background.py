"""Batch lines behind online requests: a replica's models serve ``/v1/embeddings`` first.

A batch's lines reach a serving replica through its handle (:mod:`rayprism.jobs.batches`) and are answered by
the same code as an online request, through the same batcher. Left alone, a unit's hundreds of lines would fill
the batcher's queue, and an online request would wait behind them. The lane admits batch lines one at a time
and holds them back by what the replica sees of its online traffic:

- while an online embeddings request is in flight, or one ended less than ``batches.online_gap_s`` ago (online
  requests coming back to back), no batch line enters: the batch pauses;
- within ``batches.quiet_s`` of the last one, batch lines enter in the gaps between online requests, while fewer
  than ``batches.busy_inputs`` of their inputs are waiting or running, so an online request waits for at most one
  small forward pass of them;
- after that, up to ``batches.background_inputs``: a full forward pass, back to back.

A line larger than the share still runs, alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Callable, Iterator

from rayprism.platform.config import BatchesConfig

POLL_S = 0.002
"""How often a held batch line looks again whether it may enter (one waiter per unit being sent)."""


class BackgroundLane:
    def __init__(self, settings: BatchesConfig, clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._clock = clock
        self.online_in_flight = 0
        self.background_inputs = 0
        """Inputs of batch lines admitted and not yet answered."""
        self._last_online = -math.inf

    @contextlib.contextmanager
    def online(self) -> Iterator[None]:
        """Around an online embeddings request: batch lines wait while it runs, and go slowly for a while after."""
        self.online_in_flight += 1
        try:
            yield
        finally:
            self.online_in_flight -= 1
            self._last_online = self._clock()

    def share(self) -> int:
        """How many batch inputs may wait or run now (0: none may enter)."""
        since = self._clock() - self._last_online
        if self.online_in_flight or since < self._settings.online_gap_s:
            return 0
        return self._settings.background_inputs if since >= self._settings.quiet_s else self._settings.busy_inputs

    def may_enter(self, inputs: int) -> bool:
        share = self.share()
        return share > 0 and (self.background_inputs == 0 or self.background_inputs + inputs <= share)

    async def admit(self, inputs: int) -> None:
        """Wait until a batch line of ``inputs`` may enter, and count it in; :meth:`release` counts it out."""
        while not self.may_enter(inputs):
            await asyncio.sleep(POLL_S)
        self.background_inputs += inputs

    def release(self, inputs: int) -> None:
        self.background_inputs -= inputs
