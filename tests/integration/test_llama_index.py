"""The LlamaIndex classes against the session's running service: a ``VectorStoreIndex`` over a collection
answers retrieval queries as the service's own search does (through plain httpx), filters included."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from rayprism.integrations.llama_index import RayprismEmbedding, RayprismVectorStore
from tests.conftest import cosines
from tests.integration.conftest import SAMPLE_FIELDS
from tests.integration.test_collections import search, wait_for_mirror

DATA = Path(__file__).resolve().parents[1] / "data"
ROWS = [json.loads(line) for line in (DATA / "debian-sample.jsonl").read_text().splitlines()]
QUERIES = [json.loads(line) for line in (DATA / "debian-sample-queries.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def index(service_url):
    """The Debian sample as nodes (their ids the packages' ids) in a collection the store creates."""
    name = f"li_debian_{uuid.uuid4().hex[:8]}"
    store = RayprismVectorStore(name, url=service_url, model="minilm", fields=SAMPLE_FIELDS)
    nodes = [TextNode(id_=str(row["id"]), text=row["text"],
                      metadata={**{key: row[key] for key in SAMPLE_FIELDS}, "first_letter": row["package"][0]})
             for row in ROWS]
    built = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store),
                             embed_model=RayprismEmbedding(url=service_url, model="minilm"))
    wait_for_mirror(service_url, name)
    yield built
    httpx.delete(f"{service_url}/v1/collections/{name}", timeout=60)


def mrr_at_10(ranked: list[list[str]]) -> float:
    return sum(1 / (ids.index(str(query["doc_id"])) + 1) if str(query["doc_id"]) in ids else 0
               for query, ids in zip(QUERIES, ranked)) / len(QUERIES)


@pytest.mark.parametrize(("llama_mode", "mode"), [("default", "dense"), ("hybrid", "hybrid"), ("sparse", "sparse")])
def test_retriever_answers_as_the_service_search(service_url, index, llama_mode, mode):
    collection = index.vector_store.collection
    retriever = index.as_retriever(similarity_top_k=10, vector_store_query_mode=llama_mode)
    found, expected = [], []
    for query in QUERIES:
        hits = retriever.retrieve(query["query"])
        answer = search(service_url, {"query": query["query"], "k": 10, "mode": mode}, collection)
        assert [hit.score for hit in hits] == pytest.approx([hit["score"] for hit in answer], rel=1e-5)
        found.append([hit.node.node_id for hit in hits])
        expected.append([str(hit["id"]) for hit in answer])
    assert found == expected
    assert mrr_at_10(found) == mrr_at_10(expected) > 0.5  # the sample's queries find their packages
    first = retriever.retrieve(QUERIES[0]["query"])[0].node
    row = next(row for row in ROWS if str(row["id"]) == first.node_id)
    assert first.get_content() == row["text"] and first.metadata["package"] == row["package"]


def test_metadata_filters_are_service_filters(service_url, index):
    filters = MetadataFilters(condition=FilterCondition.OR, filters=[
        MetadataFilter(key="section", value="utils"),
        MetadataFilters(filters=[MetadataFilter(key="installed_size", value=1000, operator=FilterOperator.GT),
                                 MetadataFilter(key="first_letter", value=["a", "b", "c"],
                                                operator=FilterOperator.IN)]),
    ])
    where = ('section == "utils" or (installed_size > 1000 and '
             '(metadata["first_letter"] == "a" or metadata["first_letter"] == "b" or metadata["first_letter"] == "c"))')
    hits = index.as_retriever(similarity_top_k=20, filters=filters).retrieve("tools for the command line")
    answer = search(service_url, {"query": "tools for the command line", "k": 20, "mode": "dense", "filter": where},
                    index.vector_store.collection)
    assert [hit.node.node_id for hit in hits] == [str(hit["id"]) for hit in answer]
    assert {hit.node.metadata["section"] for hit in hits} > {"utils"}  # both sides of the "or" answer


