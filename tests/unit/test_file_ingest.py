"""`rayprism ingest` of files without a service: which fields a collection takes, the record of files sent,
and the documents a folder becomes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rayprism.cli import app
from rayprism.cli.file_ingest import (
    CollectionUnfitError,
    FileIngest,
    SentRecord,
    file_fields,
    missing_fields_note,
)
from rayprism.client import IngestSummary
from rayprism.platform.text.files import SourceFile, find_files

SCHEMA = {"text_field": "body", "id_type": "varchar", "modality": "text", "count": 0,
          "fields": {"path": "varchar", "title": "varchar", "format": "varchar", "size": "int64"}}


def test_the_file_fields_a_collection_declares_are_sent_and_the_missing_ones_named():
    sent, missing = file_fields("docs", SCHEMA)
    assert sent == ["path", "title", "format"] and missing == ["modified"]
    note = missing_fields_note("docs", missing)
    assert "'modified'" in note and '"fields": {"path": "varchar", "title": "varchar", "modified": "varchar"}' in note


@pytest.mark.parametrize("change, fragment", [
    ({"id_type": "int64"}, "has int64 ids"),
    ({"modality": "image"}, "holds image; files give text"),
    ({"fields": {"modified": "int64"}}, "declares {'modified': 'int64'}"),
])
def test_a_collection_that_cannot_hold_files_is_refused_with_what_would(change, fragment):
    with pytest.raises(CollectionUnfitError) as caught:
        file_fields("docs", {**SCHEMA, **change})
    assert fragment in str(caught.value) and '"path": "varchar"' in str(caught.value)


def source(tmp_path, name: str, text: str) -> SourceFile:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return SourceFile(name, path.absolute(), "text")


def test_the_record_knows_a_file_by_its_bytes_and_place_and_survives_a_cut_line(tmp_path):
    one, two = source(tmp_path, "one.txt", "first"), source(tmp_path, "two.txt", "second")
    path = tmp_path / "state" / "sent.jsonl"
    record = SentRecord(path)
    record.add([(one.id, _hash(one), one.path.as_posix()), (two.id, "0" * 64, two.path.as_posix())])
    record.close()
    with path.open("a") as out:
        out.write('{"id": "three.txt", "ha')  # a crash in the middle of a line
    loaded = SentRecord(path)
    assert len(loaded) == 2 and len(path.read_text().splitlines()) == 2  # rewritten compact
    assert loaded.unchanged(one) and not loaded.unchanged(two)  # two's bytes are not those recorded
    moved = SourceFile(one.id, tmp_path / "elsewhere" / "one.txt", "text")
    assert not loaded.unchanged(moved)
    (tmp_path / "one.txt").write_text("first, edited", encoding="utf-8")
    assert not loaded.unchanged(one)
    loaded.clear()
    assert len(SentRecord(path)) == 0


def test_the_default_record_is_one_file_per_service_and_collection(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    first = SentRecord.default_path("http://127.0.0.1:8000/", "docs")
    assert first == SentRecord.default_path("http://127.0.0.1:8000", "docs")
    assert first.parent == tmp_path / "rayprism" / "ingest" and first.name.startswith("docs-")
    assert first != SentRecord.default_path("http://10.0.0.2:8000", "docs")


def test_a_folder_becomes_documents_problems_by_path_and_known_files_are_not_read(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Alpha\n\nText.\n", encoding="utf-8")
    (folder / "b.txt").write_text("Bravo.\n", encoding="utf-8")
    (folder / "c.pdf").write_bytes(b"%PDF-1.4 not really")
    found = find_files([folder, tmp_path / "missing.md"])
    record = SentRecord(tmp_path / "sent.jsonl")
    b = next(item for item in found if getattr(item, "id", None) == "b.txt")
    record.add([(b.id, _hash(b), b.path.as_posix())])
    summary, passed = IngestSummary(), []
    files = FileIngest("body", ["path", "title"], record, summary, lambda: passed.append(1))

    documents = list(files.documents(found))
    assert [document.body for document in documents] == [
        {"id": "a.md", "body": "# Alpha\n\nText.\n", "path": (folder / "a.md").as_posix(), "title": "Alpha"}]
    assert documents[0].where == (folder / "a.md").as_posix()
    assert files.skipped == 1 and len(passed) == 3  # b.txt skipped, c.pdf and missing.md rejected
    assert sorted(rejected.where for rejected in summary.rejected) == [str(folder / "c.pdf"), str(tmp_path / "missing.md")]
    files.written(documents)
    lines = [json.loads(line) for line in (tmp_path / "sent.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["b.txt", "a.md"]


def _hash(item: SourceFile) -> str:
    from rayprism.platform.text.files import content_hash

    return content_hash(item.path)


runner = CliRunner()


def test_ingest_help_explains_files_ids_fields_the_record_and_jsonl():
    result = runner.invoke(app, ["ingest", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for fragment in ("Markdown", "PDF", "folders", "globs", "--root", "path, title and modified",
                     "~/.local/state/rayprism/ingest/", "--resend", "exit status is 1", "JSONL", "--keep-unknown"):
        assert fragment in text, fragment


@pytest.mark.parametrize("arguments, message", [
    (["docs.jsonl", "--root", "."], "--root: for files only, not a JSONL file"),
    (["docs", "--id-field", "key", "--keep-unknown"], "--id-field, --keep-unknown: for a JSONL file only"),
    (["docs", "more.jsonl"], "a JSONL file is ingested on its own"),
])
def test_ingest_options_of_the_other_kind_of_input_are_refused_before_the_service_is_asked(arguments, message):
    result = runner.invoke(app, ["ingest", "coll", *arguments, "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and message in result.output
