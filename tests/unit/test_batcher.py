"""The dynamic batcher, driven by a fake-free encoder stand-in: a function over token lists.

Concurrency is gated by events, not sleeps, so the tests are deterministic on a busy machine.
"""

import asyncio
import threading

import numpy as np
import pytest

from rayprism.deployments.batcher import DynamicBatcher
from rayprism.platform.config import BatchingConfig
from rayprism.platform.errors import OverloadedError
from rayprism.platform.models.base import Prepared


def items(*values: int, tokens: int = 1) -> list[Prepared]:
    return [Prepared(value, tokens) for value in values]


class Recorder:
    """Runs batches like an encoder would (one row per input) and records their sizes.

    ``gate`` holds the first batch until the test releases it, so later requests queue up.
    """

    def __init__(self):
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, batch: list[Prepared]) -> np.ndarray:
        self.batches.append([item.payload for item in batch])
        self.started.set()
        self.gate.wait(10)
        return np.array([[item.payload, item.payload * 10] for item in batch], dtype=np.float32)


def config(**overrides) -> BatchingConfig:
    return BatchingConfig(**{"batch_wait_s": 0, **overrides})


async def hold_first_batch(batcher: DynamicBatcher, recorder: Recorder) -> asyncio.Task:
    recorder.gate.clear()
    first = asyncio.ensure_future(batcher.submit(items(0)))
    await asyncio.to_thread(recorder.started.wait, 10)
    return first


def test_each_request_gets_its_own_rows_in_order():
    async def scenario():
        recorder = Recorder()
        batcher = DynamicBatcher(recorder, config())
        first = await hold_first_batch(batcher, recorder)
        requests = [items(*range(start, start + size)) for start, size in [(1, 3), (4, 1), (5, 2)]]
        waiting = [asyncio.ensure_future(batcher.submit(request)) for request in requests]
        await asyncio.sleep(0)
        recorder.gate.set()
        results = await asyncio.gather(first, *waiting)
        batcher.close()
        return recorder, results

    recorder, results = asyncio.run(scenario())
    assert recorder.batches == [[0], [1, 2, 3, 4, 5, 6]]  # the three queued requests ran as one batch
    for request_result, expected in zip(results, [[0], [1, 2, 3], [4], [5, 6]]):
        assert request_result[:, 0].tolist() == expected


