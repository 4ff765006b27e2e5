"""Files in: a folder of Markdown, HTML, plain text and PDF (fpdf2, several pages) plus a broken PDF, loaded into
chunked collections by `rayprism ingest` through the running service, and by batch jobs (`format: files`) into a
Milvus Lite file and into the service. Each file must be found by a phrase from its end, with that phrase in its
top passage; the broken PDF is reported by its path and costs nothing else."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from rayprism.jobs.embed import execute, plan
from rayprism.platform.config import JobConfig
from rayprism.platform.text.files import FileDocument, read_documents

FILLER = [
    "The committee reviewed the quarterly figures and asked for a second opinion on the forecasts.",
    "Shipping costs rose in spring because the harbour was closed for repairs.",
    "Most customers prefer the smaller model, which uses less power and fits on a desk.",
    "The old warehouse will be turned into offices once the permits are granted.",
    "Training sessions start at nine and end before lunch on weekdays.",
    "A new supplier was chosen after three rounds of tenders.",
    "Weather delays affected deliveries to the northern region for two weeks.",
    "The finance team closed the books a day earlier than planned.",
    "Several volunteers helped to label the archive boxes by year.",
    "Printer cartridges are ordered in bulk to reduce the price per unit.",
    "The survey shows that staff value flexible hours above a larger office.",
    "An audit of the safety equipment found two expired extinguishers.",
]
PHRASES = {
    "guide.md": "Zanzibar otters juggle turquoise pinecones beside the moonlit aqueduct.",
    "notes.txt": "Professor Quimby repaints his tandem bicycle with saffron polka dots.",
    "page.html": "The xylophone orchestra of Reykjavik tunes every marimba twice.",
    "sub/report.pdf": "Tasmanian wombats deliver parcels wrapped in lavender paper.",
}
"""Each file's last words, made of words no other file holds."""
SPEC = {"model": "minilm", "chunking": {"max_tokens": 64, "overlap_tokens": 8, "markdown": True},
        "fields": {"path": "varchar", "title": "varchar", "modified": "varchar"}}


def filler(seed: int, paragraphs: int) -> list[str]:
    generator = random.Random(seed)
    return [" ".join(generator.sample(FILLER, 5)) for _ in range(paragraphs)]


