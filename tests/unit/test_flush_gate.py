"""FlushGate: calls share it, a flush waits for calls under way and holds back new ones; FlushScheduler's
cancel waits for a flush under way."""

import threading
import time

from rayprism.platform.store.flushing import FlushGate, FlushScheduler


def test_a_flush_waits_for_calls_and_calls_wait_for_a_flush():
    gate, events = FlushGate(), []
    call_started, flush_waiting = threading.Event(), threading.Event()

    def long_call():
        with gate.call():
            events.append("call 1 starts")
            call_started.set()
            flush_waiting.wait(5)
            time.sleep(0.1)
            events.append("call 1 ends")

    def flush():
        call_started.wait(5)
        flush_waiting.set()
        with gate.flush():
            events.append("flush")
            time.sleep(0.1)
            events.append("flush ends")

    def late_call():
        flush_waiting.wait(5)
        time.sleep(0.05)  # arrives while the flush waits for call 1
        with gate.call():
            events.append("call 2")

    threads = [threading.Thread(target=target) for target in (long_call, flush, late_call)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert events == ["call 1 starts", "call 1 ends", "flush", "flush ends", "call 2"]



def test_cancel_waits_for_a_flush_that_is_running():
    """Dropping a collection cancels its flush; one already running must end first, or Milvus Lite's
    removal of the collection's files races the files the flush writes."""
    started, release, cancelled = threading.Event(), threading.Event(), threading.Event()

    def flush(name: str) -> None:
        started.set()
        release.wait(10)

    scheduler = FlushScheduler(flush, delay_s=0)
    scheduler.schedule("docs")
    assert started.wait(10)
    canceller = threading.Thread(target=lambda: (scheduler.cancel("docs"), cancelled.set()))
    canceller.start()
    assert not cancelled.wait(0.3)  # still flushing: cancel has not returned
    release.set()
    assert cancelled.wait(10)
    canceller.join()
    scheduler.cancel("docs")  # nothing pending or running now: returns at once
