"""The store layer against a real Milvus Lite file (no Ray)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rayprism.platform.config import CollectionConfig, DenseIndexConfig
from rayprism.platform.errors import ConflictError, InvalidInputError, NotFoundError
from rayprism.platform.store.documents import InvalidDocumentsError, validate_documents
from rayprism.platform.store.filters import check_filter
from rayprism.platform.store.fusion import FusionWeights, WeightedFusion
from rayprism.platform.store.milvus import MilvusStore, SearchQuery

CONFIG = CollectionConfig(name="docs", fields={"section": "varchar", "size": "int64", "score": "double",
                                               "ok": "bool", "meta": "json"})


@pytest.fixture()
def store(tmp_path):
    store = MilvusStore(str(tmp_path / "sub" / "store.db"), flush_after_s=0.05)
    yield store
    store.close()


def rows(n: int, dims: int = 4) -> list[dict]:
    rng = np.random.default_rng(n)
    words = ["apple", "banana", "cherry", "damson"]
    return [
        {"id": str(i), "text": f"{words[i % 4]} pie number {i}", "dense": rng.standard_normal(dims).astype(np.float32),
         "section": words[i % 4], "size": i, "score": i / 2, "ok": i % 2 == 0, "meta": {"i": i}}
        for i in range(n)
    ]


@pytest.mark.slow  # starts Milvus Lite
def test_create_then_verify_the_same_config(store):
    store.ensure(CONFIG, 4)
    assert store.names() == ["docs"]
    assert store.ensure(CONFIG, 4).fields == CONFIG.fields
    assert store.config_of("docs") == CONFIG


@pytest.mark.slow  # starts Milvus Lite
def test_ensuring_one_collection_from_many_threads_at_once_creates_it_once(store):
    """Every API replica ensures the declared collections as it starts: they race (CI saw 'already exists')."""
    for round_ in range(3):
        config = CONFIG.model_copy(update={"name": f"docs_{round_}"})
        start = threading.Barrier(6)

        def ensure(config: CollectionConfig, start: threading.Barrier) -> list[str]:
            start.wait()
            return sorted(store.ensure(config, 4).fields)

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(ensure, [config] * 6, [start] * 6))
        assert results == [sorted(CONFIG.fields)] * 6
        assert store.config_of(config.name) == config
    assert store.names() == ["docs_0", "docs_1", "docs_2"]


@pytest.mark.slow  # starts Milvus Lite
def test_a_different_schema_is_a_conflict_that_says_what_differs(store):
    store.ensure(CONFIG, 4)
    changed = CONFIG.model_copy(update={
        "fields": {**CONFIG.fields, "size": "double", "extra": "bool"},
        "bm25": False,
        "index": DenseIndexConfig(metric="IP"),
    })
    with pytest.raises(ConflictError) as caught:
        store.ensure(changed, 8)
    message = caught.value.message
    for fragment in ("dimensions: config 8, store 4", "bm25: config False, store True",
                     "metric: config 'IP', store 'COSINE'", "field 'size': config double, store int64",
                     "field 'extra': config bool, store absent"):
        assert fragment in message
    assert caught.value.http_status == 409


@pytest.mark.slow  # starts Milvus Lite
def test_upsert_count_get_delete(store):
    store.ensure(CONFIG, 4)
    assert store.upsert("docs", rows(10)) == 10
    assert store.upsert("docs", rows(10)[:3]) == 3
    assert store.count("docs") == 10
    (got,) = store.get("docs", ["3"], ["text", "meta"])
    assert got["text"] == "damson pie number 3" and got["meta"] == {"i": 3}
    assert store.delete("docs", ["3", "4", "no-such-id"]) == 2  # what existed, not what was asked
    assert store.count("docs") == 8 and store.get("docs", ["3"], ["text"]) == []
    assert store.delete("docs", ["3"]) == 0


@pytest.mark.slow  # starts Milvus Lite
def test_search_modes_fusions_and_filters(store):
    store.ensure(CONFIG, 4)
    data = rows(20)
    store.upsert("docs", data)
    store.flush("docs")
    target = data[6]
    common = {"k": 3, "dense_vector": target["dense"], "text": "cherry", "output_fields": ["section"]}
    assert store.search("docs", SearchQuery(mode="dense", **common)).ids[0] == "6"
    assert {fields["section"] for fields in store.search("docs", SearchQuery(mode="sparse", **common)).fields} == {"cherry"}
    hybrid = store.search("docs", SearchQuery(mode="hybrid", **common))
    assert hybrid.ids[0] == "6" and len(hybrid) == 3 == len(hybrid.scores) == len(hybrid.fields)
    dense_only = WeightedFusion(type="weighted", weights=FusionWeights(dense=1, sparse=0))
    weighted = store.search("docs", SearchQuery(mode="hybrid", fusion=dense_only, **common))
    assert weighted.ids == store.search("docs", SearchQuery(mode="dense", **common)).ids
    filtered = store.search("docs", SearchQuery(mode="hybrid", filter="size >= 10 and ok == true", **common))
    assert filtered and all(int(doc_id) >= 10 and int(doc_id) % 2 == 0 for doc_id in filtered.ids)
    with pytest.raises(InvalidInputError, match="filter: "):
        store.search("docs", SearchQuery(mode="dense", filter="size >>> 3", **common))


@pytest.mark.slow  # starts Milvus Lite
def test_missing_collection_is_not_found(store):
    with pytest.raises(NotFoundError):
        store.search("nope", SearchQuery(mode="dense", k=1, dense_vector=[0.0] * 4))
    with pytest.raises(NotFoundError):
        store.drop("nope")


@pytest.mark.slow  # starts Milvus Lite
def test_writes_are_flushed_soon_after_the_last_one(store, monkeypatch):
    store.ensure(CONFIG, 4)
    flushed = []
    real_flush = store._client.flush
    monkeypatch.setattr(store._client, "flush", lambda name: (flushed.append(name), real_flush(name)))
    for batch in range(3):
        store.upsert("docs", rows(5)[batch:batch + 1])
    import time

    deadline = time.monotonic() + 5
    while not flushed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert flushed == ["docs"]  # three writes, one flush


@pytest.mark.slow  # starts Milvus Lite
def test_int64_ids(tmp_path):
    store = MilvusStore(str(tmp_path / "ints.db"))
    config = CollectionConfig(name="ints", id_type="int64")
    store.ensure(config, 4)
    store.upsert("ints", [{"id": 7, "text": "seven", "dense": [1.0, 0, 0, 0]}])
    assert store.get("ints", [7], ["text"])[0]["id"] == 7
    store.close()


@pytest.mark.slow  # starts Milvus Lite
def test_ids_with_quotes_backslashes_and_line_breaks_are_read_and_deleted(store):
    """pymilvus's get(ids=) and delete(ids=) quote ids without escaping: these failed or found nothing."""
    store.ensure(CONFIG, 4)
    awkward = ['say "hi"', "it's", "back\\slash", 'both\\"', "two\nlines", "tab\there", "été 中文"]
    written = [{**row, "id": key} for row, key in zip(rows(len(awkward)), awkward)]
    assert store.upsert("docs", written) == len(awkward)
    for key, row in zip(awkward, written):
        assert store.get("docs", [key], ["text"]) == [{"id": key, "text": row["text"]}]
    assert sorted(row["id"] for row in store.get("docs", awkward, [])) == sorted(awkward)
    assert store.delete("docs", awkward[:4]) == 4
    assert store.count("docs") == len(awkward) - 4 and store.get("docs", awkward[:4], ["text"]) == []


