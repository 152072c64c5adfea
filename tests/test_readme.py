"""The README's Python example runs as written, on a synthetic sweep."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from poolbench.analysis.synthetic import make_sweep
from tests.conftest import ROOT


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use it from Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no python block under 'Use it from Python'"
    return match.group(1)


def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = readme_example()
    sweep = make_sweep(tmp_path / "results")
    path = re.search(r'load_sweep\("([^"]+)"\)', code)
    assert path is not None
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace(path.group(1), str(sweep)), "README.md", "exec"), {})
    printed = out.getvalue()
    assert printed.startswith("PASS")
    assert "DB_POOL_SIZE=" in printed and "seed formula" in printed
    assert (tmp_path / "reports" / "quick.html").stat().st_size > 10_000
