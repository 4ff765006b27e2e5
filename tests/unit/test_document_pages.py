"""What the console's document browser and map read from the store, on each path: the in-memory mirror, Milvus Lite
itself, and a Milvus server (2.3). Pages are walked by cursor and compared with the ids pymilvus reads from Milvus
itself (a plain query, sorted here), also while other documents are written; the map's vectors are compared with
numpy over the vectors written."""

import threading

import numpy as np
import pytest

from rayprism.platform.config import CollectionConfig
from rayprism.platform.projection import sample_ids
from rayprism.platform.store.milvus import QUERY_MAX_ROWS, MilvusStore
from rayprism.platform.store.pieces import document_hash, piece_rows, tiling
from tests.conftest import STORE_PATHS, store_on_path

pytestmark = pytest.mark.slow  # Milvus Lite and a Milvus server

DIMENSIONS = 8
SECTIONS = ["net", "libs", "games"]


@pytest.fixture(params=STORE_PATHS)
def store(request, tmp_path):
    with store_on_path(request, tmp_path) as store:
        yield store


def ready(store: MilvusStore, name: str) -> None:
    """The mirror built where the path has one; none where it has not."""
    if store.path == "mirror":
        assert store.mirrors.await_mirror(name, 60) is not None
    else:
        assert store.mirrors.built(name) is None


def rows(ids: list, seed: int = 0, text: str = "package") -> list[dict]:
    vectors = np.random.default_rng(seed).standard_normal((len(ids), DIMENSIONS)).astype(np.float32) * 3
    return [{"id": key, "text": f"{text} {key}", "dense": vector, "section": SECTIONS[i % 3], "size": i}
            for i, (key, vector) in enumerate(zip(ids, vectors))]


def config(name: str, **changes) -> CollectionConfig:
    return CollectionConfig(name=name, bm25=False, fields={"section": "varchar", "size": "int64"}, **changes)


def stored_ids(store: MilvusStore, name: str, key: str = "id", filter: str = "") -> list:
    """Every id as pymilvus reads it from Milvus with a plain query (no cursor, no order), sorted here."""
    return sorted(row[key] for row in store._client.query(name, filter=filter, output_fields=[key],
                                                          limit=QUERY_MAX_ROWS, **store._reads))


def walk(store: MilvusStore, name: str, limit: int, fields=("id",)) -> list[list[dict]]:
    """Every page, each asked after the last id of the one before."""
    pages, after = [], None
    while True:
        page = store.document_page(name, limit, list(fields), after=after)
        pages.append(page)
        if not page.has_more:
            return pages
        after = page.rows[-1]["id"]


def test_pages_by_cursor_hold_every_document_once_in_id_order_and_offsets_agree(store):
    store.ensure(config("paged"), DIMENSIONS)
    ids = [f"pkg-{i:03d}" for i in np.random.default_rng(1).permutation(90)] + ["a", "a b", "b", "c"]
    ids[-2:] = ['quote"d', "zz\\"]  # ids that must be escaped in a filter
    for first in range(0, len(ids), 25):  # several writes (segments, once flushed), updates and deletes among them
        store.upsert("paged", rows(ids[first : first + 25], seed=first))
        store.flush("paged")
    store.upsert("paged", rows(ids[:10], seed=99, text="changed"))
    store.delete("paged", ids[10:14])
    ready(store, "paged")
    expected = stored_ids(store, "paged")
    assert len(expected) == len(ids) - 4

    pages = walk(store, "paged", 9, ["id", "text", "section"])
    assert [len(page.rows) for page in pages] == [9] * 10  # 90 documents: the tenth page ends them, and says so
    assert [page.has_more for page in pages] == [True] * 9 + [False]
    assert {page.total for page in pages} == {90}
    walked = [row for page in pages for row in page.rows]
    assert [row["id"] for row in walked] == expected
    assert all(row["text"] == (f"changed {row['id']}" if row["id"] in ids[:10] else f"package {row['id']}")
               for row in walked)

    by_offset = [store.document_page("paged", 20, ["id"], offset=offset) for offset in (0, 20, 80, 90, 500)]
    assert [[row["id"] for row in page.rows] for page in by_offset] == [
        expected[:20], expected[20:40], expected[80:], [], []]
    assert [page.has_more for page in by_offset] == [True, True, False, False, False]
    after = store.document_page("paged", 5, ["id"], after="pkg-0505")  # a cursor need not be stored
    assert [row["id"] for row in after.rows] == [key for key in expected if key > "pkg-0505"][:5]


