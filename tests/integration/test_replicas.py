"""Two serving replicas on one machine behind the one configured port (Ray's HAProxy in front): both
take traffic, as their own metrics show."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from rayprism.client import Client
from tests.integration.conftest import free_port


def test_two_replicas_both_serve_through_the_one_port(tmp_path, tiny_model_path):
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(f"deployment: {{num_cpus: 0.5, replicas: {{min: 2, max: 2}}}}\n"
                      f"models:\n  - name: tiny\n    source: {tiny_model_path}\nstore: {{uri: {tmp_path / 'store.db'}}}\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    process = subprocess.Popen([sys.executable, "-m", "rayprism.cli", "serve", str(config), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line or process.poll() is None, "".join(lines)
            lines.append(line)
            if "rayprism is serving at" in line:
                break
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: httpx.post(f"{url}/v1/embeddings", json={"input": f"request {i}"},
                                                          timeout=60).status_code, range(40)))
        assert statuses == [200] * 40
        with Client(url) as client:  # each scrape reaches one replica: scrape until both answered
            served = client.requests_by_replica("embeddings")
        assert len(served) == 2 and all(count > 0 for count in served.values()), served
        assert sum(served.values()) == 40
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)
