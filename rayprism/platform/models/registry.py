"""Models loaded by their config's backend, imported only when a model asks for one.

Each backend (named in :mod:`~rayprism.platform.models.backends`) is a module with an ``Options``
model (the keys of a model's ``options:`` block that only it understands) and ``load(config,
num_cpus)`` returning an :class:`~rayprism.platform.models.base.Encoder`. Backend modules import
their heavy dependencies inside ``load``, so ``import rayprism`` stays fast and works without
optional backends installed; a missing dependency is reported with the extra to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rayprism.platform.errors import MissingDependencyError
from rayprism.platform.models.backends import backend_module
from rayprism.platform.models.base import Encoder, Reranker

if TYPE_CHECKING:
    from rayprism.platform.config.models import ModelConfig


def load_encoder(config: ModelConfig, *, num_cpus: float | None = None) -> Encoder | Reranker:
    """Load the model a config names (a reranker for ``kind: reranker``), in a process that holds
    ``num_cpus`` CPUs (None: unknown)."""
    try:
        return backend_module(config.backend).load(config, num_cpus=num_cpus)
    except ImportError as error:
        raise MissingDependencyError(
            f"backend {config.backend!r} needs {error.name!r}: pip install 'rayprism[{config.backend}]'"
        ) from error