def test_integer_ids_page_in_numeric_order(store):
    store.ensure(config("numbered", id_type="int64"), DIMENSIONS)
    ids = [int(i) for i in np.random.default_rng(2).permutation(40) * 37 - 500]
    store.upsert("numbered", rows(ids[:20]))
    store.flush("numbered")
    store.upsert("numbered", rows(ids[20:], seed=1))
    ready(store, "numbered")
    assert [row["id"] for page in walk(store, "numbered", 6) for row in page.rows] == sorted(ids)
    assert [row["id"] for row in store.document_page("numbered", 3, ["id"], after=-1).rows] == [
        key for key in sorted(ids) if key > -1][:3]


def chunked_rows(document_id: str, pieces: int, rng: np.random.Generator) -> list[dict]:
    words = [f"{document_id}w{j}" for j in range(pieces * 4)]
    text = " ".join(words)
    starts = [text.index(word) for word in words]
    spans = [(starts[p * 4], starts[p * 4 + 3] + len(words[p * 4 + 3])) for p in range(pieces)]
    document = {"id": document_id, "text": text, "section": SECTIONS[pieces % 3], "size": pieces}
    piece_list = piece_rows(document, "text", tiling(text, spans), document_hash([text]))
    for row in piece_list:
        row["dense"] = rng.standard_normal(DIMENSIONS).astype(np.float32) * 2
    return piece_list


def test_a_chunked_collections_pages_are_its_documents_in_the_order_of_their_first_pieces_keys(store):
    store.ensure(config("chunked", chunking={"max_tokens": 32, "overlap_tokens": 0}), DIMENSIONS)
    rng = np.random.default_rng(3)
    names = [f"doc-{i:02d}" for i in range(23)] + ["a", "a!b", "a-b"]  # "a!b#0" sorts before "a#0"
    for name in names:
        store.upsert("chunked", chunked_rows(name, 1 + len(name) % 4, rng))
    ready(store, "chunked")
    first_pieces = stored_ids(store, "chunked", filter="piece_index == 0")
    pages = walk(store, "chunked", 4, ["id", "text", "section"])
    assert [row["id"] for page in pages for row in page.rows] == [key.rpartition("#")[0] for key in first_pieces]
    assert sorted(row["id"] for page in pages for row in page.rows) == sorted(names)
    assert {page.total for page in pages} == {len(names)}
    document = next(row for page in pages for row in page.rows if row["id"] == "a-b")
    assert document["text"] == " ".join(f"a-bw{j}" for j in range(4 * (1 + 3 % 4)))  # whole, joined from its pieces


