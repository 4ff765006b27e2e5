"""Turn a model ``source`` from config into something a backend can load.

Three forms: ``package:<module>/<subdir>`` (weights shipped inside an installed
Python package, works offline), a local directory, or a Hugging Face id (the
hub's own cache and ``HF_HUB_OFFLINE`` apply). Nothing here downloads.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rayprism.platform.errors import ConfigError


def resolve_source(source: str) -> str:
    """A local path for ``package:`` and directory sources; a hub id is returned unchanged."""
    if source.startswith("package:"):
        return str(_resolve_package(source))
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or ("/" not in source and path.suffix):
        raise ConfigError(f"model source {source!r}: no such directory")
    return source  # a hub id, org/name ("Qwen/Qwen3-Embedding-0.6B": a dot is no sign of a path there)


def _resolve_package(source: str) -> Path:
    module, _, subdir = source.removeprefix("package:").partition("/")
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or spec.origin is None:
        distribution = module.replace("_", "-")
        raise ConfigError(
            f"model source {source!r}: Python package {module!r} is not installed "
            f"(try `pip install {distribution}`)"
        )
    path = Path(spec.origin).parent / subdir
    if not path.is_dir():
        raise ConfigError(f"model source {source!r}: {path} is not a directory")
    return path
