"""One local Ray and one running service per test session, started the way `rayprism serve` does.

Ray reads its Serve settings from the environment of the processes it starts, so
they are set here, at import, before anything imports ``ray.serve``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from rayprism.deployments.ingress import replica_ports_env
from rayprism.deployments.launch import apply_env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SERVICE_PORT = free_port()
apply_env(replica_ports_env(range(SERVICE_PORT, SERVICE_PORT + 2), quarantine_s=0))  # the session's service, and test_groups' second application


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # The dashboard serves Ray's state API, which tests use to find this session's own processes.
    ray.init(address="local", include_dashboard=True, dashboard_port=free_port(), num_cpus=2)
    yield
    ray.shutdown()


SAMPLE_FIELDS = {"package": "varchar", "section": "varchar", "priority": "varchar", "installed_size": "int64"}


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def minilm_int8_ranges(reference_minilm, tmp_path_factory) -> Path:
    """MiniLM's int8 ranges as a batch job calibrates them (on the first rows of its input), saved as it saves them."""
    import json

    from rayprism.platform.codecs.quantize import calibrate_int8, ranges_to_json

    rows = (Path(__file__).parents[1] / "data" / "debian-sample.jsonl").read_text().splitlines()[:64]
    path = tmp_path_factory.mktemp("int8") / "_int8_ranges.json"
    path.write_bytes(ranges_to_json(calibrate_int8(reference_minilm.encode([json.loads(row)["text"] for row in rows]))))
    return path


@pytest.fixture(scope="session")
def service_config(tiny_model_path, tiny_reranker_path, media_model_path, prompted_model_path, store_dir,
                   minilm_int8_ranges):
    from rayprism.platform.config import (
        BatchingConfig,
        CollectionConfig,
        DeploymentConfig,
        ModelConfig,
        ServeConfig,
        ServerConfig,
        StoreConfig,
    )

    return ServeConfig(
        # the default limits: 8 MiB bodies, 2048 inputs; the audit file beside the store
        server=ServerConfig(port=SERVICE_PORT, audit_log=str(store_dir / "audit.jsonl")),
        store=StoreConfig(uri=str(store_dir / "rayprism.db"), flush_after_s=0.2),
        collections=[CollectionConfig(name="debian", fields=SAMPLE_FIELDS)],
        deployment=DeploymentConfig(num_cpus=1),
        models=[
            ModelConfig(name="minilm", torch_threads=2, int8_ranges=minilm_int8_ranges),
            # a tiny model whose idle batcher waits 2 s with room for 4 inputs: overload on demand
            ModelConfig(
                name="tiny-queue", source=tiny_model_path,
                batching=BatchingConfig(batch_wait_s=2.0, max_queued_inputs=4),
            ),
            # image and speech encoders, chosen from their model directories (tiny CLIP and Whisper)
            ModelConfig(name="clip", modality="image", source=media_model_path("clip")),
            ModelConfig(name="whisper", modality="audio", source=media_model_path("whisper"), max_audio_seconds=10),
            # a tiny cross-encoder: /v1/rerank and the rerank stage of search
            ModelConfig(name="judge", kind="reranker", source=tiny_reranker_path),
            # a tiny model with query and document prompts: clients that pick the prompt by role
            ModelConfig(name="prompted", source=prompted_model_path),
        ],
    )


@pytest.fixture(scope="session")
def service_url(ray_session, service_config) -> str:
    from ray import serve

    from rayprism.deployments.launch import deploy, service_url, wait_until_ready

    deploy(service_config, direct_ingress=True)
    url = service_url(service_config)
    wait_until_ready(url, timeout_s=300)
    yield url
    serve.shutdown()


@contextlib.contextmanager
def rayprism_serve(config: Path, **env: str) -> Iterator[tuple[str, Path]]:
    """`rayprism serve config` as a user runs it, with ``env`` added to its environment, on its own Ray in a temp
    folder of its own (so its logs are this service's): yields its URL and that Ray's log folder; stopped by
    SIGTERM, which must end it cleanly."""
    ray_home = tempfile.mkdtemp(prefix="rk-", dir="/tmp")  # Ray's socket paths must stay short
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    environment.update(env, RAY_TMPDIR=ray_home)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "rayprism.cli", "serve", str(config), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    lines = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any("rayprism is serving at" in line for line in lines):
            line = process.stdout.readline()
            assert line or process.poll() is None, "".join(lines)
            lines.append(line)
        assert "rayprism is serving at" in lines[-1], "".join(lines)
        yield f"http://127.0.0.1:{port}", Path(ray_home, "ray", "session_latest", "logs")
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=120)
        assert process.returncode == 0, rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(ray_home, ignore_errors=True)


