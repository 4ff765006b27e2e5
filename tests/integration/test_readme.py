"""The README's walkthrough, run as written: a fresh clone layout, `make run`, then every shell and
Python example in order, each of which must succeed; the service's own output stays free of warnings.

The only liberty taken: the service listens on a free port instead of 8000, and the examples'
`localhost:8000` / `127.0.0.1:8000` say so. Before the examples, where Chromium is installed, a newcomer's first
look at the console (`the_newcomer_path`) on the same service.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import free_port
from tests.integration.console_browser import installed_browser
from tests.integration.test_console import the_newcomer_path
from tests.listening import assert_private

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NOISE = re.compile(r"warning|error|traceback|\(raylet\)|\(ServeController", re.IGNORECASE)


def readme_blocks() -> list[tuple[str, str]]:
    return BLOCK.findall((REPO / "README.md").read_text())


def fresh_clone(destination: Path) -> Path:
    """The repository's files as a clone has them (mtimes kept, so make sees nothing to reinstall)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    files = [name for name in listed if name and (REPO / name).is_file()]
    subprocess.run(["tar", "-cf", "-", "--null", "-T", "-"], cwd=REPO, input="\0".join(files).encode(),
                   stdout=open(destination / "files.tar", "wb"), check=True)
    clone = destination / "clone"
    clone.mkdir()
    subprocess.run(["tar", "-xf", str(destination / "files.tar")], cwd=clone, check=True)
    (clone / ".venv").symlink_to(Path(sys.prefix))  # the venv `make run` would have made
    return clone


def on_port(text: str, port: int) -> str:
    return text.replace("localhost:8000", f"localhost:{port}").replace("127.0.0.1:8000", f"127.0.0.1:{port}")


def test_the_readme_walkthrough_runs_as_written(tmp_path):
    blocks = readme_blocks()
    assert [language for language, _ in blocks].count("python") >= 1 and len(blocks) >= 5
    clone = fresh_clone(tmp_path)
    port = free_port()
    job_file = clone / "configs" / "embed-job.yaml"
    job_file.write_text(on_port(job_file.read_text(), port))
    venv = Path(sys.prefix)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", RAYPRISM_URL=f"http://127.0.0.1:{port}")
    service = subprocess.Popen(
        ["make", "run", f"PORT={port}", "-o", ".venv/.installed"],  # installed already: the symlinked venv
        cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = service.stdout.readline()
            assert line or service.poll() is None, "".join(output)
            output.append(line)
            if "rayprism is serving at" in line:
                break
        else:
            pytest.fail("the service did not start:\n" + "".join(output))
        assert_private(service.pid, port)  # make run's defaults: nothing of it answers another machine
        if installed_browser() is not None:
            the_newcomer_path(f"http://127.0.0.1:{port}")
        for language, code in blocks:
            if re.search(r"^make (run|test)", code, re.MULTILINE):
                continue  # the service is the one `make run` started above
            code = on_port(code, port)
            command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
            result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, f"{language} example failed:\n{code}\n{result.stdout}\n{result.stderr}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already when it failed to start: show why
            os.killpg(service.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
        rest, _ = service.communicate(timeout=120)
        output.append(rest)
    # rayprism stops cleanly; make itself ends by the Ctrl-C it was sent, as it does in a terminal
    assert "stopping ...\nstopped" in rest and service.returncode in (0, -signal.SIGINT), rest
    printed = "".join(output)
    assert not [line for line in printed.splitlines() if NOISE.search(line)], printed