def write_pdf(path: Path, pages: list[str], title: str) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_font("helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    path.write_bytes(bytes(pdf.output()))


def make_folder(root: Path) -> Path:
    """Four documents of several pieces each, their phrase at the very end, and a PDF cut in half."""
    (root / "sub").mkdir(parents=True)
    sections = [f"## Part {i}\n\n" + "\n\n".join(filler(i, 2)) for i in range(1, 4)]
    (root / "guide.md").write_text("# Operations guide\n\n" + "\n\n".join(sections)
                                   + f"\n\n## Appendix\n\n{FILLER[0]} {PHRASES['guide.md']}\n", encoding="utf-8")
    (root / "notes.txt").write_text("\n\n".join([*filler(10, 5), f"{FILLER[1]} {PHRASES['notes.txt']}"]) + "\n",
                                    encoding="utf-8")
    body = "".join(f"<h2>Chapter {i}</h2>" + "".join(f"<p>{p}</p>" for p in filler(20 + i, 2)) for i in range(3))
    (root / "page.html").write_text(
        f"<html><head><title>Field notes</title><style>p {{color: red}}</style></head><body><h1>Field notes</h1>"
        f"{body}<h2>Last words</h2><p>{FILLER[2]} {PHRASES['page.html']}</p></body></html>", encoding="utf-8")
    pages = ["\n\n".join(filler(30 + i, 2)) for i in range(3)] + [f"{FILLER[3]}\n\n{PHRASES['sub/report.pdf']}"]
    write_pdf(root / "sub" / "report.pdf", pages, "Annual parcel report")
    write_pdf(root / "whole.pdf", ["This PDF will be cut short."] * 3, "Broken")
    data = (root / "whole.pdf").read_bytes()
    (root / "whole.pdf").unlink()
    (root / "broken.pdf").write_bytes(data[: len(data) // 2])
    return root


def words(text: str) -> str:
    return " ".join(text.split())


def rayprism(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayprism.cli", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def search(url: str, collection: str, query: str) -> list[dict]:
    answer = httpx.post(f"{url}/v1/collections/{collection}/search", json={"query": query, "k": 3}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


def assert_found_by_last_words(hits_of) -> None:
    """Every file's phrase finds it first, with the phrase in its top passage."""
    for document_id, phrase in PHRASES.items():
        hits = hits_of(phrase)
        assert hits[0]["id"] == document_id, (phrase, [hit["id"] for hit in hits])
        assert phrase in words(hits[0]["passages"][0]["text"]), hits[0]["passages"]


def test_ingest_of_a_folder_finds_every_file_reports_the_broken_one_and_sends_nothing_twice(service_url, tmp_path):
    folder = make_folder(tmp_path / "docs")
    created = httpx.post(f"{service_url}/v1/collections", json={**SPEC, "name": "files_cli"}, timeout=60)
    assert created.status_code in (200, 201), created.text
    record = tmp_path / "state" / "sent.jsonl"
    command = ("ingest", "files_cli", str(folder), "--url", service_url, "--state", str(record))

    first = rayprism(*command)
    assert first.returncode == 1, first.stdout + first.stderr  # the broken PDF
    assert "upserted 4 documents into 'files_cli'" in first.stdout and "rejected 1" in first.stdout, first.stdout
    assert f"rejected {folder / 'broken.pdf'}: " in first.stdout
    described = httpx.get(f"{service_url}/v1/collections/files_cli", timeout=60).json()
    assert described["count"] == 4
    assert_found_by_last_words(lambda phrase: search(service_url, "files_cli", phrase))
    guide = httpx.get(f"{service_url}/v1/collections/files_cli/documents/guide.md", timeout=60).json()
    assert guide["text"] == (folder / "guide.md").read_text(encoding="utf-8")
    assert guide["title"] == "Operations guide" and guide["path"] == (folder / "guide.md").as_posix()
    assert len(record.read_text().splitlines()) == 4

    again = rayprism(*command)
    assert "upserted 0 documents" in again.stdout and "skipped 4 files sent unchanged before" in again.stdout, again.stdout
    assert again.returncode == 1 and f"rejected {folder / 'broken.pdf'}" in again.stdout  # still broken, still said

    with (folder / "notes.txt").open("a", encoding="utf-8") as notes:
        notes.write("\nA postscript changes the file.\n")
    changed = rayprism(*command)
    assert "upserted 1 documents" in changed.stdout and "skipped 3 files" in changed.stdout, changed.stdout

    resent = rayprism(*command, "--resend")
    assert "upserted 0 documents" in resent.stdout and "4 already stored unchanged" in resent.stdout, resent.stdout
    assert httpx.get(f"{service_url}/v1/collections/files_cli", timeout=60).json()["count"] == 4


def test_ingest_into_a_collection_without_file_fields_says_how_to_declare_them(service_url, tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    (folder / "one.md").write_text("# One\n\nA short note.\n", encoding="utf-8")
    created = httpx.post(f"{service_url}/v1/collections", json={"name": "files_bare", "model": "minilm"}, timeout=60)
    assert created.status_code in (200, 201), created.text
    result = rayprism("ingest", "files_bare", str(folder / "one.md"), "--url", service_url,
                      env={"XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "has no field 'path', 'title', 'modified'" in result.stdout
    assert '"fields": {"path": "varchar", "title": "varchar", "modified": "varchar"}' in result.stdout
    assert "upserted 1 documents" in result.stdout
    assert len(list((tmp_path / "xdg" / "rayprism" / "ingest").glob("files_bare-*.jsonl"))) == 1


def test_the_seed_fills_an_empty_chunked_collection_from_its_files_once(service_url, tmp_path, monkeypatch):
    """What `rayprism serve` does on a first start (configs/serve.yaml seeds `docs` with README.md and docs/*.md):
    the seed's globs, relative to the working directory, read as `rayprism ingest` reads them."""
    from rayprism.deployments.launch import seed_collection
    from rayprism.platform.config import ServeConfig

    make_folder(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    created = httpx.post(f"{service_url}/v1/collections", json={**SPEC, "name": "files_seed"}, timeout=60)
    assert created.status_code in (200, 201), created.text
    config = ServeConfig.model_validate({"collections": [{**SPEC, "name": "files_seed"}],
                                         "seed": {"collection": "files_seed", "files": ["*.md", "*.html", "*.pdf", "sub/"]}})
    said: list[str] = []
    seed_collection(service_url, config, said.append)
    assert said[-1].startswith("filled 'files_seed': 3 documents"), said
    assert [line for line in said if line.startswith(f"seed: {tmp_path / 'project' / 'broken.pdf'}: ")], said
    assert httpx.get(f"{service_url}/v1/collections/files_seed", timeout=60).json()["count"] == 3
    guide = httpx.get(f"{service_url}/v1/collections/files_seed/documents/guide.md", timeout=60).json()
    assert (guide["title"], guide["path"]) == ("Operations guide", (tmp_path / "project" / "guide.md").as_posix())
    assert guide["text"] == (tmp_path / "project" / "guide.md").read_text(encoding="utf-8")
    for document_id in ("guide.md", "page.html", "sub/report.pdf"):
        phrase = PHRASES[document_id]
        hits = search(service_url, "files_seed", phrase)
        assert hits[0]["id"] == document_id and phrase in words(hits[0]["passages"][0]["text"]), hits
    said.clear()
    seed_collection(service_url, config, said.append)  # a later start: the collection is not empty, nothing sent
    assert said == []


def files_job(tmp_path: Path, folder: Path, output: dict) -> JobConfig:
    return JobConfig.model_validate({
        "input": {"path": str(folder), "format": "files"},
        "compute": {"num_cpus": 0.5, "torch_threads": 2, "rows_per_part": 3},
        "output": {"state_dir": str(tmp_path / "state"), **output},
    })


def test_a_files_job_loads_a_chunked_lite_collection_whole(ray_session, tmp_path):
    from rayprism.platform.config import ModelConfig
    from rayprism.platform.models.registry import load_encoder
    from rayprism.platform.store.milvus import MilvusStore, SearchQuery

    folder = make_folder(tmp_path / "docs")
    uri = str(tmp_path / "files.db")
    summary = execute(plan(files_job(tmp_path, folder, {"collection": {**SPEC, "name": "files_job"}, "uri": uri})))
    assert (summary.rows, summary.errors, summary.collection_count) == (4, 1, 4)
    (error,) = [json.loads(line) for line in Path(summary.errors_file).read_text().splitlines()]
    assert error["id"] == "broken.pdf" and error["reason"].startswith(f"{folder / 'broken.pdf'}: ")

    read = {item.id: item for item in read_documents([folder]) if isinstance(item, FileDocument)}
    encoder = load_encoder(ModelConfig())
    store = MilvusStore(uri)
    try:
        stored = store.get("files_job", list(PHRASES), ["id", "text", "title", "path"])
        assert {document["id"]: document["text"] for document in stored} == {key: read[key].text for key in PHRASES}
        assert {document["id"]: document["title"] for document in stored} == {key: read[key].title for key in PHRASES}
        phrase = PHRASES["sub/report.pdf"]
        vector = np.asarray(encoder.encode(encoder.prepare([phrase]))[0], dtype=np.float32)
        found = store.search("files_job", SearchQuery(mode="hybrid", k=3, dense_vector=vector, text=phrase))
        assert found.ids[0] == "sub/report.pdf" and phrase in words(found.passages[0][0]["text"])
    finally:
        store.close()


def test_a_files_job_into_a_services_chunked_collection_lets_the_service_cut_and_embed(service_url, tmp_path):
    folder = make_folder(tmp_path / "docs")
    spec = {**SPEC, "name": "files_service_job"}
    summary = execute(plan(files_job(tmp_path, folder, {"collection": spec, "service_url": service_url})))
    assert (summary.rows, summary.errors, summary.collection_count) == (4, 1, 4)
    assert_found_by_last_words(lambda phrase: search(service_url, "files_service_job", phrase))


def test_a_services_chunked_collection_and_a_parquet_output_are_refused_before_any_work(service_url, tmp_path):
    from rayprism.platform.errors import ConfigError

    folder = make_folder(tmp_path / "docs")
    job = files_job(tmp_path, folder, {"collection": {**SPEC, "name": "files_service_job"},
                                       "service_url": service_url, "parquet": str(tmp_path / "out")})
    with pytest.raises(ConfigError, match="no vectors for output.parquet"):
        execute(plan(job))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("part-*"))