def test_ids_with_control_characters_are_refused_before_milvus():
    with pytest.raises(InvalidDocumentsError, match="control characters"):
        validate_documents(CONFIG, [{"id": "bell\x07", "text": "t"}])


class TestDocumentValidation:
    def test_good_documents_become_rows(self):
        result = validate_documents(CONFIG, [{"id": 5, "text": "t", "size": 3, "meta": [1, 2]}, {"id": "b", "text": "u"}])
        assert result[0]["id"] == "5" and result[0]["size"] == 3 and result[0]["section"] is None
        assert result[1]["id"] == "b"

    @pytest.mark.parametrize(
        "document, field, fragment",
        [
            ({"text": "t"}, "id", "non-empty string"),
            ({"id": "", "text": "t"}, "id", "non-empty string"),
            ({"id": "a", "text": " "}, "text", "non-empty string"),
            ({"id": "a", "text": "t", "size": 1.5}, "size", "64-bit integer"),
            ({"id": "a", "text": "t", "size": True}, "size", "64-bit integer"),
            ({"id": "a", "text": "t", "size": 2**63}, "size", "64-bit integer"),
            ({"id": "a", "text": "t", "score": float("nan")}, "score", "finite number"),
            ({"id": "a", "text": "t", "ok": "yes"}, "ok", "true or false"),
            ({"id": "a", "text": "t", "section": 3}, "section", "must be a string"),
            ({"id": "a", "text": "x" * 70000}, "text", "longer than 65535 bytes"),
            ({"id": "a", "text": "t", "other": 1}, "other", "unknown field"),
        ],
    )
    def test_each_problem_is_reported_with_index_and_field(self, document, field, fragment):
        with pytest.raises(InvalidDocumentsError) as caught:
            validate_documents(CONFIG, [{"id": "fine", "text": "ok"}, document])
        (problem,) = caught.value.problems
        assert (problem.index, problem.field) == (1, field) and fragment in problem.message
        assert caught.value.to_body()["error"]["errors"] == [problem.to_dict()]

    def test_repeated_ids_in_one_batch(self):
        with pytest.raises(InvalidDocumentsError, match=r"documents\[2\].id: repeats documents\[0\]"):
            validate_documents(CONFIG, [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}])

    def test_int64_collections_need_integer_ids(self):
        config = CollectionConfig(name="ints", id_type="int64")
        assert validate_documents(config, [{"id": 3, "text": "x"}])[0]["id"] == 3
        with pytest.raises(InvalidDocumentsError, match="64-bit integer"):
            validate_documents(config, [{"id": "3", "text": "x"}])


