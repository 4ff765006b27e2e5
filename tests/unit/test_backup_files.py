"""Backups against the store itself (no Ray): a collection's snapshot pages → parquet parts + manifest → rows
written back, on Milvus Lite and on a real Milvus server. A restored collection must answer searches as the
original did (ids and scores), checked against numpy over the vectors written; a damaged backup is refused."""

import itertools
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from rayprism.platform.config import CollectionConfig
from rayprism.platform.errors import InvalidInputError
from rayprism.platform.store.backup_files import MANIFEST, BackupWriter, read_manifest, read_pages, verify
from rayprism.platform.store.milvus import MilvusStore, SearchQuery
from rayprism.platform.store.snapshots import (
    arrow_schema,
    from_ipc,
    merge_changes,
    page_count,
    read_page,
    rows_of,
    stored_columns,
    table_of,
    write_pages,
    write_snapshot,
)
from rayprism.platform.store.tokens import TOKENS_KEY
from tests.conftest import drop_new_collections

DIMENSIONS = 32
PAGE_ROWS = 64


def documents(n: int, seed: int = 0, nulls: bool = True) -> tuple[list[dict], np.ndarray]:
    """``nulls``: some fields left empty (a Milvus 2.3 server stores none)."""
    vectors = np.random.default_rng(seed).standard_normal((n, DIMENSIONS)).astype(np.float32)
    rows = [{"id": f"doc{i:04d}", "text": f"package number {i} about {'network' if i % 3 else 'games'}",
             "dense": vectors[i], "section": ["net", "libs", None if nulls else "games"][i % 3], "size": i,
             "meta": {"tags": [i % 5], "name": f"p{i}"} if i % 4 or not nulls else None} for i in range(n)]
    return rows, vectors


def backup(store: MilvusStore, name: str, directory, tmp_path) -> None:
    """What the service and ``rayprism backup`` do between them: a snapshot spooled, read back by page as
    Arrow IPC, written as parts with a manifest."""
    config = store.config_of(name)
    dimensions = store.layout(name).dimensions
    spool = tmp_path / f"{name}-spool.parquet"
    tokens = store.tokens.load(name) if config.multivector and store.tokens is not None else None
    write_snapshot(store.row_pages(name, stored_columns(config), PAGE_ROWS), config, dimensions, spool, tokens)
    writer = BackupWriter(directory, arrow_schema(config, dimensions), rows_per_part=150)
    for page in range(page_count(spool)):
        writer.write(from_ipc(read_page(spool, page)))
    writer.finish(collection=name, config=config, dimensions=dimensions, documents=store.count(name),
                  aliases=store.aliases.pointing_at(name))


def restore(store: MilvusStore, directory, name: str) -> None:
    """What ``rayprism restore`` and the rows route do: the collection made from the manifest, pages written."""
    manifest = read_manifest(directory)
    verify(directory, manifest)
    config = manifest.config.model_copy(update={"name": name})
    store.ensure(config, manifest.dimensions)
    for page in read_pages(directory, manifest, 100):
        store.upsert(name, rows_of(page, config, manifest.dimensions))
    store.flush(name)


def dense_answers(store: MilvusStore, name: str, queries: np.ndarray) -> list[tuple[list, list]]:
    answers = []
    for query in queries:
        hits = store.search(name, SearchQuery(mode="dense", k=10, dense_vector=query, output_fields=["id"]))
        answers.append((hits.ids, hits.scores))
    return answers


def assert_same_answers(found, expected) -> None:
    for (ids, scores), (want_ids, want_scores) in zip(found, expected):
        assert ids == want_ids
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


def numpy_top10(vectors: np.ndarray, query: np.ndarray) -> list[str]:
    scores = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (query / np.linalg.norm(query))
    return [f"doc{i:04d}" for i in np.argsort(-scores, kind="stable")[:10]]


def docs_config(name: str, **changes) -> CollectionConfig:
    return CollectionConfig(name=name, **{"fields": {"section": "varchar", "size": "int64", "meta": "json"}, **changes})


@pytest.fixture()
def lite(tmp_path):
    store = MilvusStore(str(tmp_path / "lite.db"), flush_after_s=600, cache_max_rows=10_000)
    yield store
    store.close()


