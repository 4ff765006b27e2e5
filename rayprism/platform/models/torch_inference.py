"""The one way every torch backend enters a forward pass."""

from __future__ import annotations

from typing import Any, ContextManager


def inference(torch: Any, threads: int | None) -> ContextManager:
    """``torch.inference_mode()``, after giving the calling thread ``threads`` intra-op threads (None: leave
    the library's default). OpenMP thread counts are per calling thread, so this runs in the thread that
    runs forward (the batcher's), not where the model was loaded."""
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.inference_mode()