class TestFilterCheck:
    FIELDS = ["id", "text", "section", "size", "meta"]

    @pytest.mark.parametrize(
        "expression",
        [
            'section == "net"',
            "size > 10 AND NOT (section in ['a', 'b'])",
            'section like "lib%" or size <= 3.5e2',
            'json_contains(meta["tags"], "x") and meta["k"] == 1',
            "text == 'colour == red'",  # words inside string literals are not fields
            'section == "say \\"unknown\\" here"',
            "meta is null or exists meta['x']",
        ],
    )
    def test_known_fields_pass(self, expression):
        assert check_filter(f"  {expression} ", self.FIELDS) == expression

    @pytest.mark.parametrize("expression, name", [("colour == 'red'", "colour"), ("size > 1 and secton == 'x'", "secton")])
    def test_unknown_fields_are_named(self, expression, name):
        with pytest.raises(InvalidInputError, match=f"unknown field '{name}'; filterable fields are"):
            check_filter(expression, self.FIELDS)

    def test_an_unterminated_string_is_named(self):
        with pytest.raises(InvalidInputError, match="unterminated string literal at column 12"):
            check_filter("section == 'net and size > 1", self.FIELDS)


def reopened(path: str, count: int, **options) -> MilvusStore:
    """A store file with ``count`` rows in ``docs``, written by one store and opened again by another."""
    first = MilvusStore(path)
    first.ensure(CONFIG, 4)
    first.upsert("docs", rows(count))
    first.close()
    return MilvusStore(path, **options)


@pytest.mark.slow  # starts Milvus Lite
def test_a_reopened_store_serves_its_collections(tmp_path):
    second = reopened(str(tmp_path / "reopen.db"), 6)
    assert second.count("docs") == 6
    assert second.search("docs", SearchQuery(mode="dense", k=1, dense_vector=rows(6)[2]["dense"])).ids == ["2"]
    second.close()