def test_backup_drop_restore_on_lite_answers_the_same_searches_with_every_row_as_it_was(lite, tmp_path):
    rows, vectors = documents(300)
    lite.ensure(docs_config("docs"), DIMENSIONS)
    lite.upsert("docs", rows)
    lite.aliases.point("live", "docs")
    queries = np.random.default_rng(9).standard_normal((5, DIMENSIONS)).astype(np.float32)
    before = dense_answers(lite, "docs", queries)
    hybrid = SearchQuery(mode="hybrid", k=10, dense_vector=queries[0], text="network package 7", output_fields=["id"])
    hybrid_before = lite.search("docs", hybrid)
    stored_before = lite.get("docs", [row["id"] for row in rows], ["id", "text", "section", "size", "meta", "dense"])

    backup(lite, "docs", tmp_path / "backup", tmp_path)
    manifest = json.loads((tmp_path / "backup" / MANIFEST).read_text())
    assert (manifest["rows"], manifest["documents"], manifest["aliases"]) == (300, 300, ["live"])
    assert [part["rows"] for part in manifest["parts"]] == [192, 108]  # pages of 64, parts of at least 150 rows
    lite.aliases.remove("live")
    lite.drop("docs")
    restore(lite, tmp_path / "backup", "docs")

    assert [ids for ids, _ in before] == [numpy_top10(vectors, query) for query in queries]
    assert_same_answers(dense_answers(lite, "docs", queries), before)
    hybrid_after = lite.search("docs", hybrid)
    assert hybrid_after.ids == hybrid_before.ids
    np.testing.assert_allclose(hybrid_after.scores, hybrid_before.scores, rtol=1e-5)
    stored_after = {row["id"]: row for row in lite.get("docs", [row["id"] for row in rows],
                                                       ["id", "text", "section", "size", "meta", "dense"])}
    assert len(stored_after) == 300
    for row in stored_before:
        again = stored_after[row["id"]]
        assert {key: again[key] for key in ("text", "section", "size", "meta")} == \
            {key: row[key] for key in ("text", "section", "size", "meta")}
        np.testing.assert_array_equal(np.asarray(again["dense"], np.float32), np.asarray(row["dense"], np.float32))


def test_a_multivector_collection_keeps_its_token_vectors_and_a_chunked_one_its_pieces(lite, tmp_path):
    tokens_config = CollectionConfig(name="late", multivector={}, bm25=False)
    lite.ensure(tokens_config, DIMENSIONS)
    generator = np.random.default_rng(3)
    matrices = {f"m{i}": generator.standard_normal((1 + i % 4, 8)).astype(np.float32) for i in range(40)}
    lite.upsert("late", [{"id": doc, "text": doc, "dense": generator.standard_normal(DIMENSIONS).astype(np.float32),
                          TOKENS_KEY: matrix} for doc, matrix in matrices.items()])
    pieces_config = CollectionConfig(name="chunked", chunking={"max_tokens": 64})
    lite.ensure(pieces_config, DIMENSIONS)
    pieces = [{"id": f"d{d}#{p}", "doc_id": f"d{d}", "piece_index": p, "piece_count": 3, "piece_start": 10 * p,
               "doc_hash": f"{d:064d}", "text": f"piece {p} of document {d}",
               "dense": generator.standard_normal(DIMENSIONS).astype(np.float32)} for d in range(30) for p in range(3)]
    lite.upsert("chunked", pieces)

    for name in ("late", "chunked"):
        backup(lite, name, tmp_path / name, tmp_path)
    restore(lite, tmp_path / "late", "late_again")
    restore(lite, tmp_path / "chunked", "chunked_again")

    restored_tokens = lite.tokens.load("late_again")
    assert restored_tokens.keys() == matrices.keys()
    for doc, matrix in matrices.items():
        np.testing.assert_array_equal(restored_tokens[doc], matrix)
    assert read_manifest(tmp_path / "chunked").model_dump(include={"rows", "documents"}) == {"rows": 90, "documents": 30}
    assert lite.count("chunked_again") == 30
    assert lite.get("chunked_again", ["d7"], ["id", "text"]) == lite.get("chunked", ["d7"], ["id", "text"])
    query = SearchQuery(mode="hybrid", k=5, dense_vector=pieces[4]["dense"], text="piece 1 of document 1",
                        output_fields=["id"])
    assert lite.search("chunked_again", query).ids == lite.search("chunked", query).ids


