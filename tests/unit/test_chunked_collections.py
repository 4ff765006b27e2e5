"""Chunked collections through the collection services (no Ray, no HTTP): a real store replica (Milvus Lite)
in this process and a tiny model whose tokenizer is MiniLM's, with a 64-token limit, so a few kilobytes of
text make many pieces. Pieces are checked against the chunker run independently and against Milvus's rows."""

import asyncio
import random

import pytest

from rayprism.deployments.collection_routes import CollectionServices
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store import StoreReplica
from rayprism.platform.api.requests import DeleteDocumentsRequest, DocumentsRequest, SearchRequest
from rayprism.platform.config import CollectionConfig, ModelConfig, ServeConfig, StoreConfig
from rayprism.platform.store.documents import InvalidDocumentsError
from rayprism.platform.store.layout import VARCHAR_MAX_BYTES
from rayprism.platform.text.chunking import load_chunker

pytestmark = pytest.mark.slow  # starts Milvus Lite

WORDS = ("river stone lantern copper meadow falcon quartz harbor velvet ember orchard glacier thistle canyon "
         "saffron beacon willow marble cobalt prairie").split()


def long_text(seed: int, paragraphs: int) -> str:
    """Paragraphs of made-up sentences, each sentence numbered so a query can name exactly one; irregular
    whitespace (tabs, blank lines, trailing spaces) that a join must give back exactly."""
    rng = random.Random(seed)
    out = []
    for p in range(paragraphs):
        sentences = [f"Sentence {seed}-{p}-{s} tells of the {' '.join(rng.choices(WORDS, k=8))}."
                     for s in range(4)]
        out.append("  ".join(sentences) + ("\t \n" if p % 3 else "\n"))
    return "\n".join(out) + "\n\n"


@pytest.fixture(scope="module")
def embeddings(tiny_model_path, tiny_reranker_path):
    service = EmbeddingService(ServeConfig(models=[ModelConfig(name="tiny", source=tiny_model_path),
                                                   ModelConfig(name="judge", kind="reranker", source=tiny_reranker_path)]))
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


def create(service, **overrides):
    config = CollectionConfig(**{"name": "manuals", "model": "tiny", "fields": {"title": "varchar", "year": "int64"},
                                 "chunking": {"max_tokens": 48, "overlap_tokens": 8}, **overrides})
    return run(service.collections.create(config))[0]


def upsert(service, documents, name="manuals"):
    return run(service.documents.upsert(name, DocumentsRequest(documents=documents)))


def raw_pieces(store, document_id, name="manuals"):
    """The document's rows as Milvus itself holds them."""
    client = store._store(store._config.uri)._client
    return sorted(client.query(name, filter=f'doc_id == "{document_id}"',
                               output_fields=["piece_index", "piece_count", "doc_hash", "text"]),
                  key=lambda row: row["piece_index"])


def test_a_long_document_is_stored_as_pieces_and_read_back_whole(parts, tiny_model_path):
    service, store = parts
    description = create(service)
    assert description["chunking"] == {"max_tokens": 48, "overlap_tokens": 8, "markdown": False}
    text = long_text(1, 40)
    answer = upsert(service, [{"id": "guide", "text": text, "title": "The Guide", "year": 2024},
                              {"id": "note", "text": "A short note about copper.", "title": "Note", "year": 2023}])
    assert (answer["upserted"], answer["unchanged"]) == (2, 0)
    assert run(store.describe("manuals"))["count"] == 2  # documents, not pieces
    chunker = load_chunker(tiny_model_path, CollectionConfig(name="x", chunking={"max_tokens": 48, "overlap_tokens": 8}
                                                             ).chunking, model_max_tokens=64)
    expected = chunker.split(text, title="The Guide")
    pieces = raw_pieces(store, "guide")
    assert len(pieces) == len(expected) > 10
    assert [row["piece_index"] for row in pieces] == list(range(len(expected)))
    assert all(piece.text in row["text"] for piece, row in zip(expected, pieces))
    document = run(service.documents.get_document("manuals", "guide"))
    assert (document["text"], document["title"], document["year"]) == (text, "The Guide", 2024)