@pytest.mark.slow  # starts Milvus Lite
def test_warming_a_reopened_collection_builds_its_mirror_before_the_first_search(tmp_path):
    second = reopened(str(tmp_path / "warm.db"), 20, cache_max_rows=1000)
    try:
        assert second.mirrors.built("docs") is None  # a reopened store mirrors nothing until asked
        second.warm("docs")
        second.warm("not-created-yet")  # nothing to warm, no error
        assert len(second.mirrors.built("docs")) == 20
        query = rows(20)[7]
        assert second.search("docs", SearchQuery(mode="hybrid", k=1, dense_vector=query["dense"],
                                                 text=query["text"])).ids == ["7"]
    finally:
        second.close()


@pytest.mark.slow  # starts Milvus Lite
def test_a_lite_file_held_by_another_process_is_a_clear_error(store):
    import subprocess
    import sys

    store.ensure(CONFIG, 4)
    probe = (
        "from rayprism.platform.store.milvus import MilvusStore\n"
        "from rayprism.platform.errors import StoreError\n"
        "try:\n"
        f"    MilvusStore({store.uri!r})\n"
        "except StoreError as error:\n"
        "    print(error.message)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "cannot open the store (store.uri)" in result.stdout and store.uri not in result.stdout
    assert "held by the one process that opened it" in result.stdout


@pytest.mark.slow  # starts Milvus Lite
def test_reads_during_a_flush_see_every_row(tmp_path):
    """Milvus Lite answers a get made while a collection flushes with rows missing; the store
    makes reads wait for the flush (without that, most of these tries came back short)."""
    import threading

    store = MilvusStore(str(tmp_path / "store.db"), flush_after_s=600)
    try:
        for attempt in range(4):
            name = f"docs{attempt}"
            store.ensure(CONFIG.model_copy(update={"name": name}), 64)
            store.upsert(name, rows(1000, dims=64))
            ids = [str(i) for i in range(0, 1000, 2)]
            flushing = threading.Thread(target=store.flush, args=(name,))
            flushing.start()
            reads = 0
            while flushing.is_alive() or not reads:
                assert len(store.get(name, ids, ["size"])) == len(ids), f"attempt {attempt}"
                reads += 1
            flushing.join()
    finally:
        store.close()


@pytest.mark.parametrize("text, version", [("v2.3.5", (2, 3)), ("2.5.0-rc1", (2, 5)), (" v2.6.1 ", (2, 6)),
                                           ("master-20240101", None), ("", None)])
def test_server_versions_are_read_as_major_minor(text, version):
    from rayprism.platform.store.server_versions import parse_version

    assert parse_version(text) == version


def test_a_server_version_that_cannot_be_read_lets_the_server_answer():
    from rayprism.platform.store.server_versions import check_server_supports

    check_server_supports(CollectionConfig(name="docs"), "master-20240101")  # no error: Milvus decides
    with pytest.raises(InvalidInputError, match=r"version v2\.4\.9; BM25 and sparse vectors need Milvus >= 2\.5"):
        check_server_supports(CollectionConfig(name="docs"), "v2.4.9")
    check_server_supports(CollectionConfig(name="docs", bm25=False, compression={"type": "binary"}), "v2.4.0")


@pytest.mark.slow  # starts Milvus Lite
def test_aliases_repoint_resolve_and_survive_a_reopen(tmp_path):
    uri = str(tmp_path / "store.db")
    store = MilvusStore(uri, flush_after_s=0.05)
    for name in ("old", "new"):
        store.ensure(CONFIG.model_copy(update={"name": name}), 4)
    assert store.aliases.point("live", "old") is None
    assert store.aliases.point("live", "new") == "old"
    assert (store.aliases.target("live"), store.aliases.target("old")) == ("new", "old")
    with pytest.raises(ConflictError):
        store.drop("new")  # "live" still reaches it
    with pytest.raises(ConflictError):
        store.aliases.point("old", "new")  # a collection's name
    with pytest.raises(NotFoundError):
        store.aliases.point("other", "missing")
    store.close()
    reopened = MilvusStore(uri, flush_after_s=0.05)  # Milvus Lite keeps aliases in its own file
    try:
        assert reopened.aliases.table() == {"live": "new"}
        assert reopened.names() == ["new", "old"]
        assert reopened.aliases.remove("live") == "new"
        reopened.drop("new")
        assert reopened.names() == ["old"] and reopened.aliases.table() == {}
    finally:
        reopened.close()
