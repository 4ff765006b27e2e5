"""The collection services without Ray or HTTP: a real store replica (Milvus Lite) in this process and a tiny model."""

import asyncio

import pytest

from rayprism.deployments.collection_routes import CollectionServices
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store import StoreReplica
from rayprism.platform.api.requests import DeleteDocumentsRequest, DocumentsRequest, SearchRequest
from rayprism.platform.config import CollectionConfig, ModelConfig, ServeConfig, ServerConfig, StoreConfig
from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError, PayloadTooLargeError
from rayprism.platform.store.documents import InvalidDocumentsError

pytestmark = pytest.mark.slow  # starts Milvus Lite


@pytest.fixture(scope="module")
def embeddings(tiny_model_path):
    config = ServeConfig(server=ServerConfig(max_inputs_per_request=3), models=[ModelConfig(name="tiny", source=tiny_model_path)])
    service = EmbeddingService(config)
    assert service.wait_loaded(120)
    yield service
    service.close()


@pytest.fixture()
def parts(embeddings, tmp_path):
    store = StoreReplica(StoreConfig(uri=str(tmp_path / "store.db"), flush_after_s=0.1).model_dump(), [])
    yield CollectionServices.build(embeddings, store), store
    store.close()


def run(coroutine):
    return asyncio.run(coroutine)


DOCS = [{"id": "a", "text": "apples and pears", "kind": "fruit"}, {"id": "b", "text": "a red bicycle", "kind": "thing"}]


def create(service, **overrides):
    config = CollectionConfig(**{"name": "things", "model": "tiny", "fields": {"kind": "varchar"}, **overrides})
    return run(service.collections.create(config))


def test_create_is_idempotent_and_names_each_difference(parts):
    service, _ = parts
    description, created = create(service)
    assert created and description["created"] is True and description["count"] == 0
    again, created_again = create(service)
    assert not created_again and again["created"] is False
    with pytest.raises(ConflictError) as conflict:
        create(service, fields={"kind": "int64"}, bm25=False)
    message = conflict.value.message
    assert "fields: requested {'kind': 'int64'}, existing {'kind': 'varchar'}" in message
    assert "bm25: requested False, existing True" in message and "model" not in message


def test_callers_cannot_choose_the_store_or_an_unserved_model(parts, tmp_path):
    service, _ = parts
    with pytest.raises(InvalidInputError) as refused:
        create(service, uri=str(tmp_path / "elsewhere.db"))
    assert refused.value.param == "uri" and not (tmp_path / "elsewhere.db").exists()
    with pytest.raises(InvalidInputError, match="not served here"):
        create(service, model="gpt-9")


def test_documents_are_validated_before_anything_is_embedded_or_written(parts):
    service, store = parts
    create(service)
    with pytest.raises(InvalidDocumentsError) as invalid:
        run(service.documents.upsert("things", DocumentsRequest(documents=[DOCS[0], {"id": "c", "text": " ", "shape": 1}])))
    assert [(p.index, p.field) for p in invalid.value.problems] == [(1, "text"), (1, "shape")]
    assert run(store.describe("things"))["count"] == 0
    with pytest.raises(PayloadTooLargeError, match="too many documents: 4"):
        run(service.documents.upsert("things", DocumentsRequest(documents=DOCS * 2)))
    assert run(service.documents.upsert("things", DocumentsRequest(documents=DOCS)))["upserted"] == 2


def test_search_checks_its_arguments(parts):
    service, _ = parts
    create(service, bm25=False)
    run(service.documents.upsert("things", DocumentsRequest(documents=DOCS)))
    cases = [
        ({"mode": "sparse"}, "needs BM25"),
        ({"output_fields": ["colour"]}, "unknown field 'colour'"),
        ({"filter": 'colour == "red"'}, "unknown field 'colour'"),
        ({"k": 20, "candidates": 10}, r"candidates \(10\) must be ≥ k \(20\)"),
    ]
    for arguments, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            run(service.search("things", SearchRequest(query="fruit", **arguments)))
    hits = run(service.search("things", SearchRequest(query="apples and pears", k=1)))["results"]
    assert hits[0]["id"] == "a" and hits[0]["fields"] == {"text": "apples and pears", "kind": "fruit"}


