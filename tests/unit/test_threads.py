"""one_blas_thread limits numpy's BLAS inside the block only, and the per-query search steps use it."""

import numpy as np
from threadpoolctl import threadpool_info

from rayprism.platform.codecs.muvera import FDEConfig, encode_queries, encode_query
from rayprism.platform.threads import one_blas_thread


def blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_blas_runs_on_one_thread_inside_the_block_and_as_before_after_it():
    before = blas_threads()
    with one_blas_thread():
        assert blas_threads() == {1}
    assert blas_threads() == before


def test_an_exception_inside_the_block_still_restores_the_threads():
    before = blas_threads()
    try:
        with one_blas_thread():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert blas_threads() == before


def test_one_query_encoding_equals_the_batch_encoding_and_leaves_the_threads_alone():
    cfg = FDEConfig(dim=32, k_sim=3, d_proj=8, r_reps=4)
    tokens = np.random.default_rng(0).standard_normal((7, 32), dtype=np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    before = blas_threads()
    one = encode_query(tokens, cfg)
    assert blas_threads() == before
    np.testing.assert_allclose(one, encode_queries(tokens, np.array([0, 7]), cfg)[0], rtol=1e-6, atol=1e-6)
