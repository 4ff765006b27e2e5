"""Several Ray nodes on this one machine (tests/ray_cluster.py): what config places where, and what a
lost node costs. The service and jobs run as a user runs them against a cluster (``rayprism serve
--address``, ``rayprism embed --address``), in processes of their own; the cluster's state API says
where each actor runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from rayprism.deployments.ingress import PROXY_READINESS
from tests.conftest import cosines
from tests.integration.conftest import free_port
from tests.ray_cluster import RayCluster, cluster_env

SAMPLE = [json.loads(line) for line in (Path(__file__).parents[1] / "data" / "debian-sample.jsonl").read_text().splitlines()]
GPU_NODE = "gpu-node"  # the one node with the custom resource {"gpu_node": 1}
SERVING = "serving"  # a custom resource: one serving replica per unit
GROUP_REPLICA = "ServeReplica:rayprism:group-accel"


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.5)
    return value


@pytest.fixture(scope="module")
def cluster():
    """A head node and a node with ``{"gpu_node": 1}``, one CPU each; the head has room for one serving
    replica (``{"serving": 1}``)."""
    # Serve runs a proxy on every node that has a replica; here every node's proxy binds the service's port
    # (SO_REUSEPORT: the kernel hands each new connection to one of them, as an ingress in front of every
    # node does on a real cluster). Each proxy spreads its requests over every node's replicas, not its
    # own node's only: the surviving proxies keep trying a lost replica until Serve learns it is gone.
    nodes = RayCluster({**cluster_env(), "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0", **PROXY_READINESS})
    try:
        nodes.start(num_cpus=1, resources={SERVING: 1})
        nodes.add_node(GPU_NODE, num_cpus=1, resources={"gpu_node": 1})
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def serve_port() -> int:
    """The port of the cluster's Serve proxies: the first service there starts Serve with it, and Serve keeps
    it for every later one (another port is refused: launch.check_serve_port)."""
    return free_port()


class Service:
    """``rayprism serve <config> --address <cluster>`` in a process of its own, stopped by its pid."""

    def __init__(self, cluster: RayCluster, config: dict, directory):
        self.port = config["server"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        path = directory / "serve.yaml"
        path.write_text(json.dumps(config))
        self.log = (directory / "serve.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rayprism.cli", "serve", str(path), "--address", cluster.gcs_address],
            stdout=self.log, stderr=subprocess.STDOUT, env=cluster.env, cwd=directory, start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 300) -> None:
        def ready():
            assert self.process.poll() is None, (self.log.flush(), open(self.log.name).read())[1]
            try:
                return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout_s, "the service ready")

    def wait_serving(self, timeout_s: float = 300) -> None:
        """Until ``rayprism serve`` says it serves: every one of its ``replicas.min`` replicas answered ready."""
        def serving():
            assert self.process.poll() is None, (self.log.flush(), open(self.log.name).read())[1]
            self.log.flush()
            return "rayprism is serving at" in open(self.log.name).read()

        wait_for(serving, timeout_s, "the service serving")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)  # it deletes its application, then ends
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self.log.close()


def test_a_group_that_asks_for_a_nodes_resource_runs_on_that_node(cluster, serve_port, tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    config = {
        "server": {"port": serve_port},
        "store": {"uri": str(tmp_path / "store.db")},
        "deployment": {"num_cpus": 0.25},
        "models": [{"name": "local", "source": tiny_model_path}, {"name": "remote", "source": tiny_model_path}],
        "deployments": [{"name": "accel", "models": ["remote"], "num_cpus": 0.25, "resources": {"gpu_node": 1}}],
    }
    service = Service(cluster, config, tmp_path)
    try:
        service.wait_ready()
        texts = ["placed by its config", "on the node that has the resource"]
        response = httpx.post(f"{service.url}/v1/embeddings", json={"model": "remote", "input": texts}, timeout=120)
        assert response.status_code == 200, response.text
        [group] = cluster.actors(GROUP_REPLICA)
        assert group.node_id == cluster.nodes[GPU_NODE].node_id
        reference = SentenceTransformer(tiny_model_path, device="cpu").encode(texts)
        assert cosines([item["embedding"] for item in response.json()["data"]], reference).min() >= 0.99999
    finally:
        service.stop()


def test_a_batch_job_spreads_over_the_nodes_and_loses_no_row_with_a_node(cluster, tiny_model_path, tmp_path):
    """Encoder actors on both nodes (each unit's record names its node); the node with one of them is
    killed once it has finished a unit: the job ends with every input row in the collection once, the
    vectors sentence-transformers computes. Runs after the placement test: it ends the GPU node."""
    from sentence_transformers import SentenceTransformer

    from rayprism.platform.config import DENSE_FIELD
    from rayprism.platform.store.milvus import MilvusStore

    rows = [{"id": f"{copy}-{row['id']}", "text": row["text"]} for copy in range(3) for row in SAMPLE]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    job = {
        "input": {"path": "corpus.jsonl"},
        "model": {"name": "tiny", "source": tiny_model_path},
        # one CPU per actor: at most one on each node; 30 units of 12 rows
        "compute": {"num_cpus": 1, "torch_threads": 1, "min_actors": 1, "max_actors": 2, "rows_per_part": 12},
        "output": {"parquet": "out", "collection": "spread", "uri": str(tmp_path / "job.db")},
    }
    (tmp_path / "job.yaml").write_text(json.dumps(job))
    log = (tmp_path / "embed.log").open("w+")
    driver = subprocess.Popen(
        [sys.executable, "-m", "rayprism.cli", "embed", "job.yaml", "--address", cluster.gcs_address],
        stdout=log, stderr=subprocess.STDOUT, env=cluster.env, cwd=tmp_path, start_new_session=True,
    )
    try:
        gpu_node = cluster.nodes[GPU_NODE].node_id

        def on_gpu_node():
            assert driver.poll() is None, "the job ended before a unit finished on the GPU node"
            return [unit for unit in done_units(tmp_path) if unit["node"] == gpu_node]

        done = wait_for(on_gpu_node, 300, "a unit finished on the GPU node")
        cluster.kill(GPU_NODE)
        assert len(done_units(tmp_path)) < 30, "the job was over before the node was lost"
        driver.wait(400)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(30)
    log.seek(0)
    output = log.read()
    assert driver.returncode == 0, output
    assert "encoder workers lost" in output  # the lost node's actor: its unfinished unit ran again
    units = done_units(tmp_path)
    assert len(units) == 30 and sum(unit["rows"] for unit in units) == len(rows)
    assert {unit["node"] for unit in units} == {cluster.nodes["head"].node_id, gpu_node} and done
    store = MilvusStore(str(tmp_path / "job.db"))
    try:
        assert store.count("spread") == len(rows)
        assert sorted(store.ids("spread")) == sorted(row["id"] for row in rows)
        sample = [row["id"] for row in rows[::37]]
        stored = {item["id"]: item[DENSE_FIELD] for item in store.get("spread", sample, [DENSE_FIELD])}
    finally:
        store.close()
    texts = {row["id"]: row["text"] for row in rows}
    reference = SentenceTransformer(tiny_model_path, device="cpu").encode([texts[i] for i in sample])
    assert cosines([stored[i] for i in sample], reference).min() >= 0.9999


def done_units(job_dir) -> list[dict]:
    """The job's records of finished units (rows, rejected rows, the node that did it)."""
    return [json.loads(path.read_text()) for path in (job_dir / "out" / "_done").glob("*.json")]


class SteadyRequests:
    """``clients`` threads, each sending one embedding request after another (keep-alive connections, as a
    client library holds them) until stopped; every answer is counted: its status code, or the name of
    the transport error. The moments of the answers that succeeded show how long the service was silent."""

    def __init__(self, url: str, clients: int = 4):
        self.url = url
        self.answers: Counter = Counter()
        self.successes: list[float] = []
        self.failures: list[tuple[float, int | str, str]] = []
        """(when, status or error name, body or error text) of each failed request."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]

    def __enter__(self) -> SteadyRequests:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _run(self, client: int) -> None:
        with httpx.Client(timeout=60) as http:
            sent = 0
            while not self._stop.is_set():
                try:
                    response = http.post(f"{self.url}/v1/embeddings",
                                         json={"model": "tiny", "input": f"client {client} request {sent}"})
                    answer, text = response.status_code, response.text
                except httpx.TransportError as error:
                    answer, text = type(error).__name__, str(error)
                sent += 1
                with self._lock:
                    self.answers[answer] += 1
                    if answer == 200:
                        self.successes.append(time.monotonic())
                    else:
                        self.failures.append((time.monotonic(), answer, text[:300]))

    def total(self) -> int:
        with self._lock:
            return sum(self.answers.values())

    def failed(self) -> int:
        with self._lock:
            return sum(count for answer, count in self.answers.items() if answer != 200)

    def failed_through_the_sdk(self) -> int:
        """The failures a caller of rayprism's SDK sees: it sends a request again after a cut connection and
        after a 429, 502 or 503 (each its ``Retries`` allow); the rest reach it."""
        from rayprism.client._errors import RETRIABLE

        with self._lock:
            return sum(count for answer, count in self.answers.items()
                       if answer != 200 and isinstance(answer, int) and answer not in RETRIABLE)

    def longest_silence(self) -> float:
        """The longest time between two successful answers, in seconds."""
        with self._lock:
            return max(later - earlier for earlier, later in zip(self.successes, self.successes[1:]))


def serving_replicas(cluster: RayCluster) -> dict[str, str]:
    """Replica id → node id of the service's RUNNING serving replicas, as Serve's REST API reports them."""
    details = httpx.get(f"{cluster.dashboard_url}/api/serve/applications/", timeout=30).json()
    deployment = details["applications"]["rayprism"]["deployments"]["rayprism"]
    return {replica["replica_id"]: replica["node_id"] for replica in deployment["replicas"] if replica["state"] == "RUNNING"}


def test_losing_the_node_of_one_of_two_replicas_fails_few_requests_and_the_replica_is_replaced(
        cluster, serve_port, tiny_model_path, tmp_path):
    """Two serving replicas (one ``serving`` unit each) on two of three nodes that offer one: the head and
    two nodes started here. The node of one of them (not the head) is killed under steady requests: the
    other replica keeps answering, Serve starts a new replica on the node with a free unit, at most 1% of
    the requests fail as the SDK sees them (raw failures printed). (The spare unit is on a node that joined before: a node starting under this load
    on two cores may not join at all, see RayCluster.raylet_failures.)"""
    for name in ("serve-a", "serve-b"):  # one after the other: two starting at once may both be too slow
        cluster.add_node(name, num_cpus=1, resources={SERVING: 1})
    config = {
        "server": {"port": serve_port},
        "store": {"uri": str(tmp_path / "store.db")},
        "deployment": {"num_cpus": 0.5, "resources": {SERVING: 1}, "replicas": {"min": 2, "max": 2}},
        "models": [{"name": "tiny", "source": tiny_model_path}],
    }
    service = Service(cluster, config, tmp_path)
    try:
        service.wait_serving()
        before = serving_replicas(cluster)
        assert len(before) == 2 and len(set(before.values())) == 2, before  # one `serving` unit per node
        head = cluster.nodes["head"].node_id
        lost = next(node for node in cluster.nodes.values() if node.node_id in set(before.values()) - {head})
        with SteadyRequests(service.url) as load:
            wait_for(lambda: load.total() >= 100, 300, "100 requests answered before the loss")
            cluster.kill(lost.name)
            lost_at = time.monotonic()

            def replaced():
                now = serving_replicas(cluster)
                return len(now) == 2 and lost.node_id not in now.values() and now

            after = wait_for(replaced, 300, "the lost replica replaced on another node")
            replaced_s = time.monotonic() - lost_at
            settled = load.total()
            wait_for(lambda: load.total() >= settled + 100, 300, "100 requests answered after the replacement")
        print(f"answers {dict(load.answers)}; replaced after {replaced_s:.1f} s; "
              f"longest silence {load.longest_silence():.1f} s")
        for when, answer, text in load.failures:
            print(f"  {when - lost_at:+.1f} s: {answer} {text}")
        assert len(set(after) & set(before)) == 1  # the survivor kept serving, beside a new replica
        # A new replica takes requests while its models load, answering them 503 "still loading" (1.4 to 3.8%
        # of them here): with the cut connections, what the SDK sends again.
        assert load.failed_through_the_sdk() <= 0.01 * load.total(), load.answers
        assert load.longest_silence() < 15  # answers went on while Ray noticed the loss (15 to 20 s)
    finally:
        service.stop()
