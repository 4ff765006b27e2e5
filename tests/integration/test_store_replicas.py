"""Two store replicas on a Milvus server (the embedded 2.3.5 one), behind a `rayprism serve` run as a user runs
it: each write is seen by the very next read whichever replica answers either, an alias made through one is
followed by both, both answer searches (each one's own counters in /metrics), and a re-embedding under writes
through both loses none of them (the checks of tests/integration/test_reembed.py, read back from the server)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymilvus import MilvusClient

from rayprism.deployments.store import METRICS_REPORT_S
from tests.integration.conftest import free_port
from tests.integration.test_serve_lifecycle import Service

ROUNDS = 16


@pytest.fixture(scope="module")
def replicated(tmp_path_factory, tiny_model_path, milvus_server_uri):
    """The service; ``tiny_next`` is ``tiny`` again under another name: a re-embedding to it passes the gate."""
    config = tmp_path_factory.mktemp("replicated") / "serve.yaml"
    config.write_text(f"server: {{port: {free_port()}}}\n"
                      "deployment: {num_cpus: 0.5}\n"
                      f"models:\n  - name: tiny\n    source: {tiny_model_path}\n"
                      f"  - name: tiny_next\n    source: {tiny_model_path}\n"
                      f"store: {{uri: '{milvus_server_uri}', replicas: 2}}\n"
                      "collections:\n  - {name: replicated, model: tiny, bm25: false}\n")
    service = Service(config)
    try:
        service.start()
        yield service.url
    finally:
        service.stop_quietly()


def search(url: str, collection: str, query: str) -> list[str]:
    response = httpx.post(f"{url}/v1/collections/{collection}/search", json={"query": query, "k": 1, "mode": "dense"},
                          timeout=60)
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


def store_calls(url: str, call: str) -> dict[str, float]:
    """Store replica → how many ``call``s it answered, as /metrics shows them."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rayprism_store_replica_call_seconds_count" and sample.labels["call"] == call:
                counts[sample.labels["store_replica"]] = sample.value
    return counts


def test_two_store_replicas_see_each_others_writes_follow_one_alias_and_both_answer(replicated):
    url = replicated
    for i in range(ROUNDS):  # write, then read at once: the two calls may reach different store replicas
        text = f"document number {i} about topic {i * 7919 % 1000}"
        written = httpx.post(f"{url}/v1/collections/replicated/documents",
                             json={"documents": [{"id": f"d{i}", "text": text}]}, timeout=60)
        assert written.status_code == 200, written.text
        assert search(url, "replicated", text) == [f"d{i}"]
        assert httpx.get(f"{url}/v1/collections/replicated", timeout=30).json()["count"] == i + 1
    deleted = httpx.request("DELETE", f"{url}/v1/collections/replicated/documents", json={"ids": ["d3"]}, timeout=60)
    assert deleted.json()["deleted"] == 1
    assert search(url, "replicated", "document number 3 about topic 757") != ["d3"]
    assert httpx.get(f"{url}/v1/collections/replicated/documents/d3", timeout=30).status_code == 404

    created = httpx.post(f"{url}/v1/aliases", json={"name": "replicated_live", "collection": "replicated"}, timeout=30)
    assert created.status_code == 201, created.text
    queries = {f"d{i}": f"document number {i} about topic {i * 7919 % 1000}" for i in range(ROUNDS) if i != 3}
    searches: dict[str, float] = {}
    for _ in range(5):  # concurrent searches through the alias, which Serve spreads over both store replicas
        with ThreadPoolExecutor(8) as pool:
            found = dict(zip(queries, pool.map(lambda query: search(url, "replicated_live", query), queries.values())))
        assert found == {doc_id: [doc_id] for doc_id in queries}
        time.sleep(METRICS_REPORT_S)  # a replica reports its counts on its first call a report period later
        searches = store_calls(url, "search")
        if len(searches) == 2 and all(count > 0 for count in searches.values()):
            break
    assert len(searches) == 2 and all(count > 0 for count in searches.values()), searches


def test_a_backup_through_two_store_replicas_restores_on_the_server(replicated, tmp_path):
    from tests.integration.test_backup import rayprism

    made = rayprism("backup", "replicated_live", str(tmp_path / "b"), "--url", replicated, "--page-rows", "2")
    assert made.returncode == 0, made.stdout + made.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert (manifest["rows"], manifest["aliases"]) == (ROUNDS - 1, ["replicated_live"])
    restored = rayprism("restore", str(tmp_path / "b"), "--as", "replicated_copy", "--url", replicated)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "alias 'replicated_live' skipped: it exists, reaching 'replicated'" in restored.stdout
    for i in (0, 5, ROUNDS - 1):  # the texts were embedded once, by the original's upserts
        assert search(replicated, "replicated_copy", f"document number {i} about topic {i * 7919 % 1000}") == [f"d{i}"]
    assert httpx.delete(f"{replicated}/v1/collections/replicated_copy", timeout=60).status_code == 200


def test_a_reembedding_under_writes_through_two_store_replicas_loses_no_write(replicated, milvus_server_uri):
    url = replicated
    documents = [{"id": f"r{i}", "text": f"reembedded document {i} on subject {i * 31 % 97}"} for i in range(80)]
    created = httpx.post(f"{url}/v1/collections", json={"name": "moving_v1", "model": "tiny", "bm25": False},
                         timeout=60)
    assert created.status_code in (200, 201), created.text
    assert httpx.post(f"{url}/v1/collections/moving_v1/documents", json={"documents": documents},
                      timeout=120).status_code == 200
    assert httpx.post(f"{url}/v1/aliases", json={"name": "moving", "collection": "moving_v1"},
                      timeout=30).status_code == 201
    expected = {doc["id"]: doc["text"] for doc in documents}
    started = httpx.post(f"{url}/v1/collections/moving/reembed", json={"model": "tiny_next", "batch_size": 8},
                         timeout=60)
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]

    stop = threading.Event()
    writes = {"count": 0}

    def writer() -> None:  # upserts, changes and deletes through the alias until after the swap
        with httpx.Client(base_url=url, timeout=120) as client:
            turn = 0
            while not stop.wait(0.05):
                new = {"id": f"w{turn}", "text": f"written during the move, number {turn}"}
                changed = {"id": f"r{turn % 80}", "text": f"changed during the move, turn {turn}"}
                response = client.post("/v1/collections/moving/documents", json={"documents": [new, changed]})
                assert response.status_code == 200, response.text
                expected[new["id"]], expected[changed["id"]] = new["text"], changed["text"]
                if turn % 3 == 2:
                    response = client.request("DELETE", "/v1/collections/moving/documents",
                                              json={"ids": [f"w{turn - 1}"]})
                    assert response.status_code == 200, response.text
                    expected.pop(f"w{turn - 1}")
                turn += 1
                writes["count"] = turn

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 600
        while (job := httpx.get(f"{url}/v1/reembed/{job_id}", timeout=60).json())["state"] == "running":
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        swapped_at = writes["count"]
        while writes["count"] < swapped_at + 3 and thread.is_alive():  # a few writes after the swap
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    assert job["state"] == "done", job
    assert writes["count"] > swapped_at >= 3, writes
    assert httpx.get(f"{url}/v1/collections/moving", timeout=30).json()["name"] == "moving_v2"
    server = MilvusClient(milvus_server_uri)  # the server's own rows, not the service's answer
    try:
        rows = server.query("moving_v2", filter="", output_fields=["id", "text"], limit=16384,
                            consistency_level="Strong")
    finally:
        server.close()
    assert {row["id"]: row["text"] for row in rows} == expected