def test_a_walk_while_documents_are_written_sees_each_one_stored_throughout_exactly_once(store):
    """Kept documents are written again, new ones added and others deleted between every two pages at least: by a
    writer running beside the walk (a server's: between the pages, since its reads wait for each write's timestamp)."""
    store.ensure(config("busy"), DIMENSIONS)
    kept = [f"k{i:03d}" for i in range(60)]
    store.upsert("busy", rows(kept))
    store.upsert("busy", rows([f"gone{i:03d}" for i in range(12)]))
    ready(store, "busy")
    rounds = threading.Condition()
    written = [0]

    def write_round() -> None:
        round_ = written[0]
        store.upsert("busy", rows(kept[round_ % 6 * 10 : round_ % 6 * 10 + 10], seed=round_))
        store.upsert("busy", rows([f"new{round_:03d}-{i}" for i in range(3)], seed=round_))
        if round_ < 12:
            store.delete("busy", [f"gone{round_:03d}"])
        with rounds:
            written[0] += 1
            rounds.notify_all()

    beside = store.path != "server"
    stop = threading.Event()

    def write_until_stopped() -> None:
        while not stop.is_set():
            write_round()

    writer = threading.Thread(target=write_until_stopped)
    if beside:
        writer.start()
    try:
        walked, after, pages = [], None, 0
        while True:
            page = store.document_page("busy", 5, ["id"], after=after)
            walked += [row["id"] for row in page.rows]
            if not page.has_more:
                break
            after = page.rows[-1]["id"]
            pages += 1
            if not beside:
                write_round()
            with rounds:  # a round of writes every other page at least
                assert rounds.wait_for(lambda wanted=pages // 2: written[0] >= wanted, timeout=60)
    finally:
        stop.set()
        if beside:
            writer.join()
    assert pages >= 12 and written[0] >= pages // 2
    assert walked == sorted(set(walked))  # in order, none twice
    assert set(kept) <= set(walked)


def test_the_maps_sample_and_vectors_are_the_same_from_the_mirror_and_from_milvus(store):
    if store.path == "lite":
        pytest.skip("compared in the mirror case (Lite with and without its mirror)")
    store.ensure(config("mapped"), DIMENSIONS)
    written = rows([f"m{i:03d}" for i in range(60)])
    store.upsert("mapped", written)
    store.ensure(config("mapped_pieces", chunking={"max_tokens": 32, "overlap_tokens": 0}), DIMENSIONS)
    rng = np.random.default_rng(4)
    pieces = [row for i in range(20) for row in chunked_rows(f"c{i:02d}", 1 + i % 3, rng)]
    store.upsert("mapped_pieces", pieces)
    ready(store, "mapped")
    ready(store, "mapped_pieces")

    count, sample, version = store.document_id_sample("mapped", 25)
    assert count == 60 and sample == sample_ids([row["id"] for row in written], 25)
    assert (version is None) == (store.path != "mirror")
    if version is not None:  # the mirror's version: the same until a write, then another
        assert store.document_id_sample("mapped", 25)[2] == version
        store.upsert("mapped", written[:1])
        assert store.document_id_sample("mapped", 25)[2] not in (None, version)
    found, matrix, shown = store.document_sample("mapped", [*sample, "missing"], ["section"], 9)
    assert found == sample
    by_id = {row["id"]: row for row in written}
    expected = np.stack([by_id[key]["dense"] / np.linalg.norm(by_id[key]["dense"]) for key in sample])
    np.testing.assert_allclose(matrix, expected, atol=1e-6)  # unit length: the cosine collection's geometry
    assert shown == [{"text": by_id[key]["text"][:9], "section": by_id[key]["section"]} for key in sample]

    count, sample, _ = store.document_id_sample("mapped_pieces", 8)
    assert count == 20 and sample == sample_ids([f"c{i:02d}" for i in range(20)], 8)
    found, matrix, shown = store.document_sample("mapped_pieces", sample, [], 12)
    assert found == sample
    expected = [np.mean([row["dense"] / np.linalg.norm(row["dense"]) for row in pieces if row["doc_id"] == key], axis=0)
                for key in sample]
    np.testing.assert_allclose(matrix, np.stack(expected), atol=1e-6)
    assert [item["text"] for item in shown] == [next(row["text"] for row in pieces if row["id"] == f"{key}#0")[:12]
                                                for key in sample]

    if store.path == "mirror":  # the same answers from Milvus Lite, without the mirror
        for name in ("mapped", "mapped_pieces"):
            ids = store.document_id_sample(name, 10)[1]
            with_mirror = store.document_id_sample(name, 10), store.document_sample(name, ids, ["section"], 50)
            store.mirrors.drop(name)
            assert store.mirrors.built(name) is None
            without = store.document_id_sample(name, 10), store.document_sample(name, ids, ["section"], 50)
            assert len(with_mirror[1][0]) == 10
            assert with_mirror[0][:2] == without[0][:2] and without[0][2] is None
            assert with_mirror[1][0] == without[1][0] and with_mirror[1][2] == without[1][2]
            np.testing.assert_allclose(with_mirror[1][1], without[1][1], atol=1e-6)
