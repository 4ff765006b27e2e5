"""A collection's search defaults: how a request meets them (one merge), what a config may declare, and the
services keeping and using them over a real store replica (Milvus Lite) in this process, without Ray or HTTP."""

import asyncio

import pytest

from rayprism.platform.api.requests import SearchRequest
from rayprism.platform.config import CollectionConfig, ModelConfig, SearchDefaults, ServeConfig, StoreConfig
from rayprism.platform.config.base import ConfigError, parse_config
from rayprism.platform.config.search import DEFAULT_FUSION, RerankStage, RRFFusion, WeightedFusion
from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError

DEFAULTS = SearchDefaults(mode="sparse", fusion={"type": "rrf", "k": 7}, candidates=20,
                          rerank={"model": "judge", "candidates": 30, "weight": 0.5})


def request(**body) -> SearchRequest:
    """A request as the service parses it: what the body leaves out is unset."""
    return SearchRequest.model_validate({"query": "fruit", **body})


# --- the merge -----------------------------------------------------------------------


def test_a_request_that_leaves_settings_out_takes_the_defaults():
    merged = request(k=5).with_defaults(DEFAULTS)
    assert merged.mode == "sparse" and merged.fusion == RRFFusion(type="rrf", k=7)
    assert merged.rerank == RerankStage(model="judge", candidates=30, weight=0.5)
    assert merged.candidates == 30  # raised to what the rerank stage rescores, as the built-in default is
    assert merged.k == 5 and merged.query == "fruit"


def test_each_setting_a_request_gives_wins_null_included():
    given = request(mode="hybrid", fusion={"type": "weighted"}, candidates=25, rerank=None).with_defaults(DEFAULTS)
    assert (given.mode, given.fusion, given.candidates, given.rerank) == ("hybrid", DEFAULT_FUSION, 25, None)
    built_in_mode = request(mode=None).with_defaults(DEFAULTS)
    assert built_in_mode.mode is None and built_in_mode.rerank == DEFAULTS.rerank  # the rest still from the defaults
    one = request(fusion={"type": "rrf", "k": 60}).with_defaults(DEFAULTS)
    assert one.fusion.k == 60 and one.mode == "sparse"


def test_default_candidates_are_raised_to_what_the_request_needs():
    defaults = SearchDefaults(candidates=20)
    assert request(k=50).with_defaults(defaults).candidates == 50
    assert request(k=5).with_defaults(defaults).candidates == 20
    assert request(k=5, rerank={"candidates": 40}).with_defaults(defaults).candidates == 40
    assert request(k=5, candidates=None).with_defaults(defaults).candidates is None  # null: the built-in rule


def test_a_search_by_vector_or_example_takes_neither_mode_nor_rerank():
    for query in ({"vector": [0.1, 0.2]}, {"image": "data:image/png;base64,AAAA"}):
        merged = SearchRequest.model_validate({"query": query}).with_defaults(DEFAULTS)
        assert merged.mode is None and merged.rerank is None and merged.candidates == 20


def test_no_defaults_or_empty_ones_leave_the_request_as_it_is():
    plain = request(k=3)
    assert plain.with_defaults(None) is plain and plain.with_defaults(SearchDefaults()) is plain


# --- what a config may declare --------------------------------------------------------


