"""Compressed dense tiers: codes ranked by the kernels, candidates rescored exactly with the
float vectors in Milvus Lite, codes saved beside the Lite file and read back after a restart."""

import time

import numpy as np
import pytest

from rayprism.platform.config import CollectionConfig
from rayprism.platform.errors import InvalidInputError
from rayprism.platform.store.compressed import CodeRoute
from rayprism.platform.store.milvus import MilvusStore, SearchQuery
from rayprism.platform.store.routes import RowTable

DIMENSIONS = 64


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((16, DIMENSIONS))
    return (centres[rng.integers(0, 16, n)] + 0.6 * rng.standard_normal((n, DIMENSIONS))).astype(np.float32)


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, allowed=None) -> list[str]:
    scores = unit(vectors) @ unit(query)
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return [str(i) for i in np.argsort(-scores, kind="stable")[:k]]


def test_binary_codes_rank_by_hamming_distance():
    vectors = clustered(500)
    rows = RowTable()
    route = CodeRoute(rows, DIMENSIONS, "binary", 1, normalise=True)
    ids = [str(i) for i in range(len(vectors))]
    new_rows, _ = rows.assign(ids)
    route.write(new_rows, route.prepare(vectors))
    query = clustered(1, seed=9)[0]
    bits = np.unpackbits(np.packbits(vectors > 0, axis=1), axis=1)[:, :DIMENSIONS]
    distances = (bits != (query > 0)).sum(axis=1)
    expected = sorted(range(len(vectors)), key=lambda row: (distances[row], row))[:20]
    hits = route.top_k(query, 20)
    assert [doc for doc, _ in hits] == [str(row) for row in expected]
    assert [-score for _, score in hits] == [distances[row] for row in expected]
    assert route.bytes_per_document == DIMENSIONS // 8


def test_rescoring_is_exact_and_skips_vectors_deleted_meanwhile():
    vectors = clustered(200)
    by_id = {str(i): vectors[i] for i in range(200)}
    query = vectors[3] + 0.1
    candidates = [str(i) for i in range(0, 200, 2)]
    del by_id["4"]
    hits = CodeRoute(RowTable(), DIMENSIONS, "int8", 4, normalise=True).rescore(
        query, candidates, 5, lambda ids: {doc: by_id[doc] for doc in ids if doc in by_id})
    allowed = np.zeros(200, dtype=bool)
    allowed[0::2] = True
    allowed[4] = False
    assert [doc for doc, _ in hits] == exact_top(vectors, query, 5, allowed)
    assert [score for _, score in hits] == pytest.approx(
        [float(unit(vectors[int(doc)]) @ unit(query)) for doc, _ in hits], abs=1e-6)


def test_int8_codes_calibrate_on_the_first_write_and_clip_later_ones():
    rows = RowTable()
    route = CodeRoute(rows, DIMENSIONS, "int8", 4, normalise=False)
    first = clustered(100)
    codes = route.prepare(first)
    assert route.ranges[0] == pytest.approx(first.min(axis=0)) and route.ranges[1] == pytest.approx(first.max(axis=0))
    outside = route.prepare(np.full((1, DIMENSIONS), 1e3, dtype=np.float32))
    assert codes.dtype == np.int8 and np.all(outside == 127)


slow = pytest.mark.slow  # starts Milvus Lite


def wait_for_mirror(store: MilvusStore, name: str):
    deadline = time.monotonic() + 60
    while not store.mirrors.ready(name):
        assert time.monotonic() < deadline, "the mirror was not built in time"
        time.sleep(0.05)
    return store.mirrors.built(name)


def fill(store: MilvusStore, name: str, vectors: np.ndarray, start: int = 0) -> None:
    store.upsert(name, [{"id": str(start + i), "text": f"doc {start + i}", "n": start + i, "dense": vector}
                        for i, vector in enumerate(vectors)])


