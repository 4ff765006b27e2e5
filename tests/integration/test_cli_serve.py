"""`rayprism serve` as a user runs it: its own Ray, a printed URL, a clean stop on SIGTERM."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.integration.conftest import free_port


def test_serve_prints_its_url_answers_and_stops_on_sigterm(tmp_path, tiny_model_path):
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(f"models:\n  - name: tiny\n    source: {tiny_model_path}\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "rayprism.cli", "serve", str(config), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line or process.poll() is None, "".join(lines)
            lines.append(line)
            if "rayprism is serving at" in line:
                break
        url = f"http://127.0.0.1:{port}"
        assert url in lines[-1], "".join(lines)
        response = httpx.post(f"{url}/v1/embeddings", json={"input": ["from the CLI"]}, timeout=30)
        assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 16

        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, rest
    assert "stopped" in rest
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)


def test_serve_refuses_a_declared_collection_whose_schema_differs(tmp_path, tiny_model_path):
    store_path = tmp_path / "store.db"
    # in a process of its own: a Milvus Lite file stays locked until the process that opened it exits
    subprocess.run([sys.executable, "-c", (
        "from rayprism.platform.config import CollectionConfig\n"
        "from rayprism.platform.store.milvus import MilvusStore\n"
        f"MilvusStore({str(store_path)!r}).ensure(CollectionConfig(name='notes', model='tiny', "
        "fields={'section': 'int64'}), 16)\n"
    )], check=True, timeout=120)
    config = tmp_path / "serve.yaml"
    config.write_text(
        f"models:\n  - name: tiny\n    source: {tiny_model_path}\n"
        f"store: {{uri: {store_path}}}\n"
        "collections:\n  - name: notes\n    model: tiny\n    fields: {section: varchar}\n"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    result = subprocess.run(
        [sys.executable, "-m", "rayprism.cli", "serve", str(config), "--port", str(free_port())],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "field 'section': config varchar, store int64" in result.stderr
