"""A batch job's unit for a chunked collection, without Ray: files read, checked and cut as the worker does,
compared with the store's own reading of pieces back into documents."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rayprism.jobs.readers import document_files, plan_units, write_files_manifest
from rayprism.jobs.worker import collect_rows, parquet_bytes, pieces_of
from rayprism.platform.config import ChunkingConfig, CollectionConfig, JobConfig
from rayprism.platform.store.pieces import documents_from_pieces
from rayprism.platform.text.chunking import Chunker

SECTION = "The archive keeps every report in a numbered box, and the boxes are listed by year. " * 6


def test_each_document_becomes_pieces_that_tile_it_under_its_title(tmp_path, minilm_path):
    import io

    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.md").write_text(f"# Guide\n\n## Boxes\n\n{SECTION}\n\n## Years\n\n{SECTION}\n", encoding="utf-8")
    (folder / "note.txt").write_text(f"{SECTION}\n\nThe last line.\n", encoding="utf-8")
    (folder / "empty.txt").write_text("  \n", encoding="utf-8")
    job = JobConfig.model_validate({"input": {"path": str(folder), "format": "files"}, "output": {"parquet": "o"}})
    collection = CollectionConfig(name="docs", chunking=ChunkingConfig(max_tokens=32, overlap_tokens=4, markdown=True),
                                  fields={"title": "varchar", "path": "varchar"})
    manifest = write_files_manifest(tmp_path / "state", document_files(str(folder)), "text")
    (unit,) = plan_units([manifest], "files", 10)
    documents = collect_rows(job, unit, collection)
    chunker = Chunker(Tokenizer.from_file(str(Path(minilm_path) / "tokenizer.json")), collection.chunking,
                      model_max_tokens=256)

    pieces = pieces_of(documents, collection, chunker)
    assert [error["id"] for error in pieces.errors] == ["empty.txt"]  # refused as a document, before cutting
    rejoined = {document["id"]: document for document in documents_from_pieces(pieces.collection_rows, "text",
                                                                                  ["title", "path"])}
    for source in ("guide.md", "note.txt"):
        text = (folder / source).read_text(encoding="utf-8")
        assert rejoined[source]["text"] == text and rejoined[source]["path"] == (folder / source).as_posix()
        rows = [row for row in pieces.collection_rows if row["doc_id"] == source]
        assert len(rows) > 2 and [row["id"] for row in rows] == [f"{source}#{i}" for i in range(len(rows))]
        expected = [text, rejoined[source]["path"], rejoined[source]["title"]]  # text, then fields by name
        assert {row["doc_hash"] for row in rows} == {
            hashlib.sha256(json.dumps(expected, ensure_ascii=False).encode()).hexdigest()}
    guide = [embedded for embedded, key in zip(pieces.inputs, pieces.ids) if key.startswith("guide.md#")]
    assert all(embedded.startswith("Guide") for embedded in guide)
    assert any(embedded.startswith("Guide > Years\n\n") for embedded in guide)  # the section it sits in
    assert pieces.rows == [documents.rows[documents.ids.index(row["doc_id"])] for row in pieces.collection_rows]

    table = pq.read_table(io.BytesIO(parquet_bytes(job, pieces, {})))
    assert table["id"].to_pylist() == pieces.ids and table["doc_id"].to_pylist()[0] == "guide.md"
