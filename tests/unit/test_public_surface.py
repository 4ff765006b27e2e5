"""``import rayprism`` is the public surface: light to import, and every name it promises is there."""

import json
import subprocess
import sys

import pytest

import rayprism
from rayprism import client

HEAVY = ("ray", "torch", "pymilvus", "transformers", "httpx", "pydantic", "numpy")


def test_import_rayprism_loads_no_heavy_dependency():
    """A fresh interpreter: this test process has long imported everything."""
    probe = ("import sys, json, rayprism; "
             f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                                       text=True).stdout)
    assert loaded == []


def test_every_exported_name_resolves_to_its_defining_object():
    from rayprism.platform import config, errors

    homes = {name: module for module in (client, config, errors) for name in vars(module)}
    for name in rayprism.__all__:
        if name == "__version__":
            continue
        assert getattr(rayprism, name) is getattr(homes[name], name), name
    assert {"Client", "load_serve_config", "load_job_config", "load_train_config", "RayprismError"} <= set(
        rayprism.__all__)


def test_every_typed_error_is_exported():
    from rayprism.platform import errors

    defined = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, errors.RayprismError)}
    assert defined <= set(rayprism.__all__)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="MilvusStore"):
        rayprism.MilvusStore  # noqa: B018
