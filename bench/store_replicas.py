"""Store replicas on a Milvus server: dense search throughput through the service with 1 and then 2 store replicas.

    python bench/store_replicas.py [--rows 20000] [--searches 1500] [--concurrency 16]

In one run, on the test suite's embedded Milvus 2.3.5 server and a local Ray of this process's own: the service
(direct ingress, all-MiniLM-L6-v2 from its package, one collection ``vectors``: dense, no BM25) is deployed with
``store.replicas: 1``, ``--rows`` unit-length random 384-d vectors are upserted through the documents route (each
document brings its ``vector``: nothing is embedded), then ``--searches`` dense top-10 searches by vector
(``{"query": {"vector": ...}}``: precomputed query vectors, so the encoder is not what is measured) are sent from
``--concurrency`` client threads. The service is then deployed again with ``store.replicas: 2`` over the same
collection and the same searches are sent again.

For each run: searches/s (wall), the CPU seconds the store replicas' processes spent per search (their PIDs from
this Ray's state API, CPU from psutil; with 2, their coordinator's too) and the serving replica's, and, with 2 replicas, how many searches each
store replica says it answered (its own counter, ``rayprism_store_replica_call_seconds_count`` in /metrics).
Each search by a stored vector must find that document first (Milvus, not this script, answers). The results are
written to ``--out`` for ``bench/capacity.py --report`` (the one-process ceiling: 1 / store CPU per search).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rayprism.deployments.ingress import replica_ports_env  # noqa: E402
from rayprism.deployments.launch import apply_env  # noqa: E402
from tests.milvus_server import free_ports  # noqa: E402

SERVICE_PORT, METRICS_PORT = free_ports(2)
apply_env(replica_ports_env(range(SERVICE_PORT, SERVICE_PORT + 2), quarantine_s=0))  # before Ray starts
STORE_REPLICA = "ServeReplica:rayprism:store"
SERVING_REPLICA = "ServeReplica:rayprism:rayprism"
COORDINATOR = "ServeReplica:rayprism:store-coordinator"
"""With several store replicas every read asks it something small: part of the store's cost per search."""
DIMENSIONS = 384


