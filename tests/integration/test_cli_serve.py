"""`rayprism serve` as a user runs it: its own Ray, a printed URL, a clean stop on SIGTERM."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.integration.conftest import free_port

pytestmark = pytest.mark.slow


def test_serve_prints_its_url_answers_and_stops_on_sigterm(tmp_path, tiny_model_path):
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(f"models:\n  - name: tiny\n    source: {tiny_model_path}\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "rayprism.platform.cli", "serve", str(config), "--port", str(port)],
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
