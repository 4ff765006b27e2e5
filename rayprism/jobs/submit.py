"""`rayprism submit JOB.yaml --address http://HEAD:8265`: the same job, on a cluster, via the Ray Jobs API.

The working directory travels in the job's runtime environment (the job file and any
relative input paths inside it), requirements go in as ``pip``, and the entrypoint is
``rayprism embed`` itself, so a job behaves the same on a laptop and on a cluster. A job
file outside the working directory travels too, as a copy at its root (:func:`shipped_job_file`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from rayprism.platform.config import load_job_config
from rayprism.platform.constants import (
    RAY_AUTH_MODE_VARIABLE,
    RAY_AUTH_TOKEN_PATH_VARIABLE,
    RAY_AUTH_TOKEN_VARIABLE,
)
from rayprism.platform.errors import ConfigError

DEFAULT_TOKEN_PATH = Path.home() / ".ray" / "auth_token"

EXCLUDES = [".venv", ".git", "data", "__pycache__", "*.db", "out"]
AGENT_WAIT_S = 60.0
"""A head that has just started answers "No available agent" until its job agent registers."""
STATUS_POLL_S = 0.5
SHIPPED_JOB_PREFIX = "rayprism-job-"
"""A job file from outside the working directory is shipped as ``rayprism-job-<content hash>.<suffix>``."""


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
    if os.environ.get(RAY_AUTH_MODE_VARIABLE, "").lower() == "disabled":
        return {}
    token = os.environ.get(RAY_AUTH_TOKEN_VARIABLE, "").strip()
    if not token:
        path = Path(os.environ.get(RAY_AUTH_TOKEN_PATH_VARIABLE) or DEFAULT_TOKEN_PATH).expanduser()
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
    """Check the job as the cluster will read it, submit it, then stream its logs until it ends;
    returns (submission id, final status)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    with shipped_job_file(job_file, working_dir, echo=echo) as relative:
        load_job_config(working_dir / relative)  # fail here, not minutes later on the cluster
        # Clusters started by Ray 2.60 require a token by default: send the local one, as `ray.init` does.
        client = JobSubmissionClient(address, headers=auth_headers())
        submission_id = _submit_when_agent_ready(  # uploads the working directory before it returns
            client,
            entrypoint=f"rayprism embed {shlex.quote(relative.as_posix())}",
            runtime_env=runtime_env(working_dir, requirements),
            metadata={"rayprism_job": str(job_file)},
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


@contextmanager
def shipped_job_file(job_file: Path, working_dir: Path, *, echo: Callable[[str], None] = print) -> Iterator[Path]:
    """The job file's path relative to the working directory, which the cluster receives. A file outside
    it is copied to its root for the time of the upload, named by its content (resubmitting the same
    job uploads the same package) and removed afterwards unless it was already there: its relative paths
    then name files of the working directory, the only ones the cluster has."""
    job_file, working_dir = job_file.resolve(), working_dir.resolve()
    if job_file.is_relative_to(working_dir):
        yield job_file.relative_to(working_dir)
        return
    content = job_file.read_bytes()
    shipped = working_dir / f"{SHIPPED_JOB_PREFIX}{hashlib.sha256(content).hexdigest()[:12]}{job_file.suffix}"
    ours = not shipped.exists()
    try:
        shipped.write_bytes(content)
    except OSError as error:
        raise ConfigError(f"{job_file} is outside the working directory {working_dir}, which cannot take a copy "
                          f"of it ({error.strerror}): move the job file into the working directory, or pass "
                          "--working-dir with a directory that holds it") from None
    echo(f"{job_file} is outside the working directory: shipped as {shipped.name}, its relative paths "
         f"read from {working_dir}")
    try:
        yield Path(shipped.name)
    finally:
        if ours:
            shipped.unlink(missing_ok=True)
