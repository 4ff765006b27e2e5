"""The store's server path against a real Milvus server (2.3, started once per session; no Ray).

Results are compared with numpy over the vectors written, and with pymilvus reading the server
itself; every read right after a write must see it (Session reads: this process's writes, and another process's
once their timestamp is handed over).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from pymilvus import MilvusClient

from rayprism.platform.config import CollectionConfig
from rayprism.platform.errors import InvalidInputError
from rayprism.platform.store.milvus import MilvusStore, SearchQuery
from tests.conftest import drop_new_collections

pytestmark = pytest.mark.slow  # a Milvus server

DIMENSIONS = 32
SECTIONS = ["net", "libs", "games"]


def docs_config(name: str, **changes) -> CollectionConfig:
    return CollectionConfig(name=name, bm25=False, fields={"section": "varchar", "size": "int64"}, **changes)


def rows(n: int, start: int = 0, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    vectors = np.random.default_rng(seed).standard_normal((n, DIMENSIONS)).astype(np.float32)
    documents = [{"id": str(start + i), "text": f"package {start + i}", "dense": vectors[i],
                  "section": SECTIONS[(start + i) % 3], "size": start + i} for i in range(n)]
    return documents, vectors


def cosine_top(vectors: np.ndarray, query: np.ndarray, k: int, allowed=None, ids=None) -> list[str]:
    scores = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (query / np.linalg.norm(query))
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    order = np.argsort(-scores, kind="stable")[:k]
    return [str(ids[i]) if ids is not None else str(i) for i in order]


@pytest.fixture()
def store(milvus_server_uri):
    store = MilvusStore(milvus_server_uri, flush_after_s=600)  # Session reads: no flush needed to see writes
    before = set(store.names())
    yield store
    drop_new_collections(store, before)
    store.close()


def test_upsert_get_delete_are_seen_by_the_next_read(store, milvus_server_uri):
    store.ensure(docs_config("crud"), DIMENSIONS)
    documents, _ = rows(20)
    assert store.upsert("crud", documents) == 20
    assert store.count("crud") == 20  # no wait, no flush: read after write
    changed = {**documents[3], "text": "renamed", "size": 300}
    store.upsert("crud", [changed])
    (got,) = store.get("crud", ["3"], ["text", "size", "section"])
    assert (got["text"], got["size"], got["section"]) == ("renamed", 300, "net")
    assert store.delete("crud", ["4", "5", "no-such-id"]) == 2
    assert store.count("crud") == 18 and store.get("crud", ["4", "5"], ["text"]) == []
    server = MilvusClient(milvus_server_uri)  # the server's own answer, not the store's
    try:
        counted = server.query("crud", filter="", output_fields=["count(*)"], consistency_level="Strong")
        assert counted[0]["count(*)"] == 18
        assert server.get("crud", ids=["3"], output_fields=["size"], consistency_level="Strong")[0]["size"] == 300
    finally:
        server.close()


def test_each_write_is_seen_by_the_search_right_after_it(store):
    store.ensure(docs_config("fresh"), DIMENSIONS)
    documents, vectors = rows(12)
    for i, document in enumerate(documents):  # a new nearest neighbour each round, searched at once
        store.upsert("fresh", [document])
        hits = store.search("fresh", SearchQuery(mode="dense", k=1, dense_vector=vectors[i]))
        assert hits.ids == [str(i)] and store.count("fresh") == i + 1


WRITER = """
import json, sys
import numpy as np
from rayprism.platform.store.milvus import MilvusStore
uri, name, first, n, dimensions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
store = MilvusStore(uri, flush_after_s=600)
vectors = np.random.default_rng(first).standard_normal((n, dimensions)).astype(np.float32)
store.upsert(name, [{"id": str(first + i), "text": "t", "dense": vectors[i], "section": "net", "size": first + i}
                    for i in range(n)])
