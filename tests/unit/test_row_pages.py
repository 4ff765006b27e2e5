"""Reading every row of a collection, or every row a filter matches, past what one query answers: what a backup
pages through, what every id and a long document's pieces are read by. On Milvus Lite (keys listed, then rows read
by key) and a Milvus server (keyset pages), with ids that must be escaped in a filter, compared with the rows
written (numpy for the vectors) and with the ids pymilvus itself lists."""

import numpy as np
import pytest

from rayprism.platform.store.milvus import QUERY_MAX_ROWS, MilvusStore
from rayprism.platform.vectors import normalised
from tests.conftest import store_on_path
from tests.unit.test_document_pages import DIMENSIONS, chunked_rows, config, rows

pytestmark = pytest.mark.slow  # Milvus Lite and a Milvus server

ODD_IDS = ['quote"d', "back\\slash", "it's", "ünïcödé", "a b", "tab\tbed", 'both\\"', "#0"]


@pytest.fixture(params=["lite", "server"])
def store(request, tmp_path):
    with store_on_path(request, tmp_path) as store:
        yield store


def test_row_pages_hold_every_row_once_with_its_fields_and_vector(store: MilvusStore):
    store.ensure(config("paged"), DIMENSIONS)
    ids = [f"pkg-{i:03d}" for i in np.random.default_rng(1).permutation(60)] + ODD_IDS
    expected: dict = {}
    for first in range(0, len(ids), 20):  # several writes, flushed between (segments), then updates and deletes
        batch = rows(ids[first : first + 20], seed=first)
        store.upsert("paged", batch)
        store.flush("paged")
        expected |= {row["id"]: row for row in batch}
    updated = rows(ids[-12:], seed=99)
    store.upsert("paged", updated)
    expected |= {row["id"]: row for row in updated}
    store.delete("paged", ids[:5])
    for key in ids[:5]:
        del expected[key]

    pages = list(store.row_pages("paged", ["id", "text", "dense", "section"], 7))
    assert all(1 <= len(page) <= 7 for page in pages)
    read = [row for page in pages for row in page]
    assert sorted(row["id"] for row in read) == sorted(expected)  # each once: no duplicates, none missing
    assert all(row["text"] == expected[row["id"]]["text"] and row["section"] == expected[row["id"]]["section"]
               for row in read)
    stored = np.asarray([row["dense"] for row in read], dtype=np.float32)
    wanted = normalised(np.asarray([expected[row["id"]]["dense"] for row in read]))  # cosine: kept at unit length
    np.testing.assert_allclose(normalised(stored), wanted, atol=1e-6)


def test_every_id_and_a_filtered_read_go_past_one_querys_limit(store: MilvusStore):
    store.ensure(config("many"), DIMENSIONS)
    ids = [f"d{i:05d}" for i in range(QUERY_MAX_ROWS + 150)] + ODD_IDS
    written: list[dict] = []
    for first in range(0, len(ids), 4096):
        batch = rows(ids[first : first + 4096], seed=first)
        store.upsert("many", batch)
        written += batch
    store.flush("many")
    listed = sorted(row["id"] for row in store._client.query("many", filter='id like "d0%"', output_fields=["id"],
                                                             limit=QUERY_MAX_ROWS, **store._reads))
    assert listed == sorted(key for key in ids if key.startswith("d0"))  # pymilvus's own read, under its limit

    assert sorted(store.ids("many")) == sorted(ids)
    net = store._pages("many", 'section == "net"', ["id", "section", "size"])
    assert sorted(row["id"] for row in net) == sorted(row["id"] for row in written if row["section"] == "net")
    assert {row["section"] for row in net} == {"net"}


def test_a_document_of_more_pieces_than_one_query_answers_is_read_whole(store: MilvusStore, monkeypatch):
    """A document's pieces past one query's rows: the limit is lowered to 16 rows here, as 16,384 pieces would
    take minutes to write."""
    monkeypatch.setattr("rayprism.platform.store.milvus.QUERY_MAX_ROWS", 16)
    store.ensure(config("long", chunking={"max_tokens": 32, "overlap_tokens": 0}), DIMENSIONS)
    rng = np.random.default_rng(4)
    pieces = {name: chunked_rows(name, 40, rng) for name in ['long "quoted"\\', "short"]}
    for document in pieces.values():
        store.upsert("long", document)
    store.flush("long")
    for name in pieces:
        [document] = store.get("long", [name], ["id", "text"])
        assert document["text"] == " ".join(f"{name}w{j}" for j in range(40 * 4))
        assert [piece["index"] for piece in store.pieces("long", name)] == list(range(40))
    assert sorted(store.ids("long")) == sorted(pieces)