@slow
@pytest.mark.parametrize("kind", ["binary", "int8"])
def test_compressed_search_returns_exact_scores_and_a_smaller_footprint(tmp_path, kind):
    vectors = clustered(1000)
    # a multiplier that covers the whole collection: the rescored top-k is the exact top-k
    config = CollectionConfig(name="docs", fields={"n": "int64"},
                              compression={"type": kind, "rescore_multiplier": 100})
    store = MilvusStore(str(tmp_path / "store.db"), cache_max_rows=10_000)
    try:
        store.ensure(config, DIMENSIONS)
        fill(store, "docs", vectors)
        mirror = wait_for_mirror(store, "docs")
        for query in clustered(5, seed=4):
            hits = store.search("docs", SearchQuery(mode="dense", k=10, dense_vector=query))
            assert hits.ids == exact_top(vectors, query, 10)
            assert hits.scores == pytest.approx(
                [float(unit(vectors[int(doc_id)]) @ unit(query)) for doc_id in hits.ids], abs=1e-5)
            filtered = store.search("docs", SearchQuery(mode="dense", k=10, dense_vector=query, filter="n >= 600"))
            assert filtered.ids == exact_top(vectors, query, 10, np.arange(1000) >= 600)
        float_bytes = DIMENSIONS * 4
        assert mirror.memory() == {"rows": 1000, "dense": {
            "kind": kind, "bytes_per_document": float_bytes // 32 if kind == "binary" else float_bytes // 4}}
    finally:
        store.close()


@slow
def test_codes_are_read_back_after_a_restart_unless_a_write_missed_them(tmp_path):
    uri = str(tmp_path / "store.db")
    config = CollectionConfig(name="docs", fields={"n": "int64"}, compression={"type": "binary", "rescore_multiplier": 100})
    vectors = clustered(800)
    store = MilvusStore(uri, cache_max_rows=10_000, flush_after_s=60)
    store.ensure(config, DIMENSIONS)
    fill(store, "docs", vectors)
    assert not wait_for_mirror(store, "docs").codes_read_back  # encoded from the vectors
    store.close()  # flushes: the codes are saved

    store = MilvusStore(uri, cache_max_rows=10_000, flush_after_s=60)
    assert wait_for_mirror(store, "docs").codes_read_back
    query = clustered(1, seed=5)[0]
    assert store.search("docs", SearchQuery(mode="dense", k=10, dense_vector=query)).ids == exact_top(vectors, query, 10)
    extra = clustered(50, seed=6)
    fill(store, "docs", extra, start=800)  # written, then the process dies before the codes are saved
    store._client.close()

    store = MilvusStore(uri, cache_max_rows=10_000, flush_after_s=60)
    try:
        mirror = wait_for_mirror(store, "docs")
        assert not mirror.codes_read_back and len(mirror) == 850  # stale codes were not trusted
        everything = np.vstack([vectors, extra])
        assert store.search("docs", SearchQuery(mode="dense", k=10, dense_vector=extra[7])).ids == \
            exact_top(everything, extra[7], 10)
    finally:
        store.close()


@slow
def test_codes_of_a_dropped_collection_are_removed(tmp_path):
    store = MilvusStore(str(tmp_path / "store.db"), cache_max_rows=10_000)
    try:
        store.ensure(CollectionConfig(name="docs", fields={"n": "int64"}, compression={"type": "int8"}), DIMENSIONS)
        fill(store, "docs", clustered(20))
        wait_for_mirror(store, "docs")
        store.flush("docs")
        assert (tmp_path / "store.db.codes" / "docs.npz").exists()
        store.drop("docs")
        assert not list((tmp_path / "store.db.codes").iterdir())
    finally:
        store.close()


def test_int8_codes_use_ranges_given_by_the_config_whatever_comes_first():
    vectors = clustered(200)
    given = CodeRoute(RowTable(), DIMENSIONS, "int8", 4, normalise=False).prepare(vectors)  # calibrates on all
    ranges = np.vstack((vectors.min(axis=0), vectors.max(axis=0)))
    seeded = CodeRoute(RowTable(), DIMENSIONS, "int8", 4, normalise=False, ranges=ranges.tolist())
    later_first = np.concatenate([seeded.prepare(vectors[150:]), seeded.prepare(vectors[:150])])
    assert np.array_equal(later_first, np.concatenate([given[150:], given[:150]]))
    recalibrated = CodeRoute(RowTable(), DIMENSIONS, "int8", 4, normalise=False).prepare(vectors[150:])
    assert not np.array_equal(recalibrated, given[150:])  # what a restore without them would encode


@slow
def test_a_collection_made_with_the_int8_ranges_in_use_encodes_every_vector_to_the_same_code(tmp_path):
    vectors = clustered(300)
    store = MilvusStore(str(tmp_path / "store.db"), cache_max_rows=10_000)
    try:
        store.ensure(CollectionConfig(name="first", fields={"n": "int64"}, compression={"type": "int8"}), DIMENSIONS)
        fill(store, "first", vectors[:40])  # calibrates on these
        fill(store, "first", vectors[40:], start=40)
        original = wait_for_mirror(store, "first").code_route.saved()
        ranges = store.int8_ranges("first")
        assert np.array_equal(np.asarray(ranges, dtype=np.float32), original.ranges)
        restored = CollectionConfig(name="second", fields={"n": "int64"},
                                    compression={"type": "int8", "int8_ranges": ranges})
        store.ensure(restored, DIMENSIONS)
        fill(store, "second", vectors[200:], start=200)  # another order, as a restore's pages come
        fill(store, "second", vectors[:200])
        again = wait_for_mirror(store, "second").code_route.saved()
        by_id = dict(zip(again.ids, again.codes))
        assert all(np.array_equal(by_id[doc], code) for doc, code in zip(original.ids, original.codes))
        assert len(by_id) == len(original.ids) == 300
        with pytest.raises(InvalidInputError, match="int8_ranges give 3 dimensions"):
            store.ensure(CollectionConfig(name="third", compression={"type": "int8", "int8_ranges": [[0, 0, 0], [1, 1, 1]]}),
                         DIMENSIONS)
    finally:
        store.close()


def test_int8_ranges_are_checked_and_left_out_of_the_match_with_a_declared_config():
    from pydantic import ValidationError

    from rayprism.platform.store.layout import Layout

    with pytest.raises(ValidationError, match="belong to an int8 tier"):
        CollectionConfig(name="x", compression={"type": "binary", "int8_ranges": [[0.0], [1.0]]})
    with pytest.raises(ValidationError, match="a minimum is above its maximum"):
        CollectionConfig(name="x", compression={"type": "int8", "int8_ranges": [[2.0], [1.0]]})
    declared = CollectionConfig(name="x", compression={"type": "int8"})
    restored = CollectionConfig(name="x", compression={"type": "int8", "int8_ranges": [[0.0], [1.0]]})
    assert Layout.from_config(declared, 1).differences(Layout.from_config(restored, 1)) == []
