"""`rayprism backup` and `rayprism restore` against the running service: backup → drop → restore answers the same
searches (ids and scores), aliases come back where free, an existing collection is not overwritten unless asked,
and a backup taken while a writer upserts batches holds each batch wholly or not at all (a state that existed)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pyarrow.parquet as pq

DIMENSIONS = 384  # minilm's
DOCUMENTS = 300
QUERIES = ["network daemon for file transfer", "a game with puzzles", "library for image decoding",
           "text editor", "python bindings"]
SECTIONS = ["net", "games", "libs", "editors", "python"]


def rayprism(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayprism.cli", *args], capture_output=True, text=True, timeout=600)


def make_collection(url: str, name: str, generation: int = -1, **options) -> np.ndarray:
    """``DOCUMENTS`` documents with their own vectors (nothing to embed), ids ``doc000``…; returns the vectors."""
    spec = {"name": name, "model": "minilm", "fields": {"section": "varchar", "generation": "int64"}, **options}
    assert httpx.post(f"{url}/v1/collections", json=spec, timeout=60).status_code == 201
    vectors = np.random.default_rng(len(name)).standard_normal((DOCUMENTS, DIMENSIONS)).astype(np.float32)
    documents = [{"id": f"doc{i:03d}", "text": f"{SECTIONS[i % 5]} package {i}: {QUERIES[i % 5]} number {i}",
                  "section": SECTIONS[i % 5], "generation": generation, "vector": vectors[i].tolist()}
                 for i in range(DOCUMENTS)]
    for start in range(0, DOCUMENTS, 100):
        written = httpx.post(f"{url}/v1/collections/{name}/documents",
                             json={"documents": documents[start : start + 100]}, timeout=120)
        assert written.status_code == 200, written.text
    return vectors


def answers(url: str, name: str) -> list[tuple[str, list, list]]:
    found = []
    for mode in ("dense", "hybrid"):
        for query in QUERIES:
            hits = httpx.post(f"{url}/v1/collections/{name}/search", json={"query": query, "k": 10, "mode": mode},
                              timeout=60).json()["results"]
            found.append((mode, [hit["id"] for hit in hits], [hit["score"] for hit in hits]))
    return found


def mirrored(url: str, name: str, timeout_s: float = 120) -> None:
    """Wait until the collection's in-memory mirror is built (a search starts the build)."""
    deadline = time.monotonic() + timeout_s
    while not httpx.get(f"{url}/v1/collections/{name}", timeout=60).json().get("mirror"):
        assert time.monotonic() < deadline, f"the mirror of {name!r} was not built in {timeout_s} s"
        httpx.post(f"{url}/v1/collections/{name}/search", json={"query": "warm", "k": 1}, timeout=60)
        time.sleep(0.5)


def assert_same_answers(found, expected) -> None:
    assert len(found) == len(expected)
    for (mode, ids, scores), (_, want_ids, want_scores) in zip(found, expected):
        assert ids == want_ids, mode
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


def test_backup_drop_restore_answers_the_same_searches_and_brings_the_aliases_back(service_url, tmp_path):
    url = service_url
    make_collection(url, "backup_docs")
    assert httpx.post(f"{url}/v1/aliases", json={"name": "backup_live", "collection": "backup_docs"}).status_code == 201
    before = answers(url, "backup_live")
    assert len(before[0][1]) == 10

    made = rayprism("backup", "backup_live", str(tmp_path / "b"), "--url", url, "--page-rows", "64")
    assert made.returncode == 0, made.stdout + made.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert (manifest["collection"], manifest["rows"], manifest["documents"]) == ("backup_docs", 300, 300)
    assert manifest["aliases"] == ["backup_live"] and manifest["config"]["fields"]["generation"] == "int64"

    again = rayprism("backup", "backup_live", str(tmp_path / "b"), "--url", url)
    assert again.returncode == 2 and "holds a backup already: choose an empty folder" in again.stderr
    refused = rayprism("restore", str(tmp_path / "b"), "--url", url)
    assert refused.returncode == 2
    assert "collection 'backup_docs' exists: restore under another name with --as NAME" in refused.stderr
    copied = rayprism("restore", str(tmp_path / "b"), "--as", "backup_copy", "--url", url)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert "alias 'backup_live' skipped: it exists, reaching 'backup_docs'" in copied.stdout
    assert_same_answers(answers(url, "backup_copy"), before)

    assert httpx.delete(f"{url}/v1/aliases/backup_live").status_code == 200
    assert httpx.delete(f"{url}/v1/collections/backup_docs").status_code == 200
    assert httpx.get(f"{url}/v1/collections/backup_docs").status_code == 404
    restored = rayprism("restore", str(tmp_path / "b"), "--url", url)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restored 'backup_docs': 300 documents; aliases recreated: ['backup_live']" in restored.stdout
    assert_same_answers(answers(url, "backup_live"), before)
    document = httpx.get(f"{url}/v1/collections/backup_docs/documents/doc007").json()
    assert (document["section"], document["generation"]) == ("libs", -1)

    httpx.delete(f"{url}/v1/aliases/backup_live")
    for name in ("backup_docs", "backup_copy"):
        httpx.delete(f"{url}/v1/collections/{name}")


