"""Static check (AST) that sample_app uses none of the patterns the benchmark must not model."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parents[2] / "sample_app"
# Only start-up code may build engines, pools, clients and semaphores.
REQUEST_PATH_MODULES = ("routes/", "deps.py", "repository.py", "middleware.py", "problems.py")
RESOURCE_CONSTRUCTORS = {
    "create_async_engine",
    "create_pool",
    "AsyncClient",
    "Client",
    "Semaphore",
    "build_engine",
    "create_pg_pool",
    "async_sessionmaker",
    "create_sessionmaker",
}
SYNC_SQLALCHEMY = {"create_engine", "Session", "sessionmaker", "scoped_session"}
SWALLOWERS = {"CancelledError", "BaseException"}
ROUTE_DECORATORS = {"get", "post", "put", "patch", "delete", "api_route"}


@dataclass(frozen=True)
class Violation:
    """One forbidden pattern at one line."""

    rule: str
    line: int


def _name(node: ast.AST) -> str:
    """Return the dotted name of a Name/Attribute chain ('' for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _last(node: ast.AST) -> str:
    return _name(node).rpartition(".")[2]


def _handler_types(handler: ast.ExceptHandler) -> set[str]:
    if handler.type is None:
        return {"BaseException"}  # a bare `except:` catches cancellation too
    nodes = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {_last(node) for node in nodes}


def _reraises(handler: ast.ExceptHandler) -> bool:
    """True if the handler re-raises (bare `raise` or `raise <caught name>`)."""
    for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
        if isinstance(node, ast.Raise):
            if node.exc is None or (
                handler.name and isinstance(node.exc, ast.Name) and node.exc.id == handler.name
            ):
                return True
    return False


class _Checker(ast.NodeVisitor):
    def __init__(self, request_path: bool) -> None:
        self.request_path = request_path
        self.violations: list[Violation] = []
        self._function_stack: list[ast.AST] = []
        self._sleep_aliases = {"time.sleep"}

    def add(self, rule: str, node: ast.AST) -> None:
        self.violations.append(Violation(rule, getattr(node, "lineno", 0)))

    def _in_async(self) -> bool:
        return bool(self._function_stack) and isinstance(
            self._function_stack[-1], ast.AsyncFunctionDef
        )

    def _in_route(self) -> bool:
        for function in self._function_stack:
            assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
            for decorator in function.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if _last(target) in ROUTE_DECORATORS:
                    return True
        return False

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == "requests":
                self.add("requests", node)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            if module.split(".")[0] == "requests":
                self.add("requests", node)
            if module == "asyncio" and alias.name == "gather":
                self.add("asyncio.gather", node)
            if module == "time" and alias.name == "sleep":
                self._sleep_aliases.add(alias.asname or alias.name)
            if module.startswith("sqlalchemy") and alias.name in SYNC_SQLALCHEMY:
                self.add("sync-sqlalchemy", node)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = _name(node)
        if dotted == "asyncio.gather" or dotted.endswith(".asyncio.gather"):
            self.add("asyncio.gather", node)
        if dotted.startswith("sqlalchemy") and node.attr in SYNC_SQLALCHEMY:
            self.add("sync-sqlalchemy", node)
        self.generic_visit(node)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._function_stack.append(node)
        self.generic_visit(node)
        self._function_stack.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Call(self, node: ast.Call) -> None:
        called = _name(node.func)
        if called in self._sleep_aliases and self._in_async():
            self.add("time.sleep-in-async", node)
        if _last(node.func) in RESOURCE_CONSTRUCTORS and (self.request_path or self._in_route()):
            self.add("resource-in-request-path", node)
        if _last(node.func) == "suppress" and any(_last(arg) in SWALLOWERS for arg in node.args):
            self.add("swallowed-cancellation", node)
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if _handler_types(node) & SWALLOWERS and not _reraises(node):
            self.add("swallowed-cancellation", node)
        self.generic_visit(node)


def find_violations(source: str, *, request_path: bool = False) -> list[Violation]:
    """Return every forbidden pattern in `source` (request_path: a request-path module)."""
    checker = _Checker(request_path)
    checker.visit(ast.parse(source))
    return checker.violations


def _app_files() -> list[Path]:
    return sorted(APP_DIR.rglob("*.py"))


def test_the_app_has_files_to_check() -> None:
    names = {path.relative_to(APP_DIR).as_posix() for path in _app_files()}
    assert {"main.py", "db.py", "deps.py", "routes/fanout.py", "downstream.py"} <= names


@pytest.mark.parametrize("path", _app_files(), ids=lambda p: p.relative_to(APP_DIR).as_posix())
def test_sample_app_has_no_forbidden_patterns(path: Path) -> None:
    relative = path.relative_to(APP_DIR).as_posix()
    request_path = relative.startswith(REQUEST_PATH_MODULES)
    assert find_violations(path.read_text(), request_path=request_path) == []


BAD_SNIPPETS = [
    ("import asyncio\nasync def f(a, b):\n    await asyncio.gather(a, b)\n", "asyncio.gather"),
    ("from asyncio import gather\n", "asyncio.gather"),
    ("import time\nasync def f():\n    time.sleep(1)\n", "time.sleep-in-async"),
    ("from time import sleep as nap\nasync def f():\n    nap(1)\n", "time.sleep-in-async"),
    ("import requests\n", "requests"),
    ("from requests.adapters import HTTPAdapter\n", "requests"),
    ("from sqlalchemy import create_engine\n", "sync-sqlalchemy"),
    ("from sqlalchemy.orm import Session\n", "sync-sqlalchemy"),
    ("import sqlalchemy\ne = sqlalchemy.create_engine('x')\n", "sync-sqlalchemy"),
    (
        "from sqlalchemy.ext.asyncio import create_async_engine\n"
        "@router.get('/x')\nasync def x():\n    engine = create_async_engine('u')\n",
        "resource-in-request-path",
    ),
    (
        "import asyncpg\n@app.post('/x')\nasync def x():\n    await asyncpg.create_pool('u')\n",
        "resource-in-request-path",
    ),
    (
        "import asyncio\ntry:\n    pass\nexcept asyncio.CancelledError:\n    pass\n",
        "swallowed-cancellation",
    ),
    ("try:\n    pass\nexcept (ValueError, BaseException):\n    log()\n", "swallowed-cancellation"),
    ("try:\n    pass\nexcept:\n    pass\n", "swallowed-cancellation"),
    (
        "import asyncio, contextlib\nwith contextlib.suppress(asyncio.CancelledError):\n    pass\n",
        "swallowed-cancellation",
    ),
]


@pytest.mark.parametrize(("source", "rule"), BAD_SNIPPETS)
def test_checker_catches_bad_snippets(source: str, rule: str) -> None:
    assert [v.rule for v in find_violations(source)] == [rule]


def test_checker_flags_resources_anywhere_in_request_path_modules() -> None:
    source = "import httpx\ndef get_client():\n    return httpx.AsyncClient()\n"
    assert find_violations(source) == []
    assert [v.rule for v in find_violations(source, request_path=True)] == [
        "resource-in-request-path"
    ]


GOOD_SNIPPETS = [
    # Cancellation caught for cleanup and re-raised.
    "import asyncio\ntry:\n    pass\nexcept asyncio.CancelledError:\n    cleanup()\n    raise\n",
    "try:\n    pass\nexcept BaseException as exc:\n    raise exc\n",
    # Blocking sleep in a sync function (run in a thread) is fine.
    "import time\ndef work():\n    time.sleep(1)\n",
    # Plain exceptions may be handled.
    "try:\n    pass\nexcept Exception:\n    pass\n",
    # Async engine at start-up is the point.
    "from sqlalchemy.ext.asyncio import create_async_engine\n"
    "async def lifespan(app):\n    engine = create_async_engine('u')\n",
]


@pytest.mark.parametrize("source", GOOD_SNIPPETS)
def test_checker_accepts_correct_code(source: str) -> None:
    assert find_violations(source) == []