def test_unchanged_documents_are_skipped_and_changed_ones_replace_every_piece(parts):
    service, store = parts
    create(service)
    first = {"id": "guide", "text": long_text(2, 30), "title": "Guide", "year": 1}
    upsert(service, [first])
    again = upsert(service, [first])
    assert (again["upserted"], again["unchanged"], again["tokens"]) == (0, 1, 0)
    retitled = upsert(service, [{**first, "title": "Guide, 2nd edition"}])  # a field changed: written again
    assert retitled["upserted"] == 1
    shorter = {**first, "text": long_text(3, 6)}
    upsert(service, [shorter])
    pieces = raw_pieces(store, "guide")
    assert [row["piece_index"] for row in pieces] == list(range(pieces[0]["piece_count"]))
    assert len({row["doc_hash"] for row in pieces}) == 1
    assert run(service.documents.get_document("manuals", "guide"))["text"] == shorter["text"]
    assert run(service.documents.delete("manuals", DeleteDocumentsRequest(ids=["guide", "absent"])))["deleted"] == 1
    assert raw_pieces(store, "guide") == [] and run(store.describe("manuals"))["count"] == 0


def test_search_answers_documents_with_the_passages_that_matched(parts):
    service, _ = parts
    create(service)
    documents = [{"id": f"doc{i}", "text": long_text(10 + i, 25), "title": f"Manual {i}", "year": 2000 + i}
                 for i in range(4)]
    upsert(service, documents)
    query = "Sentence 12-23-2"  # from the end of doc2
    found = run(service.search("manuals", SearchRequest(query=query, k=4, passages=3)))["results"]
    assert found[0]["id"] == "doc2" and len({hit["id"] for hit in found}) == len(found)
    passages = found[0]["passages"]
    assert query in passages[0]["text"] and found[0]["fields"]["text"] == passages[0]["text"]
    assert passages[0]["score"] >= passages[-1]["score"] and len(passages) <= 3
    dense = run(service.search("manuals", SearchRequest(query=query, k=4, passages=3, mode="dense")))["results"]
    assert dense[0]["score"] == dense[0]["passages"][0]["score"]  # one route: a document scores as its best piece
    assert documents[2]["text"][passages[0]["start"]:].startswith(passages[0]["text"].strip()[:20])
    filtered = run(service.search("manuals", SearchRequest(query=query, k=4, filter='id != "doc2" and year >= 2001',
                                                           passages=0)))["results"]
    assert {hit["id"] for hit in filtered} <= {"doc1", "doc3"} and all("passages" not in hit for hit in filtered)


def test_the_rerank_stage_scores_the_matched_passage_not_the_document(parts, embeddings):
    service, _ = parts
    create(service)
    documents = [{"id": f"doc{i}", "text": long_text(20 + i, 12), "title": f"Manual {i}", "year": i} for i in range(3)]
    upsert(service, documents)
    query = "Sentence 21-10-1"
    request = SearchRequest(query=query, k=2, rerank={"model": "judge", "candidates": 3})
    found = run(service.search("manuals", request))["results"]
    judge = embeddings.runner("judge", "reranker")
    for hit in found:
        passage = hit["passages"][0]["text"]
        whole = next(document["text"] for document in documents if document["id"] == hit["id"])
        assert hit["rerank_score"] == pytest.approx(float(run(judge.rerank(query, [passage])).scores[0]), abs=1e-6)
        assert passage != whole[:len(passage)] or hit["passages"][0]["index"] == 0


def test_only_unchunked_collections_have_a_size_limit_and_it_says_so(parts):
    service, _ = parts
    create(service, name="plain", chunking=None)
    huge = long_text(4, 1 + VARCHAR_MAX_BYTES // 300)
    assert len(huge.encode()) > VARCHAR_MAX_BYTES
    with pytest.raises(InvalidDocumentsError, match="chunking"):
        upsert(service, [{"id": "big", "text": huge}], name="plain")
    create(service)
    assert upsert(service, [{"id": "big", "text": huge}])["upserted"] == 1
    assert run(service.documents.get_document("manuals", "big"))["text"] == huge


def test_chunking_is_for_text_documents_without_their_own_vectors(parts):
    service, _ = parts
    create(service)
    with pytest.raises(InvalidDocumentsError, match="unknown field"):
        upsert(service, [{"id": "v", "text": "a vector of its own", "vector": [0.0] * 32}])
    with pytest.raises(ValueError, match="multivector"):
        CollectionConfig(name="x", chunking={}, multivector={})
    with pytest.raises(ValueError, match="chunking cuts text"):
        CollectionConfig(name="x", chunking={}, modality="image")
    with pytest.raises(ValueError, match="reserved"):
        CollectionConfig(name="x", chunking={}, fields={"doc_id": "varchar"})
    with pytest.raises(ValueError, match="at most half"):
        CollectionConfig(name="x", chunking={"max_tokens": 64, "overlap_tokens": 40})