@pytest.mark.parametrize("collection, fragment", [
    ({"bm25": False, "search_defaults": {"mode": "hybrid"}}, "needs BM25"),
    ({"search_defaults": {"mode": "multivector"}}, "needs a multivector collection"),
    ({"multivector": {}, "search_defaults": {"mode": "dense"}}, "is multivector"),
    ({"modality": "image", "search_defaults": {"rerank": {}}}, "scores stored text"),
    ({"search_defaults": {"mode": "hybrid", "k": 3}}, "Extra inputs"),
    ({"search_defaults": {"fusion": {"type": "weighted", "weights": {"dense": -1}}}}, "greater than or equal"),
])
def test_search_defaults_that_do_not_fit_the_collection_fail_when_the_config_loads(collection, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_config(ServeConfig, {"collections": [{"name": "c", **collection}]}, "serve.yaml")


def test_a_declared_rerank_default_names_a_served_reranker():
    rerank = {"name": "c", "search_defaults": {"rerank": {"model": "judge"}}}
    with pytest.raises(ConfigError, match=r"rerank.model 'judge' must name one of the reranker models \[\]"):
        parse_config(ServeConfig, {"collections": [rerank]}, "serve.yaml")
    served = parse_config(ServeConfig, {"models": [{"name": "minilm"}, {"name": "judge", "kind": "reranker",
                                                                          "source": "/nowhere"}],
                                        "collections": [rerank]}, "serve.yaml")
    assert served.collections[0].search_defaults.rerank.model == "judge"
    unnamed = {"name": "c", "search_defaults": {"mode": "hybrid", "rerank": {"weight": 0.5}}}
    with pytest.raises(ConfigError, match="left out when there is exactly one"):
        parse_config(ServeConfig, {"collections": [unnamed]}, "serve.yaml")


# --- the services ---------------------------------------------------------------------


DOCS = [{"id": "a", "text": "apples and pears", "kind": "fruit"}, {"id": "b", "text": "a red bicycle", "kind": "thing"},
        {"id": "c", "text": "pears grow on trees", "kind": "fruit"}]


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def embeddings(tiny_model_path, tiny_reranker_path):
    from rayprism.deployments.service import EmbeddingService

    config = ServeConfig(models=[ModelConfig(name="tiny", source=tiny_model_path),
                                 ModelConfig(name="judge", kind="reranker", source=tiny_reranker_path)])
    service = EmbeddingService(config)
    assert service.wait_loaded(120)
    yield service
    service.close()


DECLARED = CollectionConfig(name="declared", model="tiny", fields={"kind": "varchar"},
                            search_defaults={"mode": "dense"})


def services(embeddings, path):
    from rayprism.deployments.collection_routes import CollectionServices
    from rayprism.deployments.store import StoreReplica

    store = StoreReplica(StoreConfig(uri=str(path / "store.db"), flush_after_s=0.1).model_dump(),
                         [DECLARED.model_dump()])
    return CollectionServices.build(embeddings, store), store


@pytest.fixture()
def parts(embeddings, tmp_path):
    from rayprism.platform.api.requests import DocumentsRequest

    service, store = services(embeddings, tmp_path)
    run(service.collections.create(CollectionConfig(name="things", model="tiny", fields={"kind": "varchar"})))
    for name in ("things", "declared"):
        run(service.documents.upsert(name, DocumentsRequest(documents=DOCS)))
    yield service, store
    store.close()


def searched(service, name: str, **body) -> dict:
    return run(service.search(name, request(**body)))


@pytest.mark.slow
def test_applied_defaults_shape_plain_searches_and_a_request_still_overrides_each(parts):
    service, store = parts
    assert searched(service, "things")["mode"] == "hybrid"  # the built-in mode, no defaults yet
    described = run(service.collections.apply_search_defaults("things", SearchDefaults(
        mode="sparse", candidates=10, rerank={"model": "judge", "candidates": 3, "weight": 1.0})))
    assert described["search_defaults"]["mode"] == "sparse" and described["search_defaults_applied"] is True
    assert run(store.describe("things"))["search_defaults"] == described["search_defaults"]
    plain = searched(service, "things", k=2)
    assert plain["mode"] == "sparse" and all("rerank_score" in hit for hit in plain["results"])
    overridden = searched(service, "things", k=2, mode="dense", rerank=None)
    assert overridden["mode"] == "dense" and all("rerank_score" not in hit for hit in overridden["results"])
    by_vector = run(service.search("things", SearchRequest.model_validate(
        {"query": {"vector": [0.1] * 16}, "k": 1})))
    assert by_vector["mode"] == "dense"  # a search by vector keeps its only mode
    removed = run(service.collections.apply_search_defaults("things", None))
    assert removed["search_defaults"] is None and removed["search_defaults_applied"] is False
    assert searched(service, "things")["mode"] == "hybrid"


@pytest.mark.slow
def test_applied_defaults_replace_a_declared_block_until_removed_and_a_restart_keeps_them(parts, embeddings, tmp_path):
    service, store = parts
    assert searched(service, "declared")["mode"] == "dense"
    assert run(store.describe("declared"))["search_defaults_applied"] is False
    run(service.collections.apply_search_defaults("declared", SearchDefaults(fusion={"type": "rrf", "k": 5})))
    assert searched(service, "declared")["mode"] == "hybrid"  # the applied block replaces the declared one whole
    run(service.collections.apply_search_defaults("things", SearchDefaults(mode="sparse")))
    store.close()
    again, store_again = services(embeddings, tmp_path)  # the same file: a restart
    try:
        assert run(store_again.describe("things"))["search_defaults"] == {"mode": "sparse", "fusion": None,
                                                                          "candidates": None, "rerank": None}
        assert searched(again, "things")["mode"] == "sparse"
        assert run(store_again.search_defaults("declared")) == {"fusion": {"type": "rrf", "k": 5}}
        run(again.collections.apply_search_defaults("declared", None))
        assert searched(again, "declared")["mode"] == "dense"  # the declared block again
    finally:
        store_again.close()


@pytest.mark.slow
def test_defaults_that_do_not_fit_are_refused_before_they_are_kept(parts):
    service, store = parts
    cases = [(SearchDefaults(mode="multivector"), InvalidInputError, "needs a multivector collection"),
             (SearchDefaults(rerank={"model": "nobody"}), NotFoundError, "'nobody' does not exist"),
             (SearchDefaults(rerank={"model": "tiny"}), InvalidInputError, "not a reranker")]
    for defaults, error, fragment in cases:
        with pytest.raises(error, match=fragment):
            run(service.collections.apply_search_defaults("things", defaults))
    assert run(store.search_defaults("things")) is None
    with pytest.raises(NotFoundError):
        run(service.collections.apply_search_defaults("nothing_here", SearchDefaults(mode="dense")))


@pytest.mark.slow
def test_creating_an_existing_collection_again_compares_search_defaults_only_when_given(parts):
    service, _ = parts
    config = CollectionConfig(name="things", model="tiny", fields={"kind": "varchar"})
    run(service.collections.apply_search_defaults("things", SearchDefaults(mode="sparse")))
    _, created = run(service.collections.create(config))  # the same body as before: not a conflict
    assert created is False
    with pytest.raises(ConflictError, match=r"search_defaults: requested .*PUT \.\.\./search_defaults changes them"):
        run(service.collections.create(config.model_copy(update={"search_defaults": SearchDefaults(mode="dense")})))


@pytest.mark.slow
def test_another_replicas_change_is_in_use_within_the_refresh(parts, embeddings, monkeypatch):
    """Two serving replicas over one store: defaults applied through one reach the other's searches once its
    copy is older than SEARCH_DEFAULTS_REFRESH_S (set to 0 here: at once)."""
    from rayprism.deployments import collections
    from rayprism.deployments.collection_routes import CollectionServices

    service, store = parts
    other = CollectionServices.build(embeddings, store)
    assert searched(other, "things")["mode"] == "hybrid"
    run(service.collections.apply_search_defaults("things", SearchDefaults(mode="sparse")))
    assert searched(other, "things")["mode"] == "hybrid"  # its copy is fresh for a second
    monkeypatch.setattr(collections, "SEARCH_DEFAULTS_REFRESH_S", 0.0)
    assert searched(other, "things")["mode"] == "sparse"


def test_weighted_fusion_defaults_round_trip_through_json():
    defaults = SearchDefaults(mode="hybrid", fusion=WeightedFusion(type="weighted", weights={"dense": 0.3,
                                                                                             "sparse": 0.7}))
    assert SearchDefaults.model_validate_json(defaults.model_dump_json()) == defaults


def test_z_score_fusion_equals_the_weighted_sum_of_standard_scores():
    import numpy as np

    from rayprism.platform.store.fusion import fuse

    dense = [("a", 0.9), ("b", 0.5), ("c", 0.4), ("d", 0.1)]
    sparse = [("c", 12.0), ("e", 3.0), ("a", 2.5)]
    fusion = WeightedFusion(type="weighted", weights={"dense": 0.6, "sparse": 0.4}, normalization="z_score")
    expected: dict[str, float] = {}
    for hits, weight in ((dense, 0.6), (sparse, 0.4)):
        values = np.array([score for _, score in hits])
        for (doc_id, _), z in zip(hits, (values - values.mean()) / values.std()):
            expected[doc_id] = expected.get(doc_id, 0.0) + weight * z  # a list that lacks it adds nothing
    fused = fuse(dense, sparse, fusion)
    assert [doc_id for doc_id, _ in fused] == sorted(expected, key=expected.get, reverse=True)
    assert dict(fused) == pytest.approx(expected)
    assert fuse([("x", 1.0)], [], fusion) == [("x", 0.0)]  # one hit, or all equal: no spread, no standing
    min_max = fuse(dense, sparse, WeightedFusion(type="weighted", weights={"dense": 0.6, "sparse": 0.4}))
    assert [doc_id for doc_id, _ in min_max] != [doc_id for doc_id, _ in fused]  # the scale changes the order


@pytest.mark.slow
def test_a_milvus_server_keeps_applied_defaults_as_a_collection_property(milvus_server_uri):
    """The server path of what a Lite file does above: kept, read back by a new client, removed (an empty value:
    a 2.3 server cannot drop a property)."""
    from rayprism.platform.store.milvus import MilvusStore
    from tests.conftest import drop_new_collections

    store = MilvusStore(milvus_server_uri, flush_after_s=600)
    before = set(store.names())
    try:
        store.ensure(CollectionConfig(name="tuned_on_server", bm25=False, search_defaults={"mode": "dense"}), 8)
        assert store.applied_search_defaults("tuned_on_server") is None
        assert store.config_of("tuned_on_server").search_defaults == SearchDefaults(mode="dense")
        applied = SearchDefaults(mode="dense", candidates=80)
        store.apply_search_defaults("tuned_on_server", applied)
        assert MilvusStore(milvus_server_uri).applied_search_defaults("tuned_on_server") == applied
        store.apply_search_defaults("tuned_on_server", None)
        assert store.applied_search_defaults("tuned_on_server") is None
        with pytest.raises(NotFoundError):
            store.apply_search_defaults("no_such_collection", applied)
    finally:
        drop_new_collections(store, before)
        store.close()