def test_an_int8_tier_comes_back_with_the_buckets_it_encoded_with(service_url, tmp_path):
    """The int8 tier calibrates on the first vectors its mirror encodes: a restore writes them in pages of its own,
    so the backup carries the buckets in use. With one candidate per hit (no rescoring margin) the codes alone pick
    the hits."""
    url = service_url
    vectors = make_collection(url, "backup_int8", compression={"type": "int8", "rescore_multiplier": 1})
    mirrored(url, "backup_int8")
    before = answers(url, "backup_int8")
    made = rayprism("backup", "backup_int8", str(tmp_path / "b"), "--url", url, "--page-rows", "64")
    assert made.returncode == 0, made.stdout + made.stderr
    low, high = np.asarray(json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]["compression"][
        "int8_ranges"])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert low.shape == high.shape == (DIMENSIONS,)
    assert np.all(low >= unit.min(axis=0) - 1e-6) and np.all(high <= unit.max(axis=0) + 1e-6)  # from these vectors
    restored = rayprism("restore", str(tmp_path / "b"), "--as", "backup_int8_copy", "--url", url)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    mirrored(url, "backup_int8_copy")  # the codes live in the mirror: until it is built, Milvus Lite answers
    assert_same_answers(answers(url, "backup_int8_copy"), before)
    for name in ("backup_int8", "backup_int8_copy"):
        httpx.delete(f"{url}/v1/collections/{name}")


WATCHED = [f"doc{i:03d}" for i in range(0, DOCUMENTS, 15)]
"""The documents each batch of the steady writer rewrites: spread over the collection (and so over the pages a
snapshot reads), so a snapshot read while they change would hold some of them at two generations."""


def test_a_backup_under_a_steady_writer_restores_to_a_state_that_existed(service_url, tmp_path):
    url = service_url
    vectors = make_collection(url, "steady_docs")
    acknowledged: list[int] = []
    stop, started = threading.Event(), threading.Event()

    def write() -> None:
        """Batch g: the watched documents at generation g and one new document ``new{g}``, in one request."""
        with httpx.Client(timeout=60) as client:
            generation = 0
            while not stop.is_set():
                batch = [{"id": doc, "text": f"watched {doc} at {generation}", "generation": generation,
                          "vector": vectors[int(doc[3:])].tolist()} for doc in WATCHED]
                batch.append({"id": f"new{generation:04d}", "text": f"new at {generation}", "generation": generation,
                              "vector": vectors[generation % DOCUMENTS].tolist()})
                response = client.post(f"{url}/v1/collections/steady_docs/documents", json={"documents": batch})
                assert response.status_code == 200, response.text
                acknowledged.append(generation)
                if len(acknowledged) == 3:
                    started.set()
                generation += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert started.wait(120)
        acknowledged_before = len(acknowledged)
        made = rayprism("backup", "steady_docs", str(tmp_path / "s"), "--url", url, "--page-rows", "25")
        acknowledged_after = len(acknowledged)
    finally:
        stop.set()
        writer.join(120)
    assert made.returncode == 0, made.stdout + made.stderr
    assert acknowledged_after > acknowledged_before  # the writer went on while the backup was taken

    rows = pq.read_table(tmp_path / "s" / "part-00000.parquet", columns=["id", "generation"]).to_pylist()
    generation_of = {row["id"]: row["generation"] for row in rows}
    taken = {generation_of[doc] for doc in WATCHED}
    assert len(taken) == 1, f"a batch is in the backup in part: generations {sorted(taken)}"
    last = taken.pop()
    assert acknowledged_before - 1 <= last <= acknowledged_after  # every batch acknowledged before it; the one
    news = sorted(doc for doc in generation_of if doc.startswith("new"))  # in flight as it ended, perhaps
    assert news == [f"new{generation:04d}" for generation in range(last + 1)]  # a prefix of the batches, wholly

    restored = rayprism("restore", str(tmp_path / "s"), "--as", "steady_restored", "--url", url)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert httpx.get(f"{url}/v1/collections/steady_restored").json()["count"] == DOCUMENTS + last + 1
    watched = httpx.get(f"{url}/v1/collections/steady_restored/documents/{WATCHED[7]}").json()
    assert watched["generation"] == last and watched["text"] == f"watched {WATCHED[7]} at {last}"
    for name in ("steady_docs", "steady_restored"):
        httpx.delete(f"{url}/v1/collections/{name}")
