"""A local service's life without Ray: a stop signal that reaches every step, the record of the
processes it started, and a home that the next start cleans up after a ``kill -9``."""

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from rayprism.deployments.lifecycle import ServiceHome, StopRequested, StopSignal, error_page
from rayprism.deployments.processes import ProcessRecord
from rayprism.platform.errors import ConfigError, NotReadyError


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


@pytest.fixture
def signals():
    """Restore the test process's own handlers afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_signal_stops_a_step_that_blocks(signals):
    stop = StopSignal()
    stop.install()
    release = threading.Event()
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(StopRequested):
        stop.run(release.wait)  # would block for ever
    assert time.monotonic() - started < 5
    release.set()


def test_a_step_gives_back_its_value_or_its_error(signals):
    stop = StopSignal()
    assert stop.run(lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        stop.run(lambda: 1 / 0)


def test_sleep_and_wait_end_on_sigterm_and_periodic_work_runs_meanwhile(signals):
    stop = StopSignal()
    stop.install()
    ticks = []
    stop.every(0.1, lambda: ticks.append(time.monotonic()))
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    with pytest.raises(StopRequested):
        stop.wait()
    assert stop.received == [signal.SIGTERM] and len(ticks) >= 1


def test_a_record_ends_its_processes_and_never_a_reused_pid(tmp_path):
    mine, stranger = sleeper(), sleeper()
    try:
        record = ProcessRecord(tmp_path / "processes")
        record.add(mine.pid)
        record.add(mine.pid)  # once only
        # the stranger's pid with another start time: as if the pid had been reused since
        with open(record.path, "a") as file:
            file.write(f"{stranger.pid} {psutil.Process(stranger.pid).create_time() - 100!r}\n")
        assert [process.pid for process in record.alive()] == [mine.pid]
        watched = psutil.Process(mine.pid)
        assert record.end_survivors() == [mine.pid]
        assert not watched.is_running()  # killed, and reaped
        assert stranger.poll() is None and not record.path.exists()
    finally:
        mine.kill()
        stranger.kill()


def test_a_home_is_refused_while_its_owner_runs_and_cleaned_once_it_was_killed(tmp_path):
    owner, worker = sleeper(), sleeper()
    try:
        home = ServiceHome(8123, root=tmp_path)
        home.path.mkdir()
        home.owner.add(owner.pid)
        home.started.add(worker.pid)
        (home.path / "haproxy.cfg").write_text("stale")
        with pytest.raises(ConfigError, match=f"another rayprism serve \\(pid {owner.pid}\\) serves port 8123"):
            ServiceHome(8123, root=tmp_path).claim(print)

        owner.kill()  # and not reaped: a zombie, dead all the same
        while psutil.Process(owner.pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)
        said = []
        watched = psutil.Process(worker.pid)
        ServiceHome(8123, root=tmp_path).claim(said.append)
        assert not watched.is_running()  # what the killed owner left is ended
        assert said == [f"ended 1 process(es) left by a service on port 8123 that was killed (pid {worker.pid})"]
        assert not (home.path / "haproxy.cfg").exists()
        assert [process.pid for process in home.owner.alive()] == [os.getpid()]
    finally:
        owner.kill()
        worker.kill()


def test_haproxy_error_pages_are_whole_responses_in_the_api_shape():
    page = error_page(NotReadyError("no replica"), {"Retry-After": "2"})
    head, body = page.split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable" and "Retry-After: 2" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert body == b'{"error": {"message": "no replica", "type": "service_unavailable", "param": null, "code": "not_ready"}}'
