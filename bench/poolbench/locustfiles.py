"""Which locustfiles a sweep runs, and whether a file is one, checked without importing it here.

Importing a locustfile would monkeypatch this process with gevent, so the checks here parse the
file, or import it in a child process. A locustfile of the user's own runs through
`poolbench/load/own_locustfile.py`, which registers the event listeners (`poolbench.load.listeners`)
that record the measured window and every request, and wraps its users for the open model
(`poolbench.load.wrapping`), without any change to the file.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from poolbench.shipped import SCENARIOS_DIR

# The open model's Poisson arrivals live in this user class (poolbench.load.open_model).
OPEN_MODEL_USER = "PoolbenchUser"
# Bound on importing a user's locustfile in a child process to check it.
CHECK_TIMEOUT_S = 60.0


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


def poolbench_users_only(path: Path) -> bool:
    """Whether every user class of a file derives from PoolbenchUser (and there is one)."""
    classes = user_classes(path)
    return bool(classes) and all(OPEN_MODEL_USER in bases for bases in classes)


def open_model_problem(path: Path) -> str | None:
    """Why the open model cannot run a user's own locustfile, or None (in a child process).

    Files whose users all derive from PoolbenchUser pass without one.
    """
    if poolbench_users_only(path):
        return None
    argv = [sys.executable, "-m", "poolbench.load.wrapping", str(path)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"importing it took over {CHECK_TIMEOUT_S:g} s"
    if done.returncode == 0:
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[-1] if lines else f"the check exited {done.returncode}"


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
