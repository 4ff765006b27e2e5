"""What the console reads that no other route gave: pages of documents, and a collection's 2-D map (PCA), checked
against scikit-learn's PCA and against the store's own contents (a real store replica, Milvus Lite, in process)."""

import asyncio

import numpy as np
import pytest
from sklearn.decomposition import PCA

from rayprism.deployments.collection_routes import CollectionServices
from rayprism.deployments.service import EmbeddingService
from rayprism.deployments.store import StoreReplica
from rayprism.platform.api.requests import DocumentsRequest, SearchRequest
from rayprism.platform.config import CollectionConfig, ModelConfig, ServeConfig, StoreConfig
from rayprism.platform.errors import InvalidInputError
from rayprism.platform.projection import pca, sample_ids


@pytest.mark.parametrize("n", [300, 15])  # more vectors than dimensions, and fewer
def test_pca_matches_scikit_learn_up_to_each_axis_sign_and_places_new_vectors_the_same_way(n):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(n, 24)) @ rng.normal(size=(24, 24))  # correlated: distinct variances
    ours = pca(vectors)
    theirs = PCA(n_components=2, svd_solver="full").fit(vectors)
    signs = np.sign(np.sum(ours.axes * theirs.components_, axis=1))
    np.testing.assert_allclose(ours.axes, theirs.components_ * signs[:, None], atol=1e-8)
    np.testing.assert_allclose(ours.explained, theirs.explained_variance_ratio_, rtol=1e-8)
    outside = rng.normal(size=(5, 24))
    np.testing.assert_allclose(ours(outside), theirs.transform(outside) * signs, atol=1e-8)
    assert all(axis[np.argmax(np.abs(axis))] > 0 for axis in ours.axes)  # the same picture every time


def test_pca_of_too_few_or_identical_vectors_is_a_point_not_an_error():
    assert pca(np.ones((1, 4))).explained == (0.0, 0.0)
    np.testing.assert_array_equal(pca(np.ones((3, 4)))(np.ones((3, 4))), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="non-empty"):
        pca(np.zeros((0, 4)))


def test_a_sample_is_all_ids_when_few_and_the_same_sorted_subset_each_time():
    assert sample_ids(["c", "a", "b"], 5) == ["a", "b", "c"]
    ids = [f"d{number:05d}" for number in range(10_000)]
    chosen = sample_ids(list(reversed(ids)), 2000)
    assert len(set(chosen)) == 2000 and chosen == sorted(chosen) and chosen == sample_ids(ids, 2000)


@pytest.fixture(scope="module")
def services(tiny_model_path, tmp_path_factory):
    embeddings = EmbeddingService(ServeConfig(models=[ModelConfig(name="tiny", source=tiny_model_path)]))
    assert embeddings.wait_loaded(120)
    store = StoreReplica(StoreConfig(uri=str(tmp_path_factory.mktemp("map") / "store.db"),
                                     flush_after_s=0.1).model_dump(), [])
    yield CollectionServices.build(embeddings, store), store
    store.close()
    embeddings.close()


def run(coroutine):
    return asyncio.run(coroutine)


WORDS = ["apple", "pear", "bicycle", "train", "violin", "drum", "river", "mountain"]
DOCUMENTS = [{"id": f"doc-{number:03d}", "text": f"{WORDS[number % 8]} and {WORDS[(number * 3) % 8]} number {number}. "
              + " ".join(WORDS[number % 3:] * 2),  # several pieces of 16 tokens each in a chunked collection
              "kind": WORDS[number % 8]} for number in range(45)]


@pytest.mark.slow  # Milvus Lite
@pytest.mark.parametrize("chunked", [False, True])
def test_pages_cover_the_store_once_in_id_order_and_the_map_projects_the_stored_vectors(services, chunked):
    service, store = services
    name = "chunked" if chunked else "plain"
    run(service.collections.create(CollectionConfig(
        name=name, model="tiny", fields={"kind": "varchar"},
        **({"chunking": {"max_tokens": 16, "overlap_tokens": 0}} if chunked else {}))))
    run(service.documents.upsert(name, DocumentsRequest(documents=DOCUMENTS)))

    pages = [run(service.documents.page(name, 20, offset)) for offset in (0, 20, 40, 60)]
    assert [page["total"] for page in pages] == [45] * 4
    assert [len(page["data"]) for page in pages] == [20, 20, 5, 0]
    assert [(page["offset"], page["after"], page["has_more"]) for page in pages] == [
        (0, None, True), (20, None, True), (40, None, False), (60, None, False)]
    seen = [document for page in pages for document in page["data"]]
    assert [document["id"] for document in seen] == sorted(run(store.ids(name)))
    assert seen == [{"object": "document", **document} for document in DOCUMENTS]  # text and fields as stored
    walked, after = [], None  # the same documents by cursor, as the console pages
    while True:
        page = run(service.documents.page(name, 20, after=after))
        assert (page["offset"], page["after"], page["total"]) == (0 if after is None else None, after, 45)
        assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][-1]["id"])
        walked += page["data"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert walked == seen
    with pytest.raises(InvalidInputError, match="not both"):
        run(service.documents.page(name, 20, 20, after="doc-001"))

    picture = run(service.map(name, 30, "kind", None, 5))
    ids = sample_ids([document["id"] for document in DOCUMENTS], 30)
    assert picture["count"] == 45 and [point["id"] for point in picture["points"]] == ids
    assert [point["value"] for point in picture["points"]] == [DOCUMENTS[int(i[4:])]["kind"] for i in ids]
    # the store's own vectors (a chunked document's: the mean of its pieces'), projected by an independent PCA
    _, stored, _ = run(store.document_sample(name, ids, [], 10))
    expected = PCA(n_components=2, svd_solver="full").fit_transform(np.asarray(stored, dtype=np.float64))
    got = np.array([[point["x"], point["y"]] for point in picture["points"]])
    signs = np.sign(np.sum(got * expected, axis=0))
    np.testing.assert_allclose(got, expected * signs, atol=1e-5)
    if chunked:  # documents of several pieces: each point is their mean, not one piece
        assert run(store.describe(name))["count"] == 45 and len(run(store.get(name, ids[:1], ["id"]))) == 1

    placed = run(service.map(name, 30, None, "violin and drum", 5))["query"]
    hits = run(service.search(name, SearchRequest(query="violin and drum", k=5, output_fields=[])))["results"]
    assert [hit["id"] for hit in placed["hits"]] == [hit["id"] for hit in hits]
    assert [hit["rank"] for hit in placed["hits"]] == [1, 2, 3, 4, 5]
    with pytest.raises(InvalidInputError, match="color_by: unknown field 'colour'"):
        run(service.map(name, 30, "colour", None, 5))
