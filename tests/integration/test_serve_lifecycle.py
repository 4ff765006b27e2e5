"""`rayprism serve` with several replicas behind Ray's HAProxy, run as a user runs it: two services side
by side, nothing listening beyond their host, Ctrl-C at any moment, a restart at once, a kill -9 of
the service and of every replica.

Each service is a `rayprism serve` process in a session of its own; Ctrl-C is sent the way a
terminal sends it, to the whole process group. Its processes are known as its descendants (it
started them), never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from rayprism.client import Client
from rayprism.deployments.ingress import port_plan
from rayprism.deployments.lifecycle import ServiceHome
from rayprism.platform.config import load_serve_config
from tests.integration.conftest import RESTART_OVERHEAD_S, cold_replica_start_s, free_port

STOP_WITHIN_S = 15
RECOVER_WITHIN_S = 20
"""The issue's bound, met on a quiet machine (15-19 s measured). Most of it is one cold replica start
(Python importing the app, torch, transformers and sentence-transformers, and loading the model), which
a busy 2-core machine stretches past 30 s: the test also accepts that start, measured in the same run,
plus ``RESTART_OVERHEAD_S`` for Ray to notice, schedule and route (what a stuck port, a quarantine or
an unrouted replica would blow through)."""


def free_ranges(count: int, span: int) -> list[int]:
    """``count`` ports, each with ``span`` free ports from it on, the ranges apart."""
    for _ in range(50):
        first = free_port()
        ports = [first + index * (span + 7) for index in range(count)]
        if ports[-1] + span < 65535 and not any(listening(port) for start in ports for port in range(start, start + span)):
            return ports
    raise RuntimeError("no free range of ports")


def listening(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


class Service:
    """One `rayprism serve` process and everything it started."""

    def __init__(self, config: Path):
        self.config = config
        self.settings = load_serve_config(config)
        self.url = f"http://127.0.0.1:{self.settings.server.port}"
        self.lines: list[str] = []
        self.process: subprocess.Popen | None = None
        self.started: dict[int, psutil.Process] = {}

    def launch(self) -> None:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
        self.lines = []
        self.process = subprocess.Popen([sys.executable, "-m", "rayprism.cli", "serve", str(self.config)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                        start_new_session=True)
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.append(line)

    def wait_serving(self, timeout_s: float = 300) -> float:
        started = time.monotonic()
        while not any("rayprism is serving at" in line for line in self.lines):
            assert self.process.poll() is None, "".join(self.lines)
            assert time.monotonic() - started < timeout_s, "".join(self.lines)
            time.sleep(0.2)
        self.remember()
        return time.monotonic() - started

    def start(self) -> float:
        self.launch()
        return self.wait_serving()

    def remember(self) -> None:
        """The processes it runs now (after a kill -9 they are nobody's children)."""
        for child in psutil.Process(self.process.pid).children(recursive=True):
            self.started.setdefault(child.pid, child)

    def ctrl_c(self) -> float:
        """SIGINT to the process group, as a terminal sends it; returns how long the service took to exit."""
        self.remember()
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=120)
        return time.monotonic() - started

    def kill9(self) -> None:
        self.remember()
        self.process.kill()
        self.process.wait()

    def left_running(self, grace_s: float = 5) -> list[str]:
        """What it started that still runs ``grace_s`` later."""
        _, alive = psutil.wait_procs([p for p in self.started.values() if p.is_running()], timeout=grace_s)
        return [f"{process.pid} {process.name()}" for process in alive]

    def listeners(self) -> dict[int, list[tuple[str, int]]]:
        """The TCP listeners of each of its processes."""
        found = {}
        for process in psutil.Process(self.process.pid).children(recursive=True):
            try:
                sockets = process.net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            found[process.pid] = [(s.laddr.ip, s.laddr.port) for s in sockets if s.status == psutil.CONN_LISTEN]
        return found

    def replica_pids(self) -> list[int]:
        replicas = port_plan(self.settings).replicas
        return [pid for pid, addresses in self.listeners().items() if any(port in replicas for _, port in addresses)]

    def haproxy_pids(self) -> list[int]:
        return [process.pid for process in ServiceHome(self.settings.server.port).haproxy.alive()]

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for process in self.started.values():
            if process.is_running():
                process.kill()


REPLICA_FAILED = "a serving replica failed while it answered"
"""HAProxy's answer, as the API's JSON error, for a request whose replica died under it."""


def embed(url: str) -> int | str:
    """The status of one embedding request; for a 500, whether it is the API's JSON for a replica that died
    while it answered (a request that reached a replica in its last moments), the transport error's name."""
    try:
        response = httpx.post(f"{url}/v1/embeddings", json={"input": "keep answering"}, timeout=30)
    except httpx.TransportError as error:
        return type(error).__name__
    if response.status_code == 500 and REPLICA_FAILED in response.json()["error"]["message"]:
        return REPLICA_FAILED
    return response.status_code


