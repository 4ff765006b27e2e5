"""Thread pools kept off each other's cores: one BLAS thread for a search's small products, and no
tokenizer pool beside torch's.

numba's OpenMP threads and OpenBLAS's threads both keep spinning for a while after their
parallel work is done. A search that alternates a numpy product (a query's projection, one
matrix-vector scan) with a numba kernel (partitioning, MaxSim, a top-k) then runs each step
while the other pool's threads still hold the cores: on 2 cores one MUVERA query encoding took
10.6 ms this way against 0.17 ms with the product on one thread (docs/benchmarks.md). The
products of one query are small; several queries in flight still use every core.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from threadpoolctl import ThreadpoolController

from rayprism.platform.constants import TOKENIZERS_PARALLELISM_VARIABLE


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    """Found once: looking up the loaded BLAS libraries costs far more than limiting them."""
    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS runs on the calling thread inside the block (restored after it)."""
    with _controller().limit(limits=1, user_api="blas"):
        yield


def quiet_tokenizers() -> None:
    """The Rust tokenizer's thread pool off, unless the user chose otherwise: it fights torch's threads
    for the same cores (32-sentence requests served at 0.67x instead of 0.86x of bare encode). Call it
    before a tokenizer loads, in every process that loads one."""
    os.environ.setdefault(TOKENIZERS_PARALLELISM_VARIABLE, "false")
