"""`rayprism submit JOB.yaml --address http://HEAD:8265`: the same job, on a cluster, via the Ray Jobs API.

The working directory travels in the job's runtime environment (the job file and any
relative input paths inside it), requirements go in as ``pip``, and the entrypoint is
``rayprism embed`` itself, so a job behaves the same on a laptop and on a cluster.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from pathlib import Path
from typing import Callable

AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"
TOKEN_VARIABLE = "RAY_AUTH_TOKEN"
TOKEN_PATH_VARIABLE = "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_PATH = Path.home() / ".ray" / "auth_token"

EXCLUDES = [".venv", ".git", "data", "__pycache__", "*.db", "out"]
AGENT_WAIT_S = 60.0
"""A head that has just started answers "No available agent" until its job agent registers."""
STATUS_POLL_S = 0.5


def runtime_env(working_dir: Path, requirements: Path | None) -> dict:
    env: dict = {"working_dir": str(working_dir), "excludes": EXCLUDES}
    if requirements is not None:
        env["pip"] = [line.strip() for line in requirements.read_text().splitlines()
                      if line.strip() and not line.lstrip().startswith("#")]
    return env


def auth_headers() -> dict[str, str]:
    """The bearer token a token-authenticated cluster expects, from where Ray documents it:
    ``$RAY_AUTH_TOKEN``, the file ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``.
    Empty when ``RAY_AUTH_MODE=disabled`` or no token exists (clusters without auth)."""
    if os.environ.get(AUTH_MODE_VARIABLE, "").lower() == "disabled":
        return {}
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        path = Path(os.environ.get(TOKEN_PATH_VARIABLE) or DEFAULT_TOKEN_PATH).expanduser()
        token = path.read_text().strip() if path.is_file() else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def submit_and_follow(
    address: str,
    job_file: Path,
    *,
    working_dir: Path,
    requirements: Path | None = None,
    follow: bool = True,
    echo: Callable[[str], None] = print,
) -> tuple[str, str]:
    """Submit, then stream the job's logs until it ends; returns (submission id, final status)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    relative = job_file.resolve().relative_to(working_dir.resolve())
    # Clusters started by Ray 2.60 require a token by default: send the local one, as `ray.init` does.
    client = JobSubmissionClient(address, headers=auth_headers())
    submission_id = _submit_when_agent_ready(
        client,
        entrypoint=f"rayprism embed {shlex.quote(str(relative))}",
        runtime_env=runtime_env(working_dir, requirements),
        metadata={"rayprism_job": str(relative)},
        echo=echo,
    )
    echo(f"submitted {submission_id} to {address}")
    if not follow:
        return submission_id, str(client.get_job_status(submission_id))

    async def stream() -> None:
        async for lines in client.tail_job_logs(submission_id):
            for line in lines.rstrip("\n").splitlines():
                echo(line)

    asyncio.run(stream())
    status = client.get_job_status(submission_id)
    while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        time.sleep(STATUS_POLL_S)
        status = client.get_job_status(submission_id)
    return submission_id, str(status)


def _submit_when_agent_ready(client, *, echo: Callable[[str], None], **job) -> str:
    deadline = time.monotonic() + AGENT_WAIT_S
    waited = False
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            if not waited:
                echo("the cluster's job agent is not up yet; waiting for it")
                waited = True
            time.sleep(1.0)