OPS = "sk-ops-0123456789abcdef"  # admin, from $RAYPRISM_TEST_OPS_KEY where the service runs
SEARCH_UI = "sk-search-ui-0123456789abcdef"  # read:*
TEAM_A = "sk-team-a-0123456789abcdef"  # given to the service as its digest
FLOOD = "sk-flood-0123456789abcdef"  # 1 request/s, 2 at once
BATCH = "sk-batch-0123456789abcdef"  # 10 inputs/s, 10 at once
READER = "sk-reader-0123456789abcdef"  # read:*
KEYED_CONFIG = """\
server:
  audit_log: {folder}/audit.jsonl
  api_keys:
    - {{name: search-ui, key: "{search_ui}", scopes: ["read:*"]}}
    - {{name: team-a, sha256: "{team_a}", scopes: ["embed", "read:team_a_*", "write:team_a_*"]}}
    - {{name: ops, key_env: RAYPRISM_TEST_OPS_KEY, scopes: ["admin"]}}
    - {{name: flood, key: "{flood}", scopes: ["embed", "read:*"], rate: {{requests_per_s: 1, burst_s: 2}}}}
    - {{name: batch, key: "{batch}", scopes: ["embed"], rate: {{inputs_per_s: 10, burst_s: 1}}}}
    - {{name: reader, key: "{reader}", scopes: ["read:*"]}}
models:
  - {{name: tiny, source: {model}}}
  - {{name: tiny2, source: {model}}}  # a second model to re-embed with
store: {{uri: {folder}/store.db}}
"""


SHARED_SERVICES = ("keyed_service", "own_service")
"""Services that several modules share (a start costs ~35 s on CI): each is started for the first test that asks
for it and stopped after the last (``pytest_collection_modifyitems`` runs the modules that ask one after the other),
so that it does not idle through the rest of the suite."""


@pytest.fixture(scope="session")
def running_services() -> Iterator[dict[str, tuple[contextlib.ExitStack, object]]]:
    """The shared services running now, by fixture name; one still running at the session's end (the session
    stopped early: -x, a Ctrl-C) is stopped then."""
    running: dict[str, tuple[contextlib.ExitStack, object]] = {}
    yield running
    for stack, _ in running.values():
        stack.close()


def shared_service(request, running: dict, start) -> Iterator:
    """What ``start()`` (a context manager) yields, entered once for the run of tests that ask for the fixture
    ``request.fixturename`` and left after the last of them."""
    name = request.fixturename
    if name not in running:
        stack = contextlib.ExitStack()
        running[name] = stack, stack.enter_context(start())
    yield running[name][1]
    items = request.session.items
    if not any(name in item.fixturenames for item in items[items.index(request.node) + 1:]):
        stack, _ = running.pop(name)
        stack.close()


@pytest.fixture()
def keyed_service(request, running_services, tmp_path_factory, tiny_model_path) -> Iterator[tuple[str, Path, Path]]:
    """A `rayprism serve` with the keys above (keys given as text, as a digest and by an environment variable;
    scopes; quotas), shared by the modules that test keys: its URL, its Ray's log folder and its audit file. What
    a test reads from the logs or the audit file is what it made after it began."""
    import hashlib

    @contextlib.contextmanager
    def start():
        folder = tmp_path_factory.mktemp("keyed")
        config = folder / "serve.yaml"
        config.write_text(KEYED_CONFIG.format(folder=folder, search_ui=SEARCH_UI, flood=FLOOD, batch=BATCH,
                                              reader=READER, team_a=hashlib.sha256(TEAM_A.encode()).hexdigest(),
                                              model=tiny_model_path))
        with rayprism_serve(config, RAYPRISM_TEST_OPS_KEY=OPS) as (url, logs):
            yield url, logs, folder / "audit.jsonl"

    yield from shared_service(request, running_services, start)


OWN_CONFIG = """\
server: {{audit_log: {folder}/audit.jsonl}}
deployment: {{num_cpus: 0.5}}
models:
  - {{name: tiny, source: {model}}}
store: {{uri: {folder}/store.db, cache_max_rows: 1, flush_after_s: 0.2}}
batches: {{dir: {folder}/batches, lines_per_unit: 10, workers: 1}}
collections:
  - {{name: late, model: tiny, multivector: {{}}}}
"""