@pytest.fixture
def write_config(tmp_path, tiny_model_path):
    def write(name: str, port: int) -> Path:
        config = tmp_path / f"{name}.yaml"
        config.write_text(f"server: {{port: {port}}}\n"
                          "deployment: {num_cpus: 0.5, replicas: {min: 2, max: 2}, health_check_period_s: 1}\n"
                          f"models:\n  - name: tiny\n    source: {tiny_model_path}\n"
                          f"store: {{uri: {tmp_path / name}.db}}\n")
        return config
    return write


@pytest.fixture
def services():
    started: list[Service] = []
    yield started
    for service in started:
        service.stop_quietly()


def test_two_services_side_by_side_private_and_back_within_seconds_after_every_replica_dies(write_config, services):
    span = port_plan(load_serve_config(write_config("probe", 9000))).span
    first, second = (Service(write_config(name, port)) for name, port in zip(("first", "second"), free_ranges(2, span)))
    services.extend([first, second])
    first.launch()
    second.launch()
    first.wait_serving()
    second.wait_serving()

    # both replicas of a service answer through its one port
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda _: embed(first.url), range(40))) == [200] * 40
    with Client(first.url) as client:
        served = client.requests_by_replica("embeddings")
    assert len(served) == 2 and all(count > 0 for count in served.values()) and sum(served.values()) == 40, served

    # nothing of either listens beyond its host: HAProxy on its API port only, replicas on loopback
    for service in (first, second):
        port, listeners = service.settings.server.port, service.listeners()
        haproxy = service.haproxy_pids()
        assert haproxy and all(listeners[pid] == [("127.0.0.1", port)] for pid in haproxy if pid in listeners), listeners
        replica_ports = port_plan(service.settings).replicas
        replica_listeners = [address for addresses in listeners.values() for address in addresses
                             if address[1] in replica_ports]
        assert len(replica_listeners) == 2 and all(ip == "127.0.0.1" for ip, _ in replica_listeners), listeners
        assert not any(address[1] in (8404, 9101) for addresses in listeners.values() for address in addresses)

    # kill -9 every replica of the first: it answers again within seconds, the second never stops answering
    cold_start_s = cold_replica_start_s(first.config, at_once=2)
    victims = first.replica_pids()
    assert len(victims) == 2
    seconds_down = []
    with ThreadPoolExecutor(1) as watcher:
        def watch_second() -> list:
            answers = []
            while not seconds_down:
                answers.append(embed(second.url))
                time.sleep(0.1)
            return answers
        second_answers = watcher.submit(watch_second)
        killed = time.monotonic()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        during = []
        while (answer := embed(first.url)) != 200:
            during.append(answer)
            assert time.monotonic() - killed < 120, during
            time.sleep(0.25)
        seconds_down.append(time.monotonic() - killed)
    assert seconds_down[0] < max(RECOVER_WITHIN_S, cold_start_s + RESTART_OVERHEAD_S), (seconds_down, cold_start_s, during)
    # meanwhile HAProxy answered as the API does (a JSON 503 while no replica was up; a JSON 500 for a request
    # that reached a replica as it died), never a bare 500
    assert set(during) <= {503, REPLICA_FAILED, "RemoteProtocolError", "ReadError", "ConnectError"}, during
    assert set(second_answers.result()) == {200}


def test_ctrl_c_at_any_moment_stops_everything_and_a_start_right_after_works(write_config, services, tmp_path):
    service = Service(write_config("cycles", free_ranges(1, 12)[0]))
    services.append(service)

    # Ctrl-C while Ray is still starting
    service.launch()
    time.sleep(3)
    assert service.ctrl_c() < STOP_WITHIN_S, "".join(service.lines)
    assert service.left_running() == []

    # serve, take load, Ctrl-C 3 s later: stopped within seconds, nothing left, no port held
    first_start = service.start()
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: embed(service.url), range(200))) == {200}
    time.sleep(3)
    assert service.ctrl_c() < STOP_WITHIN_S
    assert service.left_running() == [] and service.haproxy_pids() == []
    assert "stopped" in service.lines[-1]

    # at once again: the replicas' last ports still linger in TIME_WAIT, the next free ones serve
    assert service.start() < first_start + 30, "".join(service.lines)
    assert embed(service.url) == 200

    # kill -9 of `rayprism serve`: the next start ends what it left and serves
    service.kill9()  # Ray's workers outlive a killed driver for a while, holding ports and the store's file
    service.start()
    assert embed(service.url) == 200
    assert service.ctrl_c() < STOP_WITHIN_S and service.left_running() == []
