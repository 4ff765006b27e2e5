"""The integrations stay optional: their package imports no framework, and a framework module without its
framework installed says which extra to install."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from rayprism.platform.errors import MissingDependencyError


def test_the_package_imports_no_framework():
    probe = "import sys, rayprism.integrations; print(sorted({m.split('.')[0] for m in sys.modules} & " \
            "{'langchain_core', 'llama_index'}))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


@pytest.mark.parametrize(("module", "framework", "extra"), [("langchain", "langchain_core", "langchain"),
                                                           ("llama_index", "llama_index", "llama-index")])
def test_a_missing_framework_names_its_extra(monkeypatch, module, framework, extra):
    for name in [name for name in sys.modules if name == framework or name.startswith(f"{framework}.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, framework, None)  # what Python finds for a package that is not installed
    monkeypatch.delitem(sys.modules, f"rayprism.integrations.{module}", raising=False)
    with pytest.raises(MissingDependencyError, match=rf"pip install 'rayprism\[{extra}\]'"):
        importlib.import_module(f"rayprism.integrations.{module}")
