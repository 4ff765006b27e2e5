"""`rayprism submit` against a real Ray head's Jobs API (its own cluster, dashboard on)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import free_port


@pytest.fixture(scope="module")
def ray_head():
    temp_dir = tempfile.mkdtemp(prefix="rp-", dir="/tmp")  # Ray's socket paths must stay short
    dashboard, gcs = free_port(), free_port()
    # Every fixed default port too: the session's own Ray already holds 52365 (its dashboard agent),
    # and a head whose agent cannot bind answers "No available agent" to every submission.
    own_ports = [f"--{option}={free_port()}" for option in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port", "ray-client-server-port",
    )]
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_SERVE_", "RAY_ADDRESS"))}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         "--include-dashboard=true", "--disable-usage-stats", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--temp-dir={temp_dir}", *own_ports],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{address}/api/version", timeout=2).status_code < 500:  # 401: up, wants a token
                break
        except httpx.TransportError:
            pass
        assert head.poll() is None, head.stdout.read()
        time.sleep(1)
    yield address, env
    os.killpg(head.pid, signal.SIGKILL)  # the whole throwaway cluster at once; a graceful stop takes 30 s
    head.wait(120)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.parametrize("job_dir", ["project", "elsewhere"])
def test_submit_runs_the_job_on_the_cluster_and_streams_its_logs(ray_head, tmp_path, tiny_model_path, job_dir):
    """The job file inside the working directory, or outside it (shipped as a copy: its relative input
    path then names the working directory's file)."""
    address, env = ray_head
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / job_dir).mkdir(exist_ok=True)
    (project / "docs.jsonl").write_text("\n".join(json.dumps({"id": i, "text": f"doc {i}"}) for i in range(20)) + "\n")
    output = tmp_path / "out"  # an absolute path stands in for shared storage
    job_file = tmp_path / job_dir / "job.yaml"
    job_file.write_text(json.dumps({
        "input": {"path": "docs.jsonl"},
        "model": {"name": "tiny", "source": tiny_model_path},
        "compute": {"num_cpus": 1, "rows_per_part": 10},
        "output": {"parquet": str(output)},
    }))
    result = subprocess.run(
        [sys.executable, "-m", "rayprism.cli", "submit", str(job_file),
         "--address", address, "--working-dir", str(project)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted raysubmit_" in result.stdout
    assert "embedded 20 rows" in result.stdout  # the job's own summary, streamed back
    assert "core_worker" not in result.stdout and "streaming_executor" not in result.stdout  # not Ray's
    assert result.stdout.rstrip().endswith("SUCCEEDED")
    rows = sum(pq.read_metadata(part).num_rows for part in output.glob("part-*.parquet"))
    assert rows == 20
    assert sorted(path.name for path in project.iterdir()) == ["docs.jsonl", *(["job.yaml"] * (job_dir == "project"))]


def test_submit_refuses_a_bad_job_before_contacting_the_cluster(tmp_path):
    (tmp_path / "job.yaml").write_text("input: {path: x.jsonl}\noutput: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "rayprism.cli", "submit", str(tmp_path / "job.yaml"),
         "--address", "http://127.0.0.1:9", "--working-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "set output.parquet, output.collection, or both" in result.stderr
