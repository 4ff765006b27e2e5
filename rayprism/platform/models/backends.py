"""Which backends exist and what options each takes: the names the model config validates against.

Kept apart from :mod:`~rayprism.platform.models.registry` (which loads models from a config), so the
config can ask about backends without the two modules importing each other. A backend module imports
its heavy dependencies inside ``load``: importing it for its ``Options`` is cheap.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rayprism.platform.config.base import StrictModel

BACKENDS: dict[str, str] = {
    "torch": "rayprism.platform.models.torch_backend",
    "vllm": "rayprism.platform.models.vllm_backend",
    "onnx": "rayprism.platform.models.onnx_backend",
}


def backend_module(backend: str) -> ModuleType:
    return importlib.import_module(BACKENDS[backend])


def backend_options(backend: str) -> type[StrictModel]:
    return backend_module(backend).Options
