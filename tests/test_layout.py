"""The tree stays readable: every module says its job, none is over 500 lines, DESIGN names each."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

MAX_LINES = 500
PACKAGES = (ROOT / "bench" / "poolbench", ROOT / "sample_app", ROOT / "scenarios")
MODULES = sorted(p for package in PACKAGES for p in package.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_every_module_opens_with_a_line_saying_its_job(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring and docstring.splitlines()[0].strip(), f"{_name(path)} has no docstring"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_is_over_500_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{_name(path)}: {lines} lines"


def test_designs_layout_names_every_toolkit_module() -> None:
    design = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    layout = design.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"\b(\w+)\.py\b|\b(\w+)/", layout))
    names = {a or b for a, b in named}
    toolkit = ROOT / "bench" / "poolbench"
    missing = [
        _name(p)
        for p in toolkit.rglob("*.py")
        if p.stem not in names and p.name != "__init__.py" and p.parent.name not in ("specs",)
    ]
    assert not missing, f"docs/DESIGN.md's layout does not name: {missing}"
    for folder in (p for p in toolkit.iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert folder.name in names, f"docs/DESIGN.md's layout does not name {folder.name}/"
