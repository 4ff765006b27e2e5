"""Benchmark services as separate process trees: started as a user starts them, stopped with Ctrl-C.

Shared by the benchmarks that load a running service (bench/serve.py, bench/multimodal.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Service:
    """One server to load: how to start it and where it answers."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    embeddings_path: str
    ready_line: str | None = None
    """A line the service prints once it is ready for load, when one /health answer does not say so
    (behind a proxy it speaks for one replica only)."""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def rayprism_service(name: str, config: Path, port: int, *, worker_niceness: int | None = None) -> Service:
    """``rayprism serve`` as a user starts it, without any RAY_SERVE_* settings of this shell.

    ``worker_niceness``: Ray starts its workers, the serving replicas among them, at nice 15 (``RAY_worker_niceness``)
    so that its own daemons come first. A benchmark that compares the service with a plain process on a shared
    machine sets 0: at 15 the replicas get a fraction of what a nice-0 baseline gets from the same busy cores."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    if worker_niceness is not None:
        env["RAY_worker_niceness"] = str(worker_niceness)
    command = [sys.executable, "-m", "rayprism.cli", "serve", str(config), "--port", str(port)]
    return Service(name, command, env, port, "/v1/embeddings", ready_line="rayprism is serving at")


def wait_until_port_free(port: int, timeout_s: float = 120) -> None:
    """Wait until the port binds as rayprism's own start-up check binds it (without SO_REUSEADDR).

    That check also fails while the previous service's connections sit in TIME_WAIT (60 s on
    Linux), not only while a process still listens.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise SystemExit(f"port {port} is still in use; pass --port to choose another")
        time.sleep(2)


def start(service: Service, log: Path, timeout_s: float = 600) -> subprocess.Popen:
    """Start the service in its own process group and wait until its /health answers 200.

    Output goes to a file: a pipe nobody reads would fill up and stall the server.
    """
    wait_until_port_free(service.port)
    with log.open("w") as out:
        process = subprocess.Popen(
            service.command, stdout=out, stderr=subprocess.STDOUT, env=service.env, cwd=REPO, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{service.name} exited before it was ready:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(service.url("/health"), timeout=5) as response:
                if response.status == 200 and (service.ready_line is None or service.ready_line in log.read_text()):
                    return process
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    stop(process)
    raise SystemExit(f"{service.name} was not ready in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops it; then whatever is left of its process group, so the next one has the cores."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
