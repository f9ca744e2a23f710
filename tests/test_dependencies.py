"""Every third-party module the code imports is a dependency pyproject.toml declares, so a
newcomer's `pip install -e ".[dev]"` in a clean virtual environment gets all of it."""

import ast
import re
import sys
from importlib import metadata

import pytest

from tests.conftest import ROOT

OURS = {"optim", "tasks", "sweeps", "tests", "scripts"}


def imported_modules() -> dict[str, str]:
    """{top-level module: a file that imports it} over the project's Python files."""
    found = {}
    for path in sorted(ROOT.glob("*/**/*.py")):
        if path.relative_to(ROOT).parts[0].startswith(".") or "venv" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def declared() -> set[str]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"],
                    *[r for extra in project["optional-dependencies"].values() for r in extra]]
    return {normalize(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in requirements}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_import_is_a_declared_dependency():
    third_party = {m: f for m, f in imported_modules().items()
                   if m not in sys.stdlib_module_names and m not in OURS and m != "__future__"}
    providers = metadata.packages_distributions()
    wanted = declared()
    undeclared = {}
    for module, where in third_party.items():
        dists = {normalize(d) for d in providers.get(module, [])}
        if not dists & wanted:
            undeclared[module] = (where, sorted(dists) or "not installed")
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