def test_insert_and_delete_a_source_document(service_url, index):
    store, collection = index.vector_store, index.vector_store.collection
    before = httpx.get(f"{service_url}/v1/collections/{collection}").json()["count"]
    index.insert(Document(id_="guide", text="Install the package with apt. Then configure the daemon."))
    [hit] = index.as_retriever(similarity_top_k=1, filters=MetadataFilters(
        filters=[MetadataFilter(key="ref_doc_id", value="guide")])).retrieve("configure the daemon")
    assert hit.node.ref_doc_id == "guide" and "configure the daemon" in hit.node.get_content()
    assert httpx.get(f"{service_url}/v1/collections/{collection}").json()["count"] == before + 1
    assert [node.node_id for node in store.get_nodes([hit.node.node_id, "never-stored"])] == [hit.node.node_id]
    index.delete_ref_doc("guide")
    assert httpx.get(f"{service_url}/v1/collections/{collection}").json()["count"] == before
    assert httpx.get(f"{service_url}/v1/collections/{collection}/documents/{hit.node.node_id}").status_code == 404


def test_a_query_by_embedding_is_the_dense_search_of_its_text(service_url, index):
    query = "a library for security contexts"
    vector = RayprismEmbedding(url=service_url, model="minilm").get_query_embedding(query)
    found = index.vector_store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=5,
                                                      filters=MetadataFilters(filters=[MetadataFilter(
                                                          key="section", value=["libs", "doc"],
                                                          operator=FilterOperator.NIN)])))
    where = 'not (section in ["libs", "doc"])'
    answer = search(service_url, {"query": query, "k": 5, "mode": "dense", "filter": where},
                    index.vector_store.collection)
    assert found.ids == [str(hit["id"]) for hit in answer]
    assert found.similarities == pytest.approx([hit["score"] for hit in answer], abs=1e-5)


def test_embedding_is_minilm(service_url, reference_minilm):
    embedding = RayprismEmbedding(url=service_url, model="minilm")
    texts = ["a tiling window manager", "tools to manage Debian packages"]
    expected = reference_minilm.encode(texts, normalize_embeddings=True)
    assert cosines(np.array(embedding.get_text_embedding_batch(texts)), expected).min() > 0.9999
    assert cosines(np.array([embedding.get_query_embedding(texts[1])]), expected[1:]).min() > 0.9999


def test_a_collection_filled_through_the_api_reads_as_nodes(service_url):
    """A collection LlamaIndex did not write (no json metadata field, no node records: what `rayprism ingest` or
    the documents API leave) answers a retriever as the service's own search does, its fields as metadata."""
    name = f"li_api_{uuid.uuid4().hex[:8]}"
    created = httpx.post(f"{service_url}/v1/collections", json={"name": name, "model": "minilm", "fields": SAMPLE_FIELDS},
                         timeout=60)
    assert created.status_code == 201, created.text
    try:
        documents = [{"id": row["id"], "text": row["text"], **{key: row[key] for key in SAMPLE_FIELDS}} for row in ROWS]
        assert httpx.post(f"{service_url}/v1/collections/{name}/documents", json={"documents": documents},
                          timeout=300).status_code == 200
        wait_for_mirror(service_url, name)
        store = RayprismVectorStore(name, url=service_url, metadata_field=None)
        retriever = VectorStoreIndex.from_vector_store(
            store, embed_model=RayprismEmbedding(url=service_url, model="minilm")).as_retriever(
            similarity_top_k=5, vector_store_query_mode="hybrid")
        for query in QUERIES[:5]:
            hits = retriever.retrieve(query["query"])
            answer = search(service_url, {"query": query["query"], "k": 5, "mode": "hybrid"}, name)
            assert [hit.node.node_id for hit in hits] == [str(hit["id"]) for hit in answer]
            row = next(row for row in ROWS if str(row["id"]) == hits[0].node.node_id)
            assert hits[0].node.get_content() == row["text"]
            assert hits[0].node.metadata == {key: row[key] for key in SAMPLE_FIELDS}
    finally:
        httpx.delete(f"{service_url}/v1/collections/{name}", timeout=60)
