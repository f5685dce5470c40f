"""The shape of the repository: small modules, no import cycle between tests and bench, no
third-party prompt text in the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 500


def _modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Top-level package names of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_in_the_package_is_over_500_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in _modules("serve_graph")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("tests", "bench"), ("bench", "tests"), ("serve_graph", "tests"), ("serve_graph", "bench")],
)
def test_no_import_across(folder: str, forbidden: str) -> None:
    """Shared test seams live in serve_graph/testing; tests and bench never import each other."""
    offenders = [str(p.relative_to(REPO)) for p in _modules(folder) if forbidden in _imports(p)]
    assert not offenders, offenders
