"""Writing a model directory in one move: build it next to its destination, then rename it into place."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def staged_directory(output: str | Path) -> Iterator[Path]:
    """A fresh directory beside ``output`` that replaces ``output`` when the block ends without error
    (and is removed when it fails): a half-written model never sits at ``output``."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        yield staging
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
