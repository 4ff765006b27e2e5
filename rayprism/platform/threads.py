"""One BLAS thread for the small products of a single search.

numba's OpenMP threads and OpenBLAS's threads both keep spinning for a while after their
parallel work is done. A search that alternates a numpy product (a query's projection, one
matrix-vector scan) with a numba kernel (partitioning, MaxSim, a top-k) then runs each step
while the other pool's threads still hold the cores: on 2 cores one MUVERA query encoding took
10.6 ms this way against 0.17 ms with the product on one thread (docs/benchmarks.md). The
products of one query are small; several queries in flight still use every core.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    """Found once: looking up the loaded BLAS libraries costs far more than limiting them."""
    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS runs on the calling thread inside the block (restored after it)."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
