"""A mirror rebuilt from Milvus Lite holds exactly what was written: every live id once, the latest vector of each
bit for bit (float) or its codes (binary, against numpy's own sign bits), read across many small pages, with
overwritten rows, deleted rows and rows still in Lite's memtable among them."""

import numpy as np
import pytest

from rayprism.platform.config import DENSE_FIELD, CollectionConfig
from rayprism.platform.store.milvus import MilvusStore
from rayprism.platform.store.mirror import build_mirror

DIMENSIONS = 16
PAGE_ROWS = 7
"""Small enough that the rows span many pages, and a page boundary falls inside every kind of row below."""

slow = pytest.mark.slow  # starts Milvus Lite


def written(store: MilvusStore, name: str) -> dict:
    """Rows written in three rounds (flushed, overwritten, deleted, the last left unflushed); returns the
    collection's content as a reference: id → its last vector."""
    rng = np.random.default_rng(4)
    ids = [f"d{i}" for i in range(60)] + ['quote"d', "back\\slash", "ünï"]  # ids a filter must quote
    expected = {}
    for round_ids, flush in ((ids, True), (ids[10:30], True), (ids[25:40], False)):
        vectors = rng.standard_normal((len(round_ids), DIMENSIONS)).astype(np.float32)
        store.upsert(name, [{"id": doc, DENSE_FIELD: vector, "text": ""} for doc, vector in zip(round_ids, vectors)])
        expected.update(zip(round_ids, vectors))
        if flush:
            store.flush(name)
    store.delete(name, ids[5:9] + ids[28:31])
    for doc in ids[5:9] + ids[28:31]:
        del expected[doc]
    return expected


def rebuilt(store: MilvusStore, name: str, **kwargs):
    store._client.load_collection(name)
    return build_mirror(store._client, name, store.layout(name), store._vectors(name), page_rows=PAGE_ROWS, **kwargs)


@slow
def test_a_float_mirror_is_rebuilt_bit_for_bit_across_pages(tmp_path):
    store = MilvusStore(str(tmp_path / "store.db"), flush_after_s=600)
    try:
        store.ensure(CollectionConfig(name="docs", bm25=False, index={"metric": "IP"}), DIMENSIONS)  # IP: stored as given
        expected = written(store, "docs")
        mirror = rebuilt(store, "docs")
        route = mirror.routes[DENSE_FIELD]
        live = np.flatnonzero(mirror.rows.alive[: mirror.rows.used])
        ids = [mirror.rows.ids[row] for row in live]
        assert ids == sorted(expected) and len(mirror) == len(expected)
        matrix = route._matrix[live]
        assert np.array_equal(matrix.view(np.uint32), np.stack([expected[doc] for doc in ids]).view(np.uint32))
    finally:
        store.close()


@slow
def test_binary_codes_are_rebuilt_from_vectors_and_read_back_from_their_file(tmp_path):
    store = MilvusStore(str(tmp_path / "store.db"), flush_after_s=600)
    try:
        store.ensure(CollectionConfig(name="docs", bm25=False, compression={"type": "binary"}), DIMENSIONS)
        expected = written(store, "docs")
        reference = {doc: np.packbits(vector > 0) for doc, vector in expected.items()}
        encoded = rebuilt(store, "docs")
        saved = encoded.code_route.saved()
        assert not encoded.codes_read_back and saved.ids == sorted(expected)
        assert np.array_equal(saved.codes, np.stack([reference[doc] for doc in saved.ids]))

        read_back = rebuilt(store, "docs", saved=saved)
        assert read_back.codes_read_back
        again = read_back.code_route.saved()
        assert again.ids == saved.ids and np.array_equal(again.codes, saved.codes)

        stale = type(saved)(saved.ids[:-1], saved.codes[:-1], saved.ranges)  # a document the file lacks
        encoded_again = rebuilt(store, "docs", saved=stale)
        assert not encoded_again.codes_read_back
        assert np.array_equal(encoded_again.code_route.saved().codes, saved.codes)
    finally:
        store.close()
