"""The GPU config files, read by rayprism's own loaders as `rayprism serve|embed|train` read them.

Their model sources are Hugging Face ids: loading a config must not touch the network (the weights
come when a replica or worker loads the model), so every test here runs with sockets refused.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rayprism.platform.config import is_lite_uri, load_job_config, load_serve_config
from rayprism.platform.models.source import resolve_source

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a config loader tried to reach the network: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_serve_gpu_puts_each_gpu_model_in_a_group_with_a_share_of_a_gpu():
    config = load_serve_config(CONFIGS / "serve-gpu.yaml")
    models = {model.name: model for model in config.models}
    assert (models["qwen3-embedding"].backend, models["qwen3-embedding"].source) == ("vllm", "Qwen/Qwen3-Embedding-0.6B")
    assert (models["clip"].modality, models["clip"].source) == ("image", "openai/clip-vit-base-patch32")
    assert (models["whisper"].modality, models["whisper"].source) == ("audio", "openai/whisper-small")
    for name in ("qwen3-embedding", "clip", "whisper"):
        group = config.group_of(name)
        assert group is not None and 0 < group.num_gpus < 1, name  # a fraction of a GPU
        assert models[name].device == "cuda"
    assert len({config.group_of(name).name for name in ("qwen3-embedding", "clip", "whisper")}) == 3
    assert sum(group.num_gpus for group in config.deployments) <= 1  # all three fit on one GPU
    assert config.group_of("whisper").replicas.min == 0  # speech scales from zero
    assert config.group_of("minilm") is None and config.deployment.num_gpus == 0  # HTTP stays on CPU
    assert not is_lite_uri(config.store.uri)  # a Milvus server


def test_vllm_takes_no_more_gpu_memory_than_its_groups_share():
    config = load_serve_config(CONFIGS / "serve-gpu.yaml")
    model = config.model("qwen3-embedding")
    assert model.options.gpu_memory_utilization <= config.group_of(model.name).num_gpus


@pytest.mark.parametrize("source", [
    "openai/clip-vit-base-patch32",
    "openai/whisper-small",
    "Qwen/Qwen3-Embedding-0.6B",  # a dot in the name: still a hub id, not a file
    "sentence-transformers/all-mpnet-base-v2",
])
def test_hub_ids_pass_through_unresolved_and_unfetched(source):
    """The GPU files' hub ids (serve-gpu.yaml, train-debian-gpu.yaml) stay ids: nothing looks them up."""
    assert resolve_source(source) == source  # `rayprism serve`'s preflight and every backend's load call this


def test_embed_job_gpu_takes_its_model_from_serve_gpu_and_shares_gpus_among_actors():
    job = load_job_config(CONFIGS / "embed-job-gpu.yaml")
    served = load_serve_config(CONFIGS / "serve-gpu.yaml").model("qwen3-embedding")
    assert job.model.source == served.source and job.model.options == served.options
    assert 0 < job.compute.num_gpus < 1
    actors_per_gpu = int(1 / job.compute.num_gpus)
    assert actors_per_gpu * job.model.options.gpu_memory_utilization <= 1  # vLLM instances fit side by side
    assert job.input.path.endswith("examples/data/debian-2k.jsonl") and Path(job.input.path).is_file()
    assert job.output.collection_name == "debian_qwen3"


def test_train_gpu_file_loads_with_the_trainers_config():
    train = pytest.importorskip("rayprism.platform.config.train", reason="the trainer's config is not here yet")
    config = train.load_train_config(CONFIGS / "train-debian-gpu.yaml")
    assert config.compute.use_gpu and config.compute.num_workers >= 1
    assert config.training.batch_size % config.compute.num_workers == 0
    assert config.training.precision == "bf16"
    assert Path(config.checkpoints.storage_path).is_absolute()  # storage every node can see
