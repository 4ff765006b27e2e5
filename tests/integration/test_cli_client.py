"""`rayprism ingest` and `rayprism search` against the running service."""

import json
import subprocess
import sys
from pathlib import Path

import httpx

DATA = Path(__file__).resolve().parents[1] / "data"


def rayprism(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rayprism.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_ingest_streams_a_file_reports_bad_lines_and_search_prints_a_table(service_url, tmp_path):
    spec = {"name": "cli_docs", "model": "minilm", "fields": {"section": "varchar"}}
    assert httpx.post(f"{service_url}/v1/collections", json=spec, timeout=60).status_code in (200, 201)
    lines = (DATA / "debian-sample.jsonl").read_text().splitlines()[:30]
    lines.insert(3, "{this is not json")
    lines.insert(7, json.dumps({"id": "broken", "text": "", "section": "x"}))
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(lines) + "\n")

    result = rayprism("ingest", "cli_docs", str(source), "--url", service_url, "--batch-size", "8")
    assert result.returncode == 1, result.stdout + result.stderr  # some lines were rejected
    assert "upserted 30 documents into 'cli_docs'" in result.stdout
    assert "rejected 2" in result.stdout
    assert "docs.jsonl:4: not JSON" in result.stdout
    assert "docs.jsonl:8: text: must be a non-empty string" in result.stdout
    assert "dropped keys the collection does not have: ['installed_size', 'package', 'priority']" in result.stdout
    assert httpx.get(f"{service_url}/v1/collections/cli_docs").json()["count"] == 30

    again = rayprism("ingest", "cli_docs", str(source), "--url", service_url)
    assert "upserted 0 documents" in again.stdout and "30 already stored unchanged" in again.stdout
    assert httpx.get(f"{service_url}/v1/collections/cli_docs").json()["count"] == 30  # idempotent

    first = json.loads(lines[0])
    found = rayprism("search", "cli_docs", first["text"][:80], "--url", service_url, "--k", "3")
    assert found.returncode == 0, found.stderr
    assert "cli_docs" in found.stdout and str(first["id"]) in found.stdout and "section=" in found.stdout
    as_json = rayprism("search", "cli_docs", "anything", "--url", service_url, "--json", "--filter", 'section == "zz"')
    assert json.loads(as_json.stdout)["results"] == []

    bad = rayprism("search", "cli_docs", "x", "--url", service_url, "--filter", "colour == 1")
    assert bad.returncode == 2 and "unknown field 'colour'" in bad.stderr
    unreachable = rayprism("search", "cli_docs", "x", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