def test_a_collection_dropped_behind_the_services_back_is_forgotten(parts):
    service, store = parts
    create(service)
    run(service.documents.upsert("things", DocumentsRequest(documents=DOCS)))
    assert service.collections.model_of("things") == "tiny"
    run(store.drop("things"))  # as another replica would
    with pytest.raises(NotFoundError):
        run(service.documents.delete("things", DeleteDocumentsRequest(ids=["a"])))
    assert service.collections.model_of("things") is None
    with pytest.raises(NotFoundError):
        run(service.search("things", SearchRequest(query="fruit")))
    _, created = create(service)  # made again from scratch, not from the forgotten config
    assert created and run(store.describe("things"))["count"] == 0


def test_documents_and_queries_get_the_models_prompts(prompted_model_path, tmp_path):
    """A model with query/document prompts: stored vectors are encode_document's, queries encode_query's."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    config = ServeConfig(models=[ModelConfig(name="prompted", source=prompted_model_path)])
    embeddings = EmbeddingService(config)
    assert embeddings.wait_loaded(120)
    store = StoreReplica(StoreConfig(uri=str(tmp_path / "store.db")).model_dump(), [])
    service = CollectionServices.build(embeddings, store)
    run(service.collections.create(CollectionConfig(name="prompted", model="prompted", bm25=False, fields={"kind": "varchar"})))
    run(service.documents.upsert("prompted", DocumentsRequest(documents=DOCS)))
    reference = SentenceTransformer(prompted_model_path, device="cpu")
    stored = run(store.get("prompted", ["a"], ["dense"]))[0]["dense"]
    expected = reference.encode_document([DOCS[0]["text"]])[0]
    assert np.dot(stored, expected) >= 0.99999
    hit = run(service.search("prompted", SearchRequest(query="fruit", k=1, mode="dense")))["results"][0]
    query = reference.encode_query(["fruit"])[0]
    best = max(DOCS, key=lambda d: float(np.dot(query, reference.encode_document([d["text"]])[0])))
    assert hit["id"] == best["id"]
    assert hit["score"] == pytest.approx(float(np.dot(query, reference.encode_document([best["text"]])[0])), abs=1e-5)
    embeddings.close()
    store.close()


def test_a_repeated_upsert_embeds_only_what_changed(parts):
    service, store = parts
    create(service)
    first = run(service.documents.upsert("things", DocumentsRequest(documents=DOCS)))
    assert (first["upserted"], first["unchanged"]) == (2, 0) and first["tokens"] > 0
    again = run(service.documents.upsert("things", DocumentsRequest(documents=DOCS)))
    assert (again["upserted"], again["unchanged"], again["tokens"]) == (0, 2, 0)
    edited = [DOCS[0], {**DOCS[1], "kind": "vehicle"}]
    changed = run(service.documents.upsert("things", DocumentsRequest(documents=edited)))
    assert (changed["upserted"], changed["unchanged"]) == (1, 1) and changed["tokens"] > 0
    assert run(service.documents.get_document("things", "b"))["kind"] == "vehicle"


def test_documents_may_bring_their_own_vectors(parts, embeddings):
    import numpy as np

    from rayprism.platform.codecs.wire import to_base64

    service, store = parts
    create(service)
    dimensions = embeddings.runner("tiny").encoder.dimensions
    own = np.linspace(-1, 1, dimensions, dtype=np.float32)
    documents = [{**DOCS[0], "vector": own.tolist()}, {**DOCS[1], "vector": to_base64(-own)}]
    result = run(service.documents.upsert("things", DocumentsRequest(documents=documents)))
    assert (result["upserted"], result["tokens"]) == (2, 0)  # nothing embedded
    stored = {row["id"]: row["dense"] for row in run(store.get("things", ["a", "b"], ["dense"]))}
    assert np.allclose(stored["a"], own) and np.allclose(stored["b"], -own)
    bad = [{**DOCS[0], "vector": own[:-1].tolist()}, {**DOCS[1], "vector": "not base64!"},
           {"id": "c", "text": "x", "vector": [float("nan")] * dimensions}]
    with pytest.raises(InvalidDocumentsError) as invalid:
        run(service.documents.upsert("things", DocumentsRequest(documents=bad)))
    messages = {p.index: p.message for p in invalid.value.problems if p.field == "vector"}
    assert f"has {dimensions - 1} values; the collection's model has {dimensions}" in messages[0]
    assert "base64" in messages[1] and "finite" in messages[2]
