"""Checkpoints at work: a killed worker is replaced and training goes on; an interrupted run resumes.

Both runs checkpoint every 2 steps and wait for a checkpoint before the interruption, so the
restarted worker group starts from it (its first line says at which step).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import actor_pids
from tests.integration.test_train_run import tiny_config

LONG_STEPS = 30
LONG = {"epochs": LONG_STEPS // 5, "batch_size": 8, "learning_rate": 1e-3, "log_every_steps": 10}
"""30 steps (40 pairs, 8 a step: 5 steps an epoch): the interruption comes right after the first checkpoint
(step 2), so it lands mid-run with 14 checkpoints to go."""


def has_registered_checkpoint(directory: Path) -> bool:
    """Whether Ray Train's controller has registered a checkpoint of the run: a checkpoint folder on
    disk is not enough (a worker group restarted before registration starts from scratch)."""
    try:
        snapshot = json.loads((directory / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return snapshot.get("latest_checkpoint_result") is not None


def wait_for_checkpoint(directory: Path, timeout_s: float = 300, also=lambda: True) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if has_registered_checkpoint(directory) and also():
            return
        time.sleep(0.2)
    raise AssertionError(f"no registered checkpoint in {directory} after {timeout_s} s")


def test_a_killed_worker_is_replaced_and_training_goes_on(ray_session, tiny_model_path, tmp_path):
    from rayprism.trainers.run import execute, run_directory

    config = tiny_config(tmp_path, tiny_model_path, name="killed", training=LONG,
                         evaluation=None, hard_negatives=None, checkpoints={"max_failures": 2})
    lines: list[str] = []
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=execute(config, echo=lines.append)))
    thread.start()
    wait_for_checkpoint(run_directory(config), also=lambda: len(actor_pids("RayTrainWorker")) == 2)
    victim = actor_pids("RayTrainWorker")[1]
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=600)
    assert not thread.is_alive() and "summary" in outcome, lines
    summary = outcome["summary"]
    assert summary.attempts == 2 and summary.steps == LONG_STEPS
    restarts = [line for line in lines if "worker group of 2 started (attempt 2)" in line]
    assert restarts and "from " in restarts[0] and "at step 0 " not in restarts[0]
    assert Path(summary.output, "modules.json").is_file()


def test_rerunning_an_interrupted_run_resumes_from_its_last_checkpoint(ray_session, tiny_model_path, tmp_path):
    """The first run is a `rayprism train` process on the session's Ray, stopped by Ctrl-C (SIGINT)."""
    import ray

    from rayprism.trainers.run import execute, run_directory

    config = tiny_config(tmp_path, tiny_model_path, name="interrupted", training=LONG, evaluation=None,
                         hard_negatives=None)
    address = ray.get_runtime_context().gcs_address
    process = subprocess.Popen(
        [sys.executable, "-m", "rayprism.cli", "train", str(tmp_path / "interrupted.yaml"), "--address", address],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_checkpoint(run_directory(config))
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert f"trained {LONG_STEPS} steps" not in output, output  # it was stopped before the end
    wait_for_no_workers()

    lines: list[str] = []
    summary = execute(config, echo=lines.append)
    started = next(line for line in lines if line.startswith("worker group of 2 started"))
    assert "at step 0 " not in started and "from " in started, lines
    assert summary.steps == LONG_STEPS and summary.attempts == 2


def wait_for_no_workers(timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while actor_pids("RayTrainWorker"):
        if time.monotonic() > deadline:
            pytest.fail("the interrupted run's workers are still alive")
        time.sleep(0.5)
