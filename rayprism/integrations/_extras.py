"""The error a framework module raises when its extra is not installed."""

from __future__ import annotations

from rayprism.platform.errors import MissingDependencyError


def missing_extra(module: str, extra: str, error: ImportError) -> MissingDependencyError:
    return MissingDependencyError(f"{module} needs {error.name!r}: pip install 'rayprism[{extra}]'")