@pytest.mark.parametrize(
    "limits, sizes, expected_batches",
    [
        ({"max_batch_size": 4}, [2, 2, 2], [[2, 2], [2]]),
        ({"max_batch_tokens": 30}, [1, 1, 1], [[1, 1, 1]]),
        ({"max_batch_tokens": 25}, [1, 1, 1], [[1, 1], [1]]),
        ({"max_batch_size": 2}, [5, 1], [[2], [1], [2], [1]]),  # a big request is chunked and shares the encoder
        ({"max_batch_tokens": 5}, [2, 1], [[1], [1], [1]]),  # an input over the token budget still runs, alone
    ],
)
def test_batches_respect_count_and_token_budgets(limits, sizes, expected_batches):
    async def scenario():
        recorder = Recorder()
        batcher = DynamicBatcher(recorder, config(**limits))
        first = await hold_first_batch(batcher, recorder)
        waiting = [
            asyncio.ensure_future(batcher.submit(items(*[100 * number + row for row in range(size)], tokens=10)))
            for number, size in enumerate(sizes, start=1)
        ]
        await asyncio.sleep(0)
        recorder.gate.set()
        await asyncio.gather(first, *waiting)
        batcher.close()
        return recorder.batches[1:]

    batches = asyncio.run(scenario())
    request_sizes = [[sum(1 for p in batch if p // 100 == n) for n in dict.fromkeys(p // 100 for p in batch)] for batch in batches]
    assert request_sizes == expected_batches


def test_a_full_queue_refuses_with_overload():
    async def scenario():
        recorder = Recorder()
        batcher = DynamicBatcher(recorder, config(max_queued_inputs=3))
        first = await hold_first_batch(batcher, recorder)
        queued = asyncio.ensure_future(batcher.submit(items(1, 2, 3)))
        await asyncio.sleep(0)
        assert batcher.queued_inputs == 3
        with pytest.raises(OverloadedError) as refused:
            await batcher.submit(items(4))
        recorder.gate.set()
        await asyncio.gather(first, queued)
        after = await batcher.submit(items(5))  # capacity is back once the queue drains
        batcher.close()
        return refused.value, after

    error, after = asyncio.run(scenario())
    assert error.http_status == 429 and error.retriable and error.retry_after_s >= 1
    assert after[:, 0].tolist() == [5]


def test_a_failing_batch_fails_its_requests_and_the_batcher_carries_on():
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("device fell over")
        return np.zeros((len(batch), 2), dtype=np.float32)

    async def scenario():
        batcher = DynamicBatcher(flaky, config())
        with pytest.raises(RuntimeError, match="device fell over"):
            await batcher.submit(items(1))
        result = await batcher.submit(items(1, 2))
        batcher.close()
        return result

    assert asyncio.run(scenario()).shape == (2, 2)


def test_a_cancelled_request_is_dropped_before_it_runs():
    async def scenario():
        recorder = Recorder()
        batcher = DynamicBatcher(recorder, config())
        first = await hold_first_batch(batcher, recorder)
        abandoned = asyncio.ensure_future(batcher.submit(items(7)))
        kept = asyncio.ensure_future(batcher.submit(items(8)))
        await asyncio.sleep(0)
        abandoned.cancel()
        recorder.gate.set()
        await asyncio.gather(first, kept)
        batcher.close()
        return recorder.batches, batcher.queued_inputs

    batches, queued = asyncio.run(scenario())
    assert batches == [[0], [8]] and queued == 0


def test_observers_see_every_batch_and_each_requests_wait():
    seen, waits = [], []

    async def scenario():
        batcher = DynamicBatcher(Recorder(), config(batch_wait_s=0.2), on_wait=waits.append,
                                 on_batch=lambda n, tokens, seconds: seen.append((n, tokens, seconds)))
        await asyncio.gather(batcher.submit(items(1, 2, tokens=5)), batcher.submit(items(3, tokens=5)))
        batcher.close()

    asyncio.run(scenario())
    assert [(n, tokens) for n, tokens, _ in seen] == [(3, 15)] and seen[0][2] >= 0
    assert len(waits) == 2 and all(wait >= 0.2 for wait in waits)  # both waited for company


def test_a_busy_encoder_does_not_wait_for_company():
    """``batch_wait_s`` is for an idle encoder: what queued behind a running batch runs right after it."""

    async def scenario():
        recorder = Recorder()
        batcher = DynamicBatcher(recorder, config(batch_wait_s=1.0))
        first = await hold_first_batch(batcher, recorder)  # waited 1 s for company: the encoder was idle
        recorder.started.clear()
        second = asyncio.ensure_future(batcher.submit(items(7)))
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        released = loop.time()
        recorder.gate.set()
        await asyncio.to_thread(recorder.started.wait, 10)
        started_after_s = loop.time() - released
        await asyncio.gather(first, second)
        batcher.close()
        return started_after_s

    assert asyncio.run(scenario()) < 0.5


def test_a_big_request_shares_the_encoder_with_later_small_ones():
    """A request of many inputs runs as chunks; a one-input request arriving meanwhile waits for one batch, not all."""

    async def scenario():
        recorder = Recorder()
        batcher = DynamicBatcher(recorder, config(max_batch_size=4))
        first = await hold_first_batch(batcher, recorder)
        big = asyncio.ensure_future(batcher.submit(items(*range(100, 120))))
        small = asyncio.ensure_future(batcher.submit(items(7)))
        await asyncio.sleep(0)
        recorder.gate.set()
        results = await asyncio.gather(first, big, small)
        batcher.close()
        return recorder.batches, results

    batches, (_, big, small) = asyncio.run(scenario())
    assert big[:, 0].tolist() == list(range(100, 120)) and small[:, 0].tolist() == [7]
    assert batches[1] == [100, 101, 102, 103] and batches[2] == [7]  # the very next batch after big's first chunk
    assert all(len(batch) <= 4 for batch in batches)


def test_a_cancelled_big_request_loses_its_chunks_that_have_not_run():
    async def scenario():
        recorder = Recorder()
        batcher = DynamicBatcher(recorder, config(max_batch_size=2))
        first = await hold_first_batch(batcher, recorder)
        big = asyncio.ensure_future(batcher.submit(items(*range(10, 20))))
        await asyncio.sleep(0)
        assert batcher.queued_inputs == 10
        big.cancel()
        recorder.gate.set()
        await first
        after = await batcher.submit(items(5))
        batcher.close()
        return recorder.batches, after, batcher.queued_inputs

    batches, after, queued = asyncio.run(scenario())
    assert batches == [[0], [5]] and after[:, 0].tolist() == [5] and queued == 0
