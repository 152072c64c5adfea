"""Which locustfiles a sweep runs, and whether a file is one: read as a syntax tree, never run.

Importing a locustfile would monkeypatch this process with gevent, so every check here parses
the file instead. A locustfile of the user's own runs next to `poolbench/load/window_plugin.py`,
which registers the event listeners (`poolbench.load.listeners`) that record the measured window
and every request, without any change to the file.
"""

from __future__ import annotations

import ast
from pathlib import Path

from poolbench.shipped import SCENARIOS_DIR

# The open model's Poisson arrivals live in this user class (poolbench.load.open_model).
OPEN_MODEL_USER = "PoolbenchUser"


def scenario_path(scenario: str) -> Path:
    """The file of a scenario shipped in scenarios/."""
    return SCENARIOS_DIR / f"{scenario}.py"


def user_classes(path: Path) -> list[list[str]]:
    """The base-class names of every concrete Locust user class in a file ([] if none/unreadable).

    A user class is a top-level class deriving from a `...User` class, without `abstract = True`.
    """
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return []
    classes = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and not _is_abstract(node):
            bases = [_base_name(base) for base in node.bases]
            if any(base.endswith("User") for base in bases):
                classes.append(bases)
    return classes


def defines_user(path: Path) -> bool:
    """Whether a file defines a concrete Locust user class."""
    return bool(user_classes(path))


def known_scenarios() -> list[str]:
    """The scenarios shipped in scenarios/, by name."""
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.py") if defines_user(p))


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _is_abstract(node: ast.ClassDef) -> bool:
    return any(
        isinstance(stmt, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "abstract" for t in stmt.targets)
        and isinstance(stmt.value, ast.Constant)
        and stmt.value.value is True
        for stmt in node.body
    )
