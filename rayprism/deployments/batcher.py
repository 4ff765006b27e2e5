"""Dynamic batching across requests for one encoder.

Each request enqueues its prepared inputs as one unit (batching whole requests,
not items, keeps the queue short). A single worker task drains the queue into
batches bounded by input count and token budget and runs the encoder in a
dedicated thread, so the event loop keeps accepting requests while a batch
computes; whatever arrives meanwhile forms the next batch. The queue is bounded:
beyond ``max_queued_inputs`` a request is refused with 429 instead of growing
memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from rayprism.platform.config import BatchingConfig
from rayprism.platform.errors import OverloadedError
from rayprism.platform.models.base import Prepared


@dataclass(slots=True)
class _Pending:
    items: Sequence[Prepared]
    n_tokens: int
    future: asyncio.Future


BatchObserver = Callable[[int, int], None]
"""Called with (inputs, tokens) of every batch that runs."""


class DynamicBatcher:
    def __init__(
        self,
        run_batch: Callable[[list[Prepared]], np.ndarray],
        config: BatchingConfig,
        *,
        name: str = "encoder",
        on_batch: BatchObserver | None = None,
    ):
        self._run_batch = run_batch
        self._config = config
        self._on_batch = on_batch
        self._pending: deque[_Pending] = deque()
        self._queued_inputs = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rayprism-{name}")

    @property
    def queued_inputs(self) -> int:
        return self._queued_inputs

    async def submit(self, items: Sequence[Prepared]) -> np.ndarray:
        """Vectors for ``items``, in order, once the batch that holds them has run."""
        limit = self._config.max_queued_inputs
        if self._queued_inputs and self._queued_inputs + len(items) > limit:
            raise OverloadedError(f"too many inputs queued ({self._queued_inputs} of {limit}); retry shortly")
        self._start_worker()
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(items, sum(item.n_tokens for item in items), future))
        self._queued_inputs += len(items)
        self._wakeup.set()
        return await future

    def _start_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._drain_forever())

    async def _drain_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait_s = self._config.batch_wait_busy_s
            if not self._pending:  # idle: wait for a request, then briefly for company
                self._wakeup.clear()
                await self._wakeup.wait()
                wait_s = self._config.batch_wait_s
            if wait_s and self._queued_inputs < self._config.max_batch_size:
                await asyncio.sleep(wait_s)
            batch = self._take_batch()
            if not batch:
                continue
            items = [item for pending in batch for item in pending.items]
            if self._on_batch is not None:
                self._on_batch(len(items), sum(pending.n_tokens for pending in batch))
            try:
                vectors = await loop.run_in_executor(self._executor, self._run_batch, items)
            except Exception as error:  # every waiter learns of the failure; the worker lives on
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            offset = 0
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_result(vectors[offset : offset + len(pending.items)])
                offset += len(pending.items)

    def _take_batch(self) -> list[_Pending]:
        """Oldest requests first, within the count and token budget; always at least one."""
        batch: list[_Pending] = []
        inputs = tokens = 0
        while self._pending:
            head = self._pending[0]
            if head.future.done():  # the caller went away: drop its work
                self._pending.popleft()
                self._queued_inputs -= len(head.items)
                continue
            fits = (
                inputs + len(head.items) <= self._config.max_batch_size
                and tokens + head.n_tokens <= self._config.max_batch_tokens
            )
            if batch and not fits:
                break
            self._pending.popleft()
            self._queued_inputs -= len(head.items)
            batch.append(head)
            inputs += len(head.items)
            tokens += head.n_tokens
        return batch

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
