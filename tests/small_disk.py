"""A real disk that fills up: a small tmpfs (mounting needs root, as CI and this machine run the tests)."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb``, mounted for the block; the test is skipped where mounting is not allowed."""
    mount_point = Path(f"/tmp/rayprism-small-disk-{uuid.uuid4().hex[:8]}")
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        mount_point.rmdir()


def grow(mount_point: Path, size_mb: int) -> None:
    """Give the disk room again, as freeing space does."""
    subprocess.run(["mount", "-o", f"remount,size={size_mb}m", str(mount_point)], check=True)