@pytest.mark.parametrize("chunked", [False, True])
def test_rows_read_while_writes_went_on_merged_with_those_read_again_are_the_collection_now(lite, tmp_path, chunked):
    """What a snapshot does (store_snapshots): page out while writing, then read the written documents again."""
    config = CollectionConfig(name="moving", fields={"generation": "int64"},
                              chunking={"max_tokens": 64} if chunked else None)
    lite.ensure(config, DIMENSIONS)
    generator = np.random.default_rng(4)

    def write(documents: range, generation: int) -> None:
        pieces = 2 if chunked else 1
        rows = [{"id": f"d{d:03d}#{p}" if chunked else f"d{d:03d}", "text": f"d{d} at {generation}",
                 "dense": generator.standard_normal(DIMENSIONS).astype(np.float32), "generation": generation}
                for d in documents for p in range(pieces)]
        if chunked:
            for row in rows:
                p = int(row["id"].split("#")[1])
                row.update(doc_id=row["id"].split("#")[0], piece_index=p, piece_count=2, piece_start=p,
                           doc_hash="0" * 64)
        lite.upsert("moving", rows)

    write(range(100), 0)
    schema = arrow_schema(config, DIMENSIONS)
    pages = lite.row_pages("moving", stored_columns(config), 16)
    first = list(itertools.islice(pages, 2))  # part of it read ...
    write(range(0, 100, 7), 1)  # ... then documents change, are deleted and added, before and after the cursor
    lite.delete("moving", ["d001", "d090"])
    write(range(100, 103), 2)
    base = tmp_path / "base.parquet"
    write_pages((table_of(rows, config, schema) for rows in itertools.chain(first, pages)), base, schema)
    changed = [f"d{d:03d}" for d in [*range(0, 100, 7), 1, 90, 100, 101, 102]]
    again = table_of(lite.stored_rows("moving", changed, stored_columns(config)), config, schema)
    rows, documents = merge_changes(base, changed, again, tmp_path / "merged.parquet", config, 16)

    fresh = tmp_path / "fresh.parquet"
    write_snapshot(lite.row_pages("moving", stored_columns(config), 16), config, DIMENSIONS, fresh)
    merged, expected = (pq.read_table(path).sort_by("id").to_pylist() for path in (tmp_path / "merged.parquet", fresh))
    assert merged == expected and len({row["generation"] for row in merged}) == 3
    assert (rows, documents) == (len(expected), 101)


def test_a_damaged_or_foreign_backup_is_refused_with_a_sentence(lite, tmp_path):
    rows, _ = documents(20)
    lite.ensure(docs_config("small"), DIMENSIONS)
    lite.upsert("small", rows)
    backup(lite, "small", tmp_path / "backup", tmp_path)
    with pytest.raises(InvalidInputError, match="do not fit collection 'other'"):
        manifest = read_manifest(tmp_path / "backup")
        rows_of(next(read_pages(tmp_path / "backup", manifest, 10)), docs_config("other", fields={}), DIMENSIONS)
    part = tmp_path / "backup" / "part-00000.parquet"
    damaged = bytearray(part.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    part.write_bytes(bytes(damaged))
    with pytest.raises(InvalidInputError, match="does not match its checksum"):
        verify(tmp_path / "backup", read_manifest(tmp_path / "backup"))
    manifest_path = tmp_path / "backup" / MANIFEST
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "version": 2}))
    with pytest.raises(InvalidInputError, match="format version 2; this rayprism reads 1"):
        read_manifest(tmp_path / "backup")
    manifest_path.unlink()
    with pytest.raises(InvalidInputError, match="not a backup, or one that did not finish"):
        read_manifest(tmp_path / "backup")


@pytest.mark.slow  # a Milvus server
def test_lite_to_a_milvus_server_and_back_answers_the_same_dense_searches(lite, tmp_path, milvus_server_uri):
    server = MilvusStore(milvus_server_uri, flush_after_s=600)
    existing = set(server.names())
    try:
        rows, vectors = documents(300, seed=5, nulls=False)
        lite.ensure(docs_config("moved", bm25=False), DIMENSIONS)
        lite.upsert("moved", rows)
        queries = np.random.default_rng(11).standard_normal((5, DIMENSIONS)).astype(np.float32)
        on_lite = dense_answers(lite, "moved", queries)
        assert [ids for ids, _ in on_lite] == [numpy_top10(vectors, query) for query in queries]

        backup(lite, "moved", tmp_path / "from-lite", tmp_path)
        restore(server, tmp_path / "from-lite", "backup_moved")
        assert server.count("backup_moved") == 300
        assert_same_answers(dense_answers(server, "backup_moved", queries), on_lite)
        assert server.get("backup_moved", ["doc0005"], ["meta", "section"]) == \
            lite.get("moved", ["doc0005"], ["meta", "section"])

        backup(server, "backup_moved", tmp_path / "from-server", tmp_path)
        restore(lite, tmp_path / "from-server", "moved_back")
        assert_same_answers(dense_answers(lite, "moved_back", queries), on_lite)
    finally:
        drop_new_collections(server, existing)
        server.close()
