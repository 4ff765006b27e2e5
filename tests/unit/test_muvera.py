"""MUVERA fixed dimensional encodings: the properties the paper and the reference
implementation guarantee, and a plain-Python reference for partitions and empty-partition
filling over every bucket."""

from __future__ import annotations

import numpy as np
import pytest

from rayprism.platform.codecs import muvera
from rayprism.platform.codecs.muvera import (
    FDEConfig,
    encode_document,
    encode_documents,
    encode_queries,
    encode_query,
    partition_index,
)

rng = np.random.default_rng(3)


def unit_rows(count: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def simhash_planes(cfg: FDEConfig) -> np.ndarray:
    """float32[r_reps, dim, k_sim]: each repetition's hyperplanes (column i is bit i, the most significant
    first), drawn as the codec documents them: the first of three streams spawned from the seed, one
    standard-normal (dim, r_reps * k_sim) matrix. Stored encodings depend on this draw staying the same."""
    stream = np.random.SeedSequence(cfg.seed).spawn(3)[0]
    planes = np.random.default_rng(stream).standard_normal((cfg.dim, cfg.r_reps * cfg.k_sim), dtype=np.float32)
    return planes.reshape(cfg.dim, cfg.r_reps, cfg.k_sim).transpose(1, 0, 2)


def bits_of(bucket: int, k_sim: int) -> np.ndarray:
    """Partition ``bucket``'s sign bits, hyperplane 0 first (the most significant bit)."""
    return np.array([(bucket >> (k_sim - 1 - i)) & 1 for i in range(k_sim)], dtype=bool)


def token_with_bits(planes: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """A unit vector on the positive side of exactly the hyperplanes where ``bits`` is set."""
    target = np.where(bits, 1.0, -1.0)
    token = planes @ np.linalg.solve(planes.T @ planes, target)  # token @ planes == target
    return (token / np.linalg.norm(token)).astype(np.float32)


def reference_document_fde(tokens: np.ndarray, cfg: FDEConfig) -> np.ndarray:
    """Identity projection only: partition means, empty partitions filled with the token whose
    sign bits differ from the partition's in the fewest places (the first on ties)."""
    blocks = []
    for planes in simhash_planes(cfg):
        signs = tokens @ planes > 0
        for bucket in range(2**cfg.k_sim):
            inside = [t for t in range(len(tokens)) if (signs[t] == bits_of(bucket, cfg.k_sim)).all()]
            if inside:
                blocks.append(tokens[inside].mean(axis=0))
            else:
                distances = [(signs[t] != bits_of(bucket, cfg.k_sim)).sum() for t in range(len(tokens))]
                blocks.append(tokens[int(np.argmin(distances))])
    return np.concatenate(blocks)


@pytest.mark.parametrize(
    ("cfg", "dim"),
    [(FDEConfig(dim=32), 32 * 16 * 20), (FDEConfig(dim=32, k_sim=3, d_proj=8, r_reps=2), 8 * 8 * 2),
     (FDEConfig(dim=32, k_sim=0, d_proj=32, r_reps=1), 32), (FDEConfig(dim=32, d_final=100), 100)],
)
def test_output_dimension(cfg, dim):
    tokens = unit_rows(7, 32)
    assert cfg.output_dim == dim
    assert encode_query(tokens, cfg).shape == encode_document(tokens, cfg).shape == (dim,)


def test_one_partition_and_identity_give_sum_and_mean():
    cfg = FDEConfig(dim=16, k_sim=0, d_proj=16, r_reps=3)
    tokens = unit_rows(5, 16)
    np.testing.assert_allclose(encode_query(tokens, cfg), np.tile(tokens.sum(axis=0), 3), rtol=1e-6)
    np.testing.assert_allclose(encode_document(tokens, cfg), np.tile(tokens.mean(axis=0), 3), rtol=1e-6)


def test_one_token_each_scores_r_reps_times_the_inner_product():
    cfg = FDEConfig(dim=24, k_sim=4, d_proj=24, r_reps=9)
    for query, document in zip(unit_rows(20, 24), unit_rows(20, 24)):
        score = encode_query(query[None], cfg) @ encode_document(document[None], cfg)
        assert score == pytest.approx(9 * float(query @ document), rel=1e-5, abs=1e-6)


def test_deterministic_per_seed():
    tokens = unit_rows(6, 32)
    first, again = FDEConfig(dim=32, d_proj=8, seed=5), FDEConfig(dim=32, d_proj=8, seed=5)
    np.testing.assert_array_equal(encode_document(tokens, first), encode_document(tokens, again))
    np.testing.assert_array_equal(encode_query(tokens, first), encode_query(tokens, again))
    other = FDEConfig(dim=32, d_proj=8, seed=6)
    assert not np.allclose(encode_document(tokens, first), encode_document(tokens, other))
    assert not (partition_index(tokens, first) == partition_index(tokens, other)).all()


def test_query_blocks_are_never_filled():
    cfg = FDEConfig(dim=32, k_sim=4, d_proj=8, r_reps=6)
    blocks = encode_query(unit_rows(1, 32), cfg).reshape(6, 16, 8)
    assert ((np.abs(blocks).sum(axis=2) > 0).sum(axis=1) == 1).all()  # one partition per repetition
    filled = encode_document(unit_rows(1, 32), cfg).reshape(6, 16, 8)
    assert (np.abs(filled).sum(axis=2) > 0).all()
    unfilled = encode_document(unit_rows(1, 32), FDEConfig(dim=32, k_sim=4, d_proj=8, r_reps=6, fill_empty_partitions=False))
    assert ((np.abs(unfilled.reshape(6, 16, 8)).sum(axis=2) > 0).sum(axis=1) == 1).all()


@pytest.mark.parametrize("k_sim", [1, 3, 5])
def test_every_bucket_maps_to_its_bits(k_sim):
    cfg = FDEConfig(dim=16, k_sim=k_sim, d_proj=16, r_reps=2)
    for rep, planes in enumerate(simhash_planes(cfg)):
        tokens = np.stack([token_with_bits(planes, bits_of(bucket, k_sim)) for bucket in range(2**k_sim)])
        np.testing.assert_array_equal(partition_index(tokens, cfg)[:, rep], np.arange(2**k_sim))


@pytest.mark.parametrize("k_sim", [2, 4])
def test_empty_partitions_take_the_hamming_nearest_token(k_sim):
    cfg = FDEConfig(dim=12, k_sim=k_sim, d_proj=12, r_reps=3)
    for count in (1, 2, 5):
        tokens = unit_rows(count, 12)
        np.testing.assert_allclose(encode_document(tokens, cfg), reference_document_fde(tokens, cfg), rtol=1e-5)


def test_filling_is_by_bits_not_gray_code():
    # Partition 0b0110 is empty; the token in 0b0111 (one bit away) must fill it, not the one in
    # 0b0101 (two bits away, but one step away in Gray code order).
    cfg = FDEConfig(dim=12, k_sim=4, d_proj=12, r_reps=1)
    planes = simhash_planes(cfg)[0]
    far, near = token_with_bits(planes, bits_of(0b0101, 4)), token_with_bits(planes, bits_of(0b0111, 4))
    blocks = encode_document(np.stack([far, near]), cfg).reshape(16, 12)
    np.testing.assert_allclose(blocks[0b0110], near, rtol=1e-6)


def test_batches_match_one_at_a_time(monkeypatch):
    monkeypatch.setattr(muvera, "_BATCH_BYTES", 4 * 20 * 16 * 10)  # ten tokens per batch
    cfg = FDEConfig(dim=16)
    lengths = rng.integers(0, 12, 30)
    lengths[4] = 0  # a document without tokens encodes to zeros
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = unit_rows(int(offsets[-1]), 16)
    documents, queries = encode_documents(tokens, offsets, cfg), encode_queries(tokens, offsets, cfg)
    for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        np.testing.assert_allclose(documents[i], encode_document(tokens[a:b], cfg), rtol=1e-6)
        np.testing.assert_allclose(queries[i], encode_query(tokens[a:b], cfg), rtol=1e-6)
    assert not documents[4].any()


def test_final_projection_keeps_inner_products():
    full = FDEConfig(dim=32, k_sim=3, d_proj=16, r_reps=10)
    sketched = FDEConfig(dim=32, k_sim=3, d_proj=16, r_reps=10, d_final=320)
    exact, approximate = [], []
    for _ in range(100):
        query = unit_rows(4, 32)
        weight = rng.random()  # documents from unrelated to near copies of the query
        document = weight * np.repeat(query, 2, axis=0) + (1 - weight) * 0.3 * unit_rows(8, 32)
        document = (document / np.linalg.norm(document, axis=1, keepdims=True)).astype(np.float32)
        exact.append(encode_query(query, full) @ encode_document(document, full))
        approximate.append(encode_query(query, sketched) @ encode_document(document, sketched))
    assert np.corrcoef(exact, approximate)[0, 1] > 0.9  # about 0.96; an unrelated map gives about 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"dim": 0}, "dim must be a positive integer, got 0"), ({"dim": 8, "k_sim": 17}, "k_sim must be an integer in"),
     ({"dim": 8, "d_final": 0}, "d_final must be a positive integer or None, got 0"),
     ({"dim": 8, "r_reps": 2.5}, "r_reps must be a positive integer, got 2.5")],
)
def test_config_is_validated(arguments, message):
    with pytest.raises(ValueError, match=message):
        FDEConfig(**arguments)


def test_tokens_are_checked():
    with pytest.raises(ValueError, match=r"tokens must be float32\[t, 8\], got float32\[3, 9\]"):
        encode_query(np.zeros((3, 9), np.float32), FDEConfig(dim=8))
    with pytest.raises(ValueError, match="offsets must run from 0"):
        encode_documents(np.zeros((3, 8), np.float32), np.array([0, 2]), FDEConfig(dim=8))
