"""docs/architecture.md stays true: every path it names exists, and every module under rayprism/deployments/
is on its map (a new room is placed on the map when it is built)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PATH = re.compile(r"`((?:rayprism|docs|tests|configs|bench)/[\w./-]*)`")


def named_paths() -> list[str]:
    return PATH.findall(DOC.read_text())


def test_every_path_the_map_names_exists():
    paths = named_paths()
    assert len(paths) > 40  # the map names the files of each data path
    missing = [path for path in paths if not (ROOT / path).exists()]
    assert missing == [], f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_deployments_module_is_on_the_map():
    named = set(named_paths())
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "rayprism" / "deployments").glob("*.py")
               if path.name != "__init__.py"}
    assert sorted(modules - named) == []
