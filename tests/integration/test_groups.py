"""Model groups: a model in a deployment of its own, reached through a handle, scaled from zero on first
use and back to zero when idle; the service answers for it exactly as for a local model."""

import asyncio
import time

import pytest

from tests.conftest import cosines
from tests.integration.conftest import actor_pids

APP = "grouped"
GROUP_REPLICA = f"ServeReplica:{APP}:group-spare"


class App:
    """The application's ingress deployment, called through a handle on one event loop: handles bind to
    the loop they are first used on, and this one lives as long as the session's Serve."""

    def __init__(self, name: str):
        from ray import serve

        async def handle():
            return serve.get_app_handle(name)

        self._loop = asyncio.new_event_loop()
        self._handle = self._loop.run_until_complete(handle())

    def call(self, remote, timeout_s: float = 180):
        """``remote(handle)`` is the call, e.g. ``lambda app: app.health.remote()``."""

        async def answer():
            return await asyncio.wait_for(remote(self._handle), timeout_s)

        return self._loop.run_until_complete(answer())


@pytest.fixture(scope="module")
def grouped_app(ray_session, service_url, tiny_model_path, tmp_path_factory):
    """A second application beside the session's: `local` in the serving replica, `remote` in a group
    of its own that may scale to zero (same weights, so their vectors can be compared)."""
    from ray import serve

    from rayprism.deployments.app import build_application
    from rayprism.deployments.launch import absolute_store_paths
    from rayprism.platform.config import ServeConfig

    config = ServeConfig.model_validate({
        "store": {"uri": str(tmp_path_factory.mktemp("grouped") / "store.db")},
        "deployment": {"num_cpus": 0.5},
        "models": [{"name": "local", "source": tiny_model_path}, {"name": "remote", "source": tiny_model_path}],
        "deployments": [{"name": "spare", "models": ["remote"], "num_cpus": 0.5,
                         "replicas": {"min": 0, "max": 1, "idle_s": 4}}],
    })
    serve.run(build_application(absolute_store_paths(config)), name=APP, route_prefix=f"/{APP}", blocking=False)
    app = App(APP)
    deadline = time.monotonic() + 180
    while not app.call(lambda app: app.health.remote())[0]:
        assert time.monotonic() < deadline, app.call(lambda app: app.health.remote())
        time.sleep(0.5)
    yield app
    serve.delete(APP)  # the loop stays open: Serve shuts the handle's router down on it at the session's end


def wait_for(condition, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s"
        time.sleep(0.5)


def test_a_group_starts_on_first_use_answers_like_a_local_model_and_goes_back_to_zero(grouped_app):
    from rayprism.platform.api.requests import EmbeddingRequest
    from rayprism.platform.errors import InvalidInputError

    ready, body = grouped_app.call(lambda app: app.health.remote())
    assert ready and body["models"] == {"local": "ready", "remote": "idle"}  # ready without waking the group
    assert actor_pids(GROUP_REPLICA) == []
    texts = ["a group of its own", "scaled from zero"]
    remote = grouped_app.call(lambda app: app.create_embeddings.remote(EmbeddingRequest(model="remote", input=texts)))
    local = grouped_app.call(lambda app: app.create_embeddings.remote(EmbeddingRequest(model="local", input=texts)))
    assert remote["model"] == "remote" and remote["usage"] == local["usage"]
    assert cosines([d["embedding"] for d in remote["data"]], [d["embedding"] for d in local["data"]]).min() >= 0.99999
    refused = EmbeddingRequest(model="remote", input=["fits", "word " * 100], truncate=False)  # the group's 400
    with pytest.raises(InvalidInputError, match=r"input\[1\] is 102 tokens; this model reads at most 64"):
        grouped_app.call(lambda app: app.create_embeddings.remote(refused))
    assert len(actor_pids(GROUP_REPLICA)) == 1
    models = {model["id"]: model for model in grouped_app.call(lambda app: app.list_models.remote())["data"]}
    assert models["remote"]["state"] == "ready" and models["remote"]["dimensions"] == 16
    wait_for(lambda: actor_pids(GROUP_REPLICA) == [], 90)  # idle_s 4, then the replica stops
    again = grouped_app.call(lambda app: app.create_embeddings.remote(EmbeddingRequest(model="remote", input="again")))
    assert len(again["data"]) == 1


def test_the_groups_batches_show_in_the_serving_replicas_metrics(grouped_app):
    from rayprism.platform.api.requests import EmbeddingRequest

    for model in ("remote", "local"):
        grouped_app.call(lambda app, model=model: app.create_embeddings.remote(EmbeddingRequest(model=model, input="x")))
    text = grouped_app.call(lambda app: app.exposition.remote()).decode()
    assert 'model="remote"' in text and 'rayprism_batch_size_count{model="local"' in text
    assert text.count("# TYPE rayprism_batch_size histogram") == 1
    replicas = [line for line in text.splitlines() if line.startswith("rayprism_replica_info{")]
    assert len(replicas) == 2  # the serving replica's own metrics and the group's, one exposition
