"""Dynamic batching across requests for one encoder.

Each request enqueues its prepared inputs as a few chunks that each fit one batch
(batching whole requests, not items, keeps the queue short). A single worker task
drains the queue into batches bounded by input count and token budget and runs the
encoder in a dedicated thread, so the event loop keeps accepting requests while a
batch computes; whatever arrives meanwhile forms the next batch.

Fairness: a batch takes at most one chunk per request per round, requests that have had
fewer chunks run first, so a request of thousands of inputs shares the encoder with
one-sentence requests instead of holding it for minutes: a newcomer waits for the batch
that is running, not for the big request. A request whose caller went away (its future
cancelled) loses its chunks that have not run.

The queue is bounded: beyond ``max_queued_inputs`` a request is refused with 429
before any work is spent on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from rayprism.platform.config import BatchingConfig
from rayprism.platform.errors import OverloadedError
from rayprism.platform.models.base import Prepared


@dataclass(eq=False)
class _Request:
    chunks: deque[Sequence[Prepared]]
    """Inputs not yet run, each chunk small enough for one batch."""
    future: asyncio.Future
    done: list[np.ndarray] = field(default_factory=list)
    """Vectors of the chunks that ran, in order."""
    served: int = 0
    """Chunks taken so far: the fewer, the sooner its next one."""
    arrived: float = field(default_factory=time.perf_counter)

    @property
    def queued_inputs(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)


BatchObserver = Callable[[int, int, float], None]
"""Called with (inputs, tokens, seconds) of every batch that ran."""
WaitObserver = Callable[[float], None]
"""Called with the seconds a request waited for its first batch."""


class DynamicBatcher:
    def __init__(
        self,
        run_batch: Callable[[list[Prepared]], np.ndarray],
        config: BatchingConfig,
        *,
        name: str = "encoder",
        on_batch: BatchObserver | None = None,
        on_wait: WaitObserver | None = None,
    ):
        self._run_batch = run_batch
        self._config = config
        self._on_batch = on_batch
        self._on_wait = on_wait
        self._requests: deque[_Request] = deque()
        self._queued_inputs = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rayprism-{name}")

    @property
    def queued_inputs(self) -> int:
        return self._queued_inputs

    def check_capacity(self, inputs: int) -> None:
        """Refuse a request of ``inputs`` when the queue has no room: call it before spending work on one."""
        limit = self._config.max_queued_inputs
        if self._queued_inputs and self._queued_inputs + inputs > limit:
            raise OverloadedError(f"too many inputs queued ({self._queued_inputs} of {limit}); retry shortly")

    async def submit(self, items: Sequence[Prepared]) -> np.ndarray:
        """Vectors for ``items``, in order, once the batches that hold them have run."""
        self.check_capacity(len(items))
        self._start_worker()
        request = _Request(deque(self._chunks(items)), asyncio.get_running_loop().create_future())
        self._requests.append(request)
        self._queued_inputs += len(items)
        self._wakeup.set()
        return await request.future

    def _chunks(self, items: Sequence[Prepared]) -> list[Sequence[Prepared]]:
        """Consecutive runs of ``items`` within the batch budgets (an oversized input makes a chunk alone)."""
        chunks: list[Sequence[Prepared]] = []
        start = tokens = 0
        for index, item in enumerate(items):
            size = index - start
            if size and (size == self._config.max_batch_size or tokens + item.n_tokens > self._config.max_batch_tokens):
                chunks.append(items[start:index])
                start, tokens = index, 0
            tokens += item.n_tokens
        chunks.append(items[start:])
        return chunks

    def _start_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._drain_forever())

    async def _drain_forever(self) -> None:
        loop = asyncio.get_running_loop()
        idle = True  # nothing has run yet
        while True:
            if not self._requests:
                self._wakeup.clear()
                await self._wakeup.wait()
                idle = True
            # an idle encoder waits briefly for company; a busy one takes what queued while it ran
            wait_s = self._config.batch_wait_s if idle else self._config.batch_wait_busy_s
            idle = False
            if wait_s and self._queued_inputs < self._config.max_batch_size:
                await asyncio.sleep(wait_s)
            batch = self._take_batch()
            if not batch:
                continue
            items = [item for _, chunk in batch for item in chunk]
            started = time.perf_counter()
            if self._on_wait is not None:
                for request in {request for request, _ in batch if not request.done}:
                    self._on_wait(started - request.arrived)
            try:
                vectors = await loop.run_in_executor(self._executor, self._run_batch, items)
            except Exception as error:  # every waiter learns of the failure; the worker lives on
                for request, _ in batch:
                    self._fail(request, error)
                continue
            if self._on_batch is not None:
                self._on_batch(len(items), sum(item.n_tokens for item in items), time.perf_counter() - started)
            offset = 0
            for request, chunk in batch:
                request.done.append(vectors[offset : offset + len(chunk)])
                offset += len(chunk)
                if not request.chunks and not request.future.done():
                    request.future.set_result(np.concatenate(request.done) if len(request.done) > 1 else request.done[0])

    def _take_batch(self) -> list[tuple[_Request, Sequence[Prepared]]]:
        """Chunks round-robin over the waiting requests, within the count and token budget; at least one."""
        batch: list[tuple[_Request, Sequence[Prepared]]] = []
        inputs = tokens = 0
        taking = True
        while taking:
            taking = False
            for request in sorted(self._requests, key=lambda waiting: waiting.served):  # stable: oldest first
                if request.future.done():  # the caller went away, or an earlier chunk failed: drop the rest
                    self._drop(request)
                    continue
                chunk = request.chunks[0]
                chunk_tokens = sum(item.n_tokens for item in chunk)
                fits = (inputs + len(chunk) <= self._config.max_batch_size
                        and tokens + chunk_tokens <= self._config.max_batch_tokens)
                if batch and not fits:
                    continue
                request.chunks.popleft()
                request.served += 1
                self._queued_inputs -= len(chunk)
                batch.append((request, chunk))
                inputs += len(chunk)
                tokens += chunk_tokens
                if request.chunks:
                    taking = True
                else:
                    self._requests.remove(request)
        return batch

    def _drop(self, request: _Request) -> None:
        self._requests.remove(request)
        self._queued_inputs -= request.queued_inputs
        request.chunks.clear()

    def _fail(self, request: _Request, error: Exception) -> None:
        if not request.future.done():
            request.future.set_exception(error)
        if request.chunks:
            self._drop(request)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
