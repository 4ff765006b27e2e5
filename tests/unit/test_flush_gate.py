"""FlushGate: calls share it, a flush waits for calls under way and holds back new ones."""

import threading
import time

from rayprism.platform.store.flushing import FlushGate


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

