"""What the package ships besides code: locustfiles, specs, the sample app, found by package name.

The checkout's top-level `scenarios/` and `sample_app/` are installed as `poolbench.scenarios`
and `poolbench.sample_app` (pyproject's package-dir), so nothing here reads the checkout: the
same lookups work from a wheel, from an editable install and from any working directory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from poolbench.errors import UsageError

SAMPLE_APP = "poolbench.sample_app"
# The sample app's ASGI app, for uvicorn.
SAMPLE_APP_ASGI = f"{SAMPLE_APP}.main:app"
SPECS_DIR = Path(__file__).resolve().parent / "specs"
# What Locust runs for a user's own locustfile (POOLBENCH_LOCUSTFILE names the file).
OWN_LOCUSTFILE = Path(__file__).resolve().parent / "load" / "own_locustfile.py"


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without running it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{name} is not installed with poolbench")
    return Path(next(iter(spec.submodule_search_locations)))


# The shipped locustfiles: the checkout's scenarios/, installed as poolbench.scenarios.
SCENARIOS_DIR = package_dir("poolbench.scenarios")


def shipped_specs() -> list[str]:
    """The names of the shipped sweep specs (`poolbench sweep quick`)."""
    return sorted(p.stem for p in SPECS_DIR.glob("*.toml"))


def spec_path(spec: str) -> Path:
    """A spec argument as a file: an existing path, else a shipped spec by name."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = SPECS_DIR / f"{path.name.removesuffix('.toml')}.toml"
    if len(path.parts) == 1 and shipped.is_file():  # a bare name, never a missing path
        return shipped
    raise UsageError(
        f"spec {spec}: no such file, and not a shipped spec (shipped: {', '.join(shipped_specs())})"
    )