print(json.dumps({"timestamp": store.last_write(name), "vectors": vectors.tolist()}))
store.close()
"""


def test_another_processs_writes_are_seen_once_their_timestamp_is_handed_over(store, milvus_server_uri):
    """What two store replicas do: one writes, the other reads right after (each its own pymilvus session)."""
    store.ensure(docs_config("shared"), DIMENSIONS)
    assert store.last_write("shared") == 0
    for first in (0, 40, 80):
        written = subprocess.run([sys.executable, "-c", WRITER, milvus_server_uri, "shared", str(first), "40",
                                  str(DIMENSIONS)], check=True, capture_output=True, text=True)
        answer = json.loads(written.stdout)
        assert answer["timestamp"] > store.last_write("shared")
        store.read_after("shared", answer["timestamp"])
        assert store.count("shared") == first + 40  # no wait: the read waits for that timestamp itself
        vectors = np.asarray(answer["vectors"], dtype=np.float32)
        hits = store.search("shared", SearchQuery(mode="dense", k=1, dense_vector=vectors[7]))
        assert hits.ids == [str(first + 7)]
    store.read_after("shared", 1)  # an older timestamp never lowers it
    assert store.last_write("shared") == answer["timestamp"]


def test_dense_search_with_and_without_a_filter_matches_numpy(store):
    store.ensure(docs_config("search"), DIMENSIONS)
    documents, vectors = rows(300)
    store.upsert("search", documents)
    sizes = np.arange(300)
    sections = np.array([SECTIONS[i % 3] for i in range(300)])
    for query in np.random.default_rng(7).standard_normal((3, DIMENSIONS)).astype(np.float32):
        hits = store.search("search", SearchQuery(mode="dense", k=10, dense_vector=query, output_fields=["section"]))
        assert hits.ids == cosine_top(vectors, query, 10)
        found = vectors[[int(doc_id) for doc_id in hits.ids]]
        expected = found @ query / np.linalg.norm(query)
        assert hits.scores == pytest.approx(list(expected / np.linalg.norm(found, axis=1)), abs=1e-5)
        assert [fields["section"] for fields in hits.fields] == [sections[int(doc_id)] for doc_id in hits.ids]
        filtered = store.search("search", SearchQuery(mode="dense", k=10, dense_vector=query,
                                                      filter='section == "libs" and size >= 100'))
        allowed = (sections == "libs") & (sizes >= 100)
        assert filtered.ids == cosine_top(vectors, query, 10, allowed)
    with pytest.raises(InvalidInputError, match="filter: "):
        store.search("search", SearchQuery(mode="dense", k=3, dense_vector=vectors[0], filter="size >>> 3"))


def test_a_reopened_store_finds_its_collection_and_rows(milvus_server_uri):
    config = docs_config("kept")
    first = MilvusStore(milvus_server_uri)
    first.ensure(config, DIMENSIONS)
    documents, vectors = rows(50)
    first.upsert("kept", documents)
    first.close()  # the service stops; the server keeps the data

    reopened = MilvusStore(milvus_server_uri)
    try:
        assert reopened.config_of("kept") == config and reopened.ensure(config, DIMENSIONS).bm25 is False
        assert reopened.count("kept") == 50
        hits = reopened.search("kept", SearchQuery(mode="dense", k=5, dense_vector=vectors[17]))
        assert hits.ids == cosine_top(vectors, vectors[17], 5)
    finally:
        reopened.drop("kept")
        reopened.close()


def test_bm25_is_refused_naming_the_servers_version(store, milvus_server_uri):
    version = MilvusClient(milvus_server_uri).get_server_version()
    with pytest.raises(InvalidInputError) as caught:
        store.ensure(CollectionConfig(name="hybrid"), DIMENSIONS)  # bm25 is on by default
    assert f"Milvus server is version {version}" in caught.value.message and "Milvus >= 2.5" in caught.value.message
    assert caught.value.http_status == 400 and caught.value.param == "bm25"
    assert "hybrid" not in store.names()


def test_the_binary_tier_is_refused_where_a_second_vector_field_is_missing(store, milvus_server_uri):
    version = MilvusClient(milvus_server_uri).get_server_version()
    with pytest.raises(InvalidInputError) as caught:
        store.ensure(docs_config("packed", compression={"type": "binary"}), DIMENSIONS)
    assert f"Milvus server is version {version}" in caught.value.message and "Milvus >= 2.4" in caught.value.message
    assert caught.value.param == "compression" and "packed" not in store.names()


def test_a_document_without_a_field_is_refused_where_the_server_stores_no_nulls(store, milvus_server_uri):
    store.ensure(docs_config("sparse_fields"), DIMENSIONS)
    documents, _ = rows(3)
    documents[1]["size"] = None  # what a document that omits "size" becomes
    with pytest.raises(InvalidInputError) as caught:
        store.upsert("sparse_fields", documents)
    assert "documents[1].size" in caught.value.message and "v2.3.5" in caught.value.message
    assert caught.value.http_status == 400 and store.count("sparse_fields") == 0
