"""Kill the store process in the middle of an ingest: every acknowledged document survives."""

import os
import signal
import threading
import time

import httpx


def store_replica_pids() -> list[int]:
    """The live store replica of this test session's own Ray, found through Ray's state API:
    another rayprism on the same machine has its own Ray and is never touched."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "ServeReplica:rayprism:store"), ("state", "=", "ALIVE")],
                         detail=True)
    return [actor.pid for actor in actors]


def test_acknowledged_documents_survive_a_store_crash(service_url):
    spec = {"name": "crashy", "model": "minilm", "fields": {"batch": "int64"}}
    assert httpx.post(f"{service_url}/v1/collections", json=spec, timeout=60).status_code in (200, 201)
    acknowledged: list[str] = []
    failures: list[int] = []
    halfway = threading.Event()

    def ingest():
        with httpx.Client(timeout=60) as client:
            for batch in range(40):
                documents = [{"id": f"b{batch}-{i}", "text": f"document {i} of batch {batch}", "batch": batch}
                             for i in range(5)]
                response = client.post(f"{service_url}/v1/collections/crashy/documents", json={"documents": documents})
                if response.status_code == 200:
                    acknowledged.extend(d["id"] for d in documents)
                else:
                    failures.append(response.status_code)
                    time.sleep(0.5)
                if batch == 10:
                    halfway.set()

    writer = threading.Thread(target=ingest)
    writer.start()
    assert halfway.wait(120)
    (pid,) = store_replica_pids()
    os.kill(pid, signal.SIGKILL)
    writer.join(300)

    assert all(status in (502, 503) for status in failures), failures  # refused, never a bare 500
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Serve brings the store back
        response = httpx.get(f"{service_url}/v1/collections/crashy", timeout=30)
        if response.status_code == 200:
            break
        time.sleep(1)
    missing = [doc_id for doc_id in acknowledged
               if httpx.get(f"{service_url}/v1/collections/crashy/documents/{doc_id}", timeout=30).status_code != 200]
    assert acknowledged and not missing
    assert response.json()["count"] >= len(acknowledged)
    assert store_replica_pids() != [pid]