@pytest.fixture()
def own_service(request, running_services, tmp_path_factory, tiny_model_path) -> Iterator[tuple[str, Path]]:
    """A `rayprism serve` without keys, shared by the modules that need settings the session's service lacks: the
    OpenAI Batch API (test_batches), and a store that mirrors at most one row, so that the multi-vector collection
    ``late`` never has all its token vectors in memory (test_sdk_not_ready). Its URL and its folder (the audit
    file, the batches)."""

    @contextlib.contextmanager
    def start():
        folder = tmp_path_factory.mktemp("own")
        config = folder / "serve.yaml"
        config.write_text(OWN_CONFIG.format(folder=folder, model=tiny_model_path))
        with rayprism_serve(config) as (url, _):
            yield url, folder

    yield from shared_service(request, running_services, start)


def pytest_collection_modifyitems(items):
    """Everything here starts Ray (or needs the session's service): slow by definition. The modules that share one
    of ``SHARED_SERVICES`` run one after the other, from where the first of them stands (each module stays whole)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.slow)
    module_start: dict[Path, int] = {}
    service_start: dict[str, int] = {}
    for index, item in enumerate(items):
        start = module_start.setdefault(item.path, index)
        for name in SHARED_SERVICES:
            if name in item.fixturenames:
                service_start.setdefault(name, start)
    anchor = dict(module_start)
    for item in items:
        for name in SHARED_SERVICES:
            if name in item.fixturenames:
                anchor[item.path] = min(anchor[item.path], service_start[name])
    order = {id(item): (anchor[item.path], module_start[item.path], index) for index, item in enumerate(items)}
    items.sort(key=lambda item: order[id(item)])


def actor_pids(class_name: str) -> list[int]:
    """Processes of this test session's own Ray, found through its state API: another rayprism on the
    same machine has its own Ray and is never touched."""
    import ray
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address  # this session's Ray, even with another one running
    actors = list_actors(address=address, filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")],
                         detail=True)
    return [actor.pid for actor in actors]


STORE_REPLICA = "ServeReplica:rayprism:store"
SERVING_REPLICA = "ServeReplica:rayprism:rayprism"


RAY_WORKER_NICENESS = 15
"""Ray's default niceness for its workers, serving replicas included (its ``worker_niceness`` setting)."""

RESTART_OVERHEAD_S = 10
"""What Ray adds to a serving replica's own start when it replaces a killed one: a fresh worker, ``import
ray.serve``, the controller noticing and routing to it (4.9 s measured on a quiet machine, twice that busy)."""


def cold_replica_start_s(config: Path, at_once: int = 1) -> float:
    """How long this machine takes, now, to start serving replicas' Python from nothing: import the app and load
    the models of the serve config at ``config``, in ``at_once`` fresh processes started together (as many as a
    test kills: their replacements start together and share the cores) at the niceness Ray gives its workers
    (``RAY_worker_niceness``, 15: beside other work a replica gets a fraction of a nice-0 process's share); the
    time until the first is loaded. The floor of any recovery: a busy 2-core machine stretches one start from
    ~13 s to past 30 s, so recovery bounds are held to it as measured in the same run."""
    script = ("import sys; import rayprism.deployments.app; "
              "from rayprism.deployments.service import EmbeddingService; "
              "from rayprism.platform.config import load_serve_config; "
              "EmbeddingService(load_serve_config(sys.argv[1])).wait_loaded()")
    started = time.monotonic()
    errors = [tempfile.TemporaryFile() for _ in range(at_once)]
    niceness = int(os.environ.get("RAY_worker_niceness", RAY_WORKER_NICENESS))
    processes = [subprocess.Popen([sys.executable, "-c", script, str(config)], stdout=subprocess.DEVNULL, stderr=error,
                                  preexec_fn=lambda: os.nice(niceness)) for error in errors]
    first_loaded_s = None
    while any(process.poll() is None for process in processes):
        if first_loaded_s is None and any(process.poll() == 0 for process in processes):
            first_loaded_s = time.monotonic() - started
        assert time.monotonic() - started < 300, "a cold replica start took over 300 s"
        time.sleep(0.1)
    for process, error in zip(processes, errors):
        error.seek(0)
        if process.returncode:
            raise RuntimeError(f"a cold replica start failed: {error.read().decode()[-2000:]}")
    return first_loaded_s or time.monotonic() - started
