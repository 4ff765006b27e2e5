"""A local service's life: a stop that works at any moment, and a home that the next start can
clean up when the last one was killed.

Ctrl-C in a terminal reaches ``rayprism serve`` at any point of its start: inside ``ray.init``,
while replicas load, while the seed collection fills. Python's default (a ``KeyboardInterrupt``
wherever the main thread happens to be) can be swallowed by library code on the way, and the
service then went on to serve with nobody to stop it. Here a signal only sets a flag, installed
before anything starts; every start-up step either checks it or is waited for while it is watched.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Callable, TypeVar

import psutil

from rayprism.deployments import haproxy_exec
from rayprism.deployments.processes import ProcessRecord
from rayprism.platform.errors import ConfigError, NotReadyError, RayprismError

T = TypeVar("T")

POLL_S = 0.2


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived: end what was started, and nothing more."""


class StopSignal:
    """SIGINT and SIGTERM as a flag. The handler only appends to a list: a handler that takes a lock
    (``threading.Event.set``) can run while the main thread holds that same lock, and then the
    process never stops."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.periodic: tuple[float, Callable[[], None]] | None = None
        self.next_run = 0.0

    def every(self, seconds: float, work: Callable[[], None]) -> None:
        """Have each check run ``work`` when ``seconds`` have passed since it last ran."""
        self.periodic = (seconds, work)

    def install(self) -> None:
        """(Again) take SIGINT and SIGTERM: ``ray.init`` puts its own SIGTERM handler in place."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda number, _: self.received.append(number))

    def check(self) -> None:
        if self.received:
            raise StopRequested
        if self.periodic is not None and time.monotonic() >= self.next_run:
            seconds, work = self.periodic
            self.next_run = time.monotonic() + seconds
            work()

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.check()
            time.sleep(min(POLL_S, left))
        self.check()

    def wait(self) -> None:
        """Block quietly until a signal arrives (a spinning main thread would starve the replicas)."""
        while True:
            self.check()
            time.sleep(0.5)

    def run(self, work: Callable[[], T]) -> T:
        """``work()`` in a thread, waited for while the flag is watched: a long blocking call (a seed
        collection filling, a deployment being deleted) cannot hold a stop back. On a stop the thread
        is left to end with the process."""
        outcome: dict = {}

        def target() -> None:
            try:
                outcome["value"] = work()
            except BaseException as error:  # handed to the waiting thread, which raises it
                outcome["error"] = error

        thread = threading.Thread(target=target, name="rayprism-start-step", daemon=True)
        thread.start()
        while thread.is_alive():
            self.check()
            thread.join(POLL_S)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


def run_with_deadline(work: Callable[[], object], seconds: float) -> bool:
    """``work()`` in a thread, given at most ``seconds``; returns whether it finished in time."""
    thread = threading.Thread(target=work, name="rayprism-stop-step", daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


class ServiceHome:
    """The folder of the service on one port (HAProxy's config and sockets, the launcher Ray runs in
    HAProxy's place, the records of this service's processes): one owner at a time, and cleaned up
    by the next owner when the last one was killed."""

    def __init__(self, port: int, root: Path | None = None):
        # Short: Ray adds a 56-character node id below it, and socket paths stop at 97 characters.
        self.port = port
        self.path = (root or Path(tempfile.gettempdir())) / f"rph-{port}"
        self.owner = ProcessRecord(self.path / "owner")
        self.haproxy = ProcessRecord(self.path / haproxy_exec.PIDS_FILE)
        self.started = ProcessRecord(self.path / "processes")
        """Every process this service started (Ray's, and through it the replicas'): a killed service's
        workers outlive it for a while, holding its ports and its Milvus Lite file."""

    def claim(self, echo: Callable[[str], None]) -> None:
        """Make the folder this process's; end what a killed service on this port left running."""
        running = [process.pid for process in self.owner.alive() if process.pid != os.getpid()]
        if running:
            raise ConfigError(f"another rayprism serve (pid {running[0]}) serves port {self.port}: stop it "
                              f"first, or choose another server.port (or --port)")
        ended = self.haproxy.end_survivors() + self.started.end_survivors()
        if ended:
            echo(f"ended {len(ended)} process(es) left by a service on port {self.port} that was killed "
                 f"(pid {', '.join(map(str, sorted(ended)))})")
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        self.owner.add(os.getpid())

    def write_haproxy_launcher(self) -> Path:
        """The executable Ray runs in HAProxy's place (see :mod:`rayprism.deployments.haproxy_exec`),
        and the error pages it gives HAProxy."""
        unavailable = NotReadyError("no serving replica is up (they are starting or restarting): retry shortly")
        pages = {"503.http": error_page(unavailable, {"Retry-After": str(unavailable.retry_after_s)}),
                 "500.http": error_page(RayprismError("a serving replica failed while it answered"), {})}
        for name, page in pages.items():
            (self.path / name).write_bytes(page)
        launcher = self.path / "haproxy"
        launcher.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m rayprism.deployments.haproxy_exec "
                            f'"$@"\n')
        launcher.chmod(0o700)
        return launcher

    def remember_started(self) -> None:
        """Record the processes this one started, and theirs: after a ``kill -9`` nobody else knows them."""
        self.started.add_all(psutil.Process().children(recursive=True))

    def release(self) -> None:
        """After a clean stop: nothing of this service is left to clean up."""
        shutil.rmtree(self.path, ignore_errors=True)


def error_page(error: RayprismError, headers: dict[str, str]) -> bytes:
    """A whole HTTP response, as HAProxy's ``errorfile`` takes it: the API's error body for ``error``."""
    body = json.dumps(error.to_body()).encode()
    head = [f"HTTP/1.1 {error.http_status} {HTTPStatus(error.http_status).phrase}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Cache-Control: no-cache", "Connection: close",
            *(f"{name}: {value}" for name, value in headers.items())]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body
