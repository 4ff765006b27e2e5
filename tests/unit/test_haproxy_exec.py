"""rayprism's launcher in HAProxy's place, run on a config Ray's own code renders and by the HAProxy
Ray bundles: only the API port listens, HAProxy's errors come in the API's shape, and HAProxy ends
with the process that started it."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from rayprism.deployments import haproxy_exec
from rayprism.deployments.ingress import real_haproxy_binary
from rayprism.deployments.lifecycle import ServiceHome
from rayprism.platform.constants import HAPROXY_BINARY_VARIABLE, HAPROXY_HOME_VARIABLE


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def service(tmp_path):
    """A service home with its launcher, and an HAProxy config as Ray renders it: an API port, a
    statistics page and a Prometheus exporter on ports of their own, one replica that is down."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
    from ray.serve.config import HTTPOptions

    home = ServiceHome(free_port(), root=tmp_path)
    home.path.mkdir()
    launcher = home.write_haproxy_launcher()
    ports = {"api": free_port(), "stats": free_port(), "metrics": free_port(), "replica": free_port()}
    config = HAProxyConfig(http_options=HTTPOptions(host="127.0.0.1", port=ports["api"]),
                           socket_path=str(home.path / "admin.sock"), server_state_base=str(home.path),
                           server_state_file=str(home.path / "server-state"), stats_port=ports["stats"],
                           metrics_port=ports["metrics"], metrics_enabled=False, is_head=True)
    replica = ServerConfig("replica", "127.0.0.1", ports["replica"])
    api = HAProxyApi(config, backend_configs={"app": BackendConfig(name="app", path_prefix="/", servers=[replica])},
                     config_file_path=str(home.path / "haproxy.cfg"))
    api._generate_config_file_internal()
    env = {**os.environ, HAPROXY_BINARY_VARIABLE: real_haproxy_binary(), HAPROXY_HOME_VARIABLE: str(home.path)}
    return home, launcher, home.path / "haproxy.cfg", ports, env


def test_the_config_loses_its_public_listeners_and_haproxy_accepts_it(service):
    home, launcher, config, ports, env = service
    rendered = config.read_text()
    assert "listen stats" in rendered and "frontend prometheus" in rendered  # what Ray writes
    check = subprocess.run([str(launcher), "-c", "-f", str(config)], env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr  # HAProxy's own check of the rewritten file
    private = config.read_text()
    assert "listen stats" not in private and "frontend prometheus" not in private
    assert f":{ports['stats']}" not in private and f":{ports['metrics']}" not in private
    assert f"bind 127.0.0.1:{ports['api']}" in private
    for status, page in haproxy_exec.ERROR_PAGES.items():
        assert f"errorfile {status} {home.path / page}" in private
        assert (home.path / page).is_file()
    assert [process.pid for process in home.haproxy.alive()] == []  # the check ran and ended, recorded


def test_only_the_api_listens_it_answers_json_errors_and_haproxy_dies_with_its_parent(service):
    home, launcher, config, ports, env = service
    # the process that starts HAProxy, as Ray's HAProxyManager does
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([{str(launcher)!r}, '-db', '-f', {str(config)!r}])\n"
        "time.sleep(600)\n")], env=env)
    try:
        deadline = time.monotonic() + 30
        while not listening(ports["api"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listening(ports["api"])
        assert not listening(ports["stats"]) and not listening(ports["metrics"])
        [haproxy] = home.haproxy.alive()
        assert haproxy.ppid() == parent.pid and "haproxy" in haproxy.name()

        answer = httpx.post(f"http://127.0.0.1:{ports['api']}/v1/embeddings", json={"input": "x"}, timeout=30)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
        assert answer.json()["error"]["code"] == "not_ready"  # no replica is up: the API's error, not text

        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        gone, alive = psutil.wait_procs([haproxy], timeout=10)
        assert not alive, "HAProxy outlived the process that started it"
        assert not listening(ports["api"])
    finally:
        parent.kill()
        for process in home.haproxy.alive():
            process.kill()
