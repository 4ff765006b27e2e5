"""Two store replicas on a Milvus server (the embedded 2.3.5 one), behind a `rayprism serve` run as a user runs
it: each write is seen by the very next read whichever replica answers either, an alias made through one is
followed by both, and both answer searches (each one's own counters in /metrics)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rayprism.deployments.store import METRICS_REPORT_S
from tests.integration.conftest import free_port
from tests.integration.test_serve_lifecycle import Service

ROUNDS = 16


@pytest.fixture
def replicated(tmp_path, tiny_model_path, milvus_server_uri):
    config = tmp_path / "serve.yaml"
    config.write_text(f"server: {{port: {free_port()}}}\n"
                      "deployment: {num_cpus: 0.5}\n"
                      f"models:\n  - name: tiny\n    source: {tiny_model_path}\n"
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
