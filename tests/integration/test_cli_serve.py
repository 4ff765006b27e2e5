"""`rayprism serve` as a user runs it: its own Ray, a printed URL, a clean stop on SIGTERM."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from openai import OpenAI

from rayprism import Client, UnauthorizedError
from tests.integration.conftest import free_port
from tests.listening import assert_private

KEY = "sk-test-0123456789abcdef"


def every_v1_route(url: str, headers: dict) -> dict[str, int]:
    """One call to each /v1 route, in an order that works with a key: create, use, drop."""
    calls = [
        ("POST", "/v1/embeddings", {"input": ["from the CLI"]}),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/tiny", None),
        ("POST", "/v1/collections", {"name": "keyed", "model": "tiny", "bm25": False}),
        ("GET", "/v1/collections", None),
        ("GET", "/v1/collections/keyed", None),
        ("POST", "/v1/collections/keyed/documents", {"documents": [{"id": "a", "text": "locked away"}]}),
        ("GET", "/v1/collections/keyed/documents/a", None),
        ("POST", "/v1/collections/keyed/search", {"query": "locked"}),
        ("DELETE", "/v1/collections/keyed/documents", {"ids": ["a"]}),
        ("DELETE", "/v1/collections/keyed", None),
        ("GET", "/v1/no-such-route", None),
    ]
    return {f"{method} {path}": httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=60).status_code
            for method, path, body in calls}


def test_serve_prints_its_url_guards_v1_with_its_key_and_stops_on_sigterm(tmp_path, tiny_model_path, monkeypatch):
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(f"server: {{api_keys: [{KEY}]}}\nmodels:\n  - name: tiny\n    source: {tiny_model_path}\n"
                      f"store: {{uri: {tmp_path / 'store.db'}}}\n")
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

        refused = every_v1_route(url, {})
        assert set(refused.values()) == {401}, refused
        wrong = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer sk-not-the-key-at-all"}, timeout=30)
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert wrong.headers["www-authenticate"] == "Bearer"
        allowed = every_v1_route(url, {"Authorization": f"Bearer {KEY}"})
        assert allowed.pop("GET /v1/no-such-route") == 404
        assert set(allowed.values()) <= {200, 201}, allowed
        with Client(url, api_key="sk-not-the-key-at-all") as wrong_key, pytest.raises(UnauthorizedError) as refused:
            wrong_key.models()
        assert refused.value.http_status == 401 and refused.value.code == "invalid_api_key"
        monkeypatch.setenv("RAYPRISM_API_KEY", KEY)  # the SDK's key when none is given
        with Client(url) as keyed:
            assert keyed.model("tiny")["id"] == "tiny"
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # probes and scrapers need no key
        assert_private(process.pid, port)  # the service, and its Ray, answer no other machine
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 200
        with OpenAI(base_url=f"{url}/v1", api_key=KEY) as client:  # what OpenAI clients send
            assert len(client.embeddings.create(model="tiny", input="hello").data[0].embedding) == 16

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
    result = subprocess.run(  # on every interface, without a key: warned
        [sys.executable, "-m", "rayprism.cli", "serve", str(config), "--port", str(free_port()), "--host", "0.0.0.0"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "field 'section': config varchar, store int64" in result.stderr
    assert "warning: serving on 0.0.0.0 without an API key" in result.stdout
