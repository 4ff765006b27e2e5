"""The LangChain classes against the session's running service: LangChain's own standard suites
(``langchain-tests``), then each class against the service's own answer through plain httpx and
sentence-transformers' MiniLM."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from langchain_tests.integration_tests import EmbeddingsIntegrationTests, VectorStoreIntegrationTests

from rayprism.integrations.langchain import RayprismEmbeddings, RayprismRerank, RayprismVectorStore
from tests.conftest import cosines
from tests.integration.conftest import SAMPLE_FIELDS
from tests.integration.test_collections import search, wait_for_mirror

DATA = Path(__file__).resolve().parents[1] / "data"
ROWS = [json.loads(line) for line in (DATA / "debian-sample.jsonl").read_text().splitlines()]


class TestEmbeddingsStandard(EmbeddingsIntegrationTests):
    embeddings_class = RayprismEmbeddings

    @pytest.fixture
    def model(self, service_url) -> RayprismEmbeddings:
        return RayprismEmbeddings(url=service_url, model="minilm")


class TestVectorStoreStandard(VectorStoreIntegrationTests):
    """Each test gets a new, empty collection. The suite's documents carry metadata keys no collection
    declares (``id``, which is also the document id's name, and ``some_other_field``): the collection has a
    json field ``metadata`` that keeps such keys, as ``from_texts`` makes it."""

    @pytest.fixture
    def vectorstore(self, service_url):
        name = f"lc_{uuid.uuid4().hex[:12]}"
        store = RayprismVectorStore.from_texts([], collection=name, model="minilm", url=service_url)
        yield store
        assert httpx.delete(f"{service_url}/v1/collections/{name}", timeout=60).status_code == 200


@pytest.fixture(scope="module")
def debian_store(service_url):
    """The Debian sample in a collection of its own, made by ``from_texts`` with typed fields."""
    name = f"lc_debian_{uuid.uuid4().hex[:8]}"
    store = RayprismVectorStore.from_texts(
        [row["text"] for row in ROWS], RayprismEmbeddings(url=service_url, model="minilm"),
        [{**{key: row[key] for key in SAMPLE_FIELDS}, "tags": [row["section"]]} for row in ROWS],
        ids=[str(row["id"]) for row in ROWS], collection=name, fields=SAMPLE_FIELDS, url=service_url,
    )
    wait_for_mirror(service_url, name)
    yield store
    httpx.delete(f"{service_url}/v1/collections/{name}", timeout=60)


def test_embeddings_are_minilm_vectors(service_url, reference_minilm):
    embeddings = RayprismEmbeddings(url=service_url, model="minilm")
    texts = ["a tiling window manager", "tools to manage Debian packages"]
    expected = reference_minilm.encode(texts, normalize_embeddings=True)
    assert cosines(np.array(embeddings.embed_documents(texts)), expected).min() > 0.9999
    assert cosines(np.array([embeddings.embed_query(texts[0])]), expected[:1]).min() > 0.9999
    short = RayprismEmbeddings(url=service_url, model="minilm", dimensions=64).embed_query(texts[0])
    assert np.allclose(short, expected[0][:64] / np.linalg.norm(expected[0][:64]), atol=1e-5)


def test_queries_and_documents_get_the_models_prompts(service_url, prompted_model_path):
    """A model that declares query and document prompts (as E5 or BGE do): each side gets its own, as
    sentence-transformers applies them (and the service's collections embed)."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(prompted_model_path, device="cpu")
    embeddings = RayprismEmbeddings(url=service_url, model="prompted")
    texts = ["a tiling window manager", "tools to manage Debian packages"]
    documents, query = np.array(embeddings.embed_documents(texts)), np.array(embeddings.embed_query(texts[0]))
    # the random tiny model moves each value by about 1e-3 between prompts; served and reference agree to 1e-6
    assert np.allclose(documents, reference.encode(texts, prompt_name="document"), atol=1e-4)
    assert np.allclose(query, reference.encode(texts[0], prompt_name="query"), atol=1e-4)
    assert not np.allclose(query, documents[0], atol=1e-4)


def test_from_texts_creates_the_collection_with_fields(service_url, debian_store):
    described = httpx.get(f"{service_url}/v1/collections/{debian_store.collection}").json()
    assert described["model"] == "minilm" and described["count"] == len(ROWS)
    assert described["fields"] == {**SAMPLE_FIELDS, "metadata": "json"}
    row = ROWS[3]
    stored = httpx.get(f"{service_url}/v1/collections/{debian_store.collection}/documents/{row['id']}").json()
    assert stored["section"] == row["section"] and stored["metadata"] == {"tags": [row["section"]]}
    [document] = debian_store.get_by_ids([str(row["id"])])
    assert document == Document(id=str(row["id"]), page_content=row["text"],
                                metadata={**{key: row[key] for key in SAMPLE_FIELDS}, "tags": [row["section"]]})


@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_search_is_the_service_search(service_url, debian_store, mode):
    query, where = "manage multiple choice questionnaires", 'section != "libs" and metadata["tags"][0] != "x11"'
    expected = search(service_url, {"query": query, "k": 5, "mode": mode, "filter": where}, debian_store.collection)
    found = debian_store.similarity_search_with_score(query, k=5, mode=mode, filter=where)
    assert [(document.id, document.metadata["section"]) for document, _ in found] == [
        (str(hit["id"]), hit["fields"]["section"]) for hit in expected]
    assert [score for _, score in found] == pytest.approx([hit["score"] for hit in expected], rel=1e-5)
    assert all(document.metadata["section"] != "libs" for document, _ in found) and len(found) == 5
    retriever = debian_store.as_retriever(search_kwargs={"k": 5, "mode": mode, "filter": where})
    assert [document.id for document in retriever.invoke(query)] == [document.id for document, _ in found]


def test_search_by_vector_is_the_dense_search_of_its_text(service_url, debian_store):
    query, where = "a library for security contexts", 'installed_size > 100'
    vector = debian_store.embeddings.embed_query(query)
    expected = search(service_url, {"query": query, "k": 6, "mode": "dense", "filter": where},
                      debian_store.collection)
    found = debian_store.similarity_search_with_score_by_vector(vector, k=6, filter=where)
    assert [document.id for document, _ in found] == [str(hit["id"]) for hit in expected]
    assert [score for _, score in found] == pytest.approx([hit["score"] for hit in expected], abs=1e-5)
    diverse = debian_store.max_marginal_relevance_search_by_vector(vector, k=3, fetch_k=6, filter=where)
    assert {document.id for document in diverse} < {str(hit["id"]) for hit in expected}


def test_max_marginal_relevance(service_url, debian_store, reference_minilm):
    query = "documentation for a library"
    candidates = search(service_url, {"query": query, "k": 12}, debian_store.collection)
    vectors = reference_minilm.encode([query] + [hit["fields"]["text"] for hit in candidates],
                                      normalize_embeddings=True)
    chosen = maximal_marginal_relevance(vectors[0], list(vectors[1:]), k=4, lambda_mult=0.3)
    found = debian_store.max_marginal_relevance_search(query, k=4, fetch_k=12, lambda_mult=0.3)
    assert [document.id for document in found] == [str(candidates[index]["id"]) for index in chosen]
    assert [document.id for document in found] != [str(hit["id"]) for hit in candidates[:4]]  # diversity changed it


def test_unknown_metadata_without_a_json_field_is_refused(service_url, debian_store):
    store = RayprismVectorStore(debian_store.collection, url=service_url)  # no metadata_field
    with pytest.raises(ValueError, match=r"metadata keys \['colour'\] are not fields"):
        store.add_texts(["a"], [{"colour": "red"}])


def test_rerank_is_the_service_rerank(service_url):
    documents = [Document(page_content=row["text"], metadata={"package": row["package"]}) for row in ROWS[:8]]
    query = "security policy library"
    response = httpx.post(f"{service_url}/v1/rerank", json={"model": "judge", "query": query,
                                                            "documents": [d.page_content for d in documents]})
    expected = response.json()["results"]
    kept = RayprismRerank(url=service_url, model="judge", top_n=3).compress_documents(documents, query)
    assert [(d.metadata["package"], d.metadata["relevance_score"]) for d in kept] == [
        (documents[hit["index"]].metadata["package"], pytest.approx(hit["relevance_score"])) for hit in expected[:3]]
    assert "relevance_score" not in documents[0].metadata