def encoded(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def actor_pids(class_name: str) -> list[int]:
    """This process's own Ray's actors of ``class_name`` (never another Ray's processes)."""
    import ray
    from ray.util.state import list_actors

    actors = list_actors(address=ray.get_runtime_context().gcs_address,
                         filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")], detail=True)
    return [actor.pid for actor in actors]


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def store_calls(url: str) -> dict[str, float]:
    """Store replica → searches it answered, as its own counter in /metrics says (several store replicas only)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name == "rayprism_store_replica_call_seconds_count" and sample.labels["call"] == "search":
                counts[sample.labels["store_replica"]] = sample.value
    return counts


def config(uri: str, replicas: int):
    from rayprism.platform.config import ServeConfig

    return ServeConfig.model_validate({
        "server": {"port": SERVICE_PORT}, "deployment": {"num_cpus": 0.5},
        "store": {"uri": uri, "replicas": replicas},
        "collections": [{"name": "vectors", "bm25": False}],
    })


def load(url: str, vectors: np.ndarray) -> float:
    import httpx

    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=300) as client:
        for start in range(0, len(vectors), 500):
            documents = [{"id": f"v{start + i}", "text": f"vector {start + i}", "vector": encoded(vector)}
                         for i, vector in enumerate(vectors[start : start + 500])]
            response = client.post("/v1/collections/vectors/documents", json={"documents": documents})
            assert response.status_code == 200, response.text
    return time.perf_counter() - started


def searches(url: str, queries: np.ndarray, expected: list[str | None], concurrency: int) -> tuple[float, int]:
    """Seconds for every query, sent by ``concurrency`` threads; and how many top hits were the expected ones."""
    import httpx

    bodies = [json.dumps({"query": {"vector": encoded(query)}, "k": 10, "mode": "dense"}) for query in queries]
    next_index, lock, found = [0], threading.Lock(), [0]
    failures: list[str] = []

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120, headers={"content-type": "application/json"}) as client:
            while True:
                with lock:
                    index = next_index[0]
                    next_index[0] += 1
                if index >= len(bodies):
                    return
                response = client.post("/v1/collections/vectors/search", content=bodies[index])
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                if expected[index] is not None and response.json()["results"][0]["id"] == expected[index]:
                    with lock:
                        found[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    return time.perf_counter() - started, found[0]


def run(uri: str, replicas: int, vectors: np.ndarray, args, first: bool) -> dict:
    from ray import serve

    from rayprism.deployments.launch import deploy, service_url, wait_until_ready

    settings = config(uri, replicas)
    deploy(settings, direct_ingress=True)
    url = service_url(settings)
    wait_until_ready(url, timeout_s=600)
    result: dict = {"replicas": replicas}
    if first:
        result["load_s"] = load(url, vectors)
    rng = np.random.default_rng(7)
    known = rng.choice(len(vectors), args.searches // 10, replace=False)  # every 10th query is a stored vector
    queries = rng.standard_normal((args.searches, DIMENSIONS), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    expected: list[str | None] = [None] * args.searches
    for slot, row in zip(range(0, args.searches, 10), known):
        queries[slot] = vectors[row]
        expected[slot] = f"v{row}"
    searches(url, queries[:100], [None] * 100, args.concurrency)  # warm: connections, kernels, each replica
    store_pids, serving_pids = actor_pids(STORE_REPLICA), actor_pids(SERVING_REPLICA)
    assert len(store_pids) == replicas, store_pids
    store_pids += actor_pids(COORDINATOR)
    before_store, before_serving = cpu_seconds(store_pids), cpu_seconds(serving_pids)
    load_average = os.getloadavg()
    seconds, found = searches(url, queries, expected, args.concurrency)
    result.update({
        "searches": args.searches, "seconds": seconds, "searches_per_s": args.searches / seconds,
        "store_cpu_s_per_search": (cpu_seconds(store_pids) - before_store) / args.searches,
        "serving_cpu_s_per_search": (cpu_seconds(serving_pids) - before_serving) / args.searches,
        "own_vectors_found_first": f"{found}/{sum(e is not None for e in expected)}",
        "load_average": load_average,
    })
    if replicas > 1:
        from rayprism.deployments.store import METRICS_REPORT_S

        time.sleep(METRICS_REPORT_S)  # each replica reports on its first call a report period later
        searches(url, queries[:50], [None] * 50, args.concurrency)
        result["searches_by_store_replica"] = store_calls(url)
    serve.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--searches", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "store-replicas.json")
    args = parser.parse_args()

    import ray

    from tests.milvus_server import milvus_server

    vectors = np.random.default_rng(0).standard_normal((args.rows, DIMENSIONS), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    results = {"rows": args.rows, "concurrency": args.concurrency, "started": time.strftime("%Y-%m-%d %H:%M"),
               "runs": {}}
    with tempfile.TemporaryDirectory() as directory, milvus_server(Path(directory) / "milvus") as uri:
        ray.init(address="local", include_dashboard=True, dashboard_port=METRICS_PORT, num_cpus=2)
        try:
            for replicas in (1, 2):
                results["runs"][str(replicas)] = run(uri, replicas, vectors, args, first=replicas == 1)
                print(json.dumps(results["runs"][str(replicas)]), flush=True)
        finally:
            ray.shutdown()
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    one, two = results["runs"]["1"], results["runs"]["2"]
    print(f"Milvus 2.3.5 embedded server, {args.rows} vectors x {DIMENSIONS}, dense top-10 by vector, "
          f"{args.searches} searches from {args.concurrency} threads")
    print(f"{'store replicas':<16}{'searches/s':>12}{'ratio':>7}{'store CPU ms/search':>21}{'ceiling/s':>11}"
          f"{'serving CPU ms':>16}  found first   answered by each store replica")
    for run_result in (one, two):
        print(f"{run_result['replicas']:<16}{run_result['searches_per_s']:>12.1f}"
              f"{run_result['searches_per_s'] / one['searches_per_s']:>7.2f}"
              f"{1000 * run_result['store_cpu_s_per_search']:>21.2f}{1 / run_result['store_cpu_s_per_search']:>11.0f}"
              f"{1000 * run_result['serving_cpu_s_per_search']:>16.2f}  {run_result['own_vectors_found_first']:<13} "
              f"{run_result.get('searches_by_store_replica', '')}")


if __name__ == "__main__":
    main()
