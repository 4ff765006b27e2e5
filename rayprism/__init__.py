"""rayprism: an embedding platform on Ray.

The names in ``__all__`` are the public surface, the part users may rely on from one
release to the next: the typed SDK of the HTTP API (:class:`Client`, :class:`AsyncClient`), the config loaders and models of
the YAML files, and the typed errors (every one a :class:`RayprismError` carrying its
``http_status``). Everything else — ``rayprism.deployments``, ``rayprism.jobs``,
``rayprism.trainers``, ``rayprism.platform`` and the rest — is internal and may change
without notice.

The client and the config loaders are imported on first use (module ``__getattr__``):
they pull in httpx and pydantic, and ``import rayprism`` stays light for the CLI and
Ray workers that need neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rayprism.platform.errors import (
    ConfigError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    MissingDependencyError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RateLimitedError,
    RayprismError,
    RetryLaterError,
    StoreError,
    StoreFullError,
    UnauthorizedError,
    UnprocessableError,
)

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from rayprism.client import AsyncClient, Client, IngestSummary, ServiceError  # noqa: F401
    from rayprism.platform.config import (  # noqa: F401
        JobConfig,
        ServeConfig,
        TrainConfig,
        load_job_config,
        load_serve_config,
        load_train_config,
    )

__version__ = "0.1.0"

_LAZY = {
    "AsyncClient": "rayprism.client",
    "Client": "rayprism.client",
    "IngestSummary": "rayprism.client",
    "ServiceError": "rayprism.client",
    "JobConfig": "rayprism.platform.config",
    "ServeConfig": "rayprism.platform.config",
    "TrainConfig": "rayprism.platform.config",
    "load_job_config": "rayprism.platform.config",
    "load_serve_config": "rayprism.platform.config",
    "load_train_config": "rayprism.platform.config",
}
"""Public name → the module that defines it, imported when the name is first read."""

__all__ = [
    "__version__",
    *_LAZY,
    "ConfigError", "ConflictError", "ForbiddenError", "InvalidInputError", "MissingDependencyError", "NotFoundError",
    "NotReadyError", "OverloadedError", "PayloadTooLargeError", "RateLimitedError", "RayprismError", "RetryLaterError",
    "StoreError", "StoreFullError", "UnauthorizedError", "UnprocessableError",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rayprism' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
