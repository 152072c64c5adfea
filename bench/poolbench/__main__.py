"""The `poolbench` command: the CLI, or one line naming the extra it needs (exit 2)."""

from __future__ import annotations

import importlib.util
import sys

# What every command but `instrument` runs on: the [bench] extra's import names.
BENCH_MODULES = (
    "asyncpg", "fastapi", "httpx", "jinja2", "locust", "matplotlib", "numpy", "pandas",
    "psutil", "pydantic_settings", "rich", "scipy", "typer", "uvicorn",
)  # fmt: skip
BENCH_INSTALL = "pip install 'poolbench[bench]'"


def missing_bench_modules() -> list[str]:
    """The [bench] extra's modules this environment lacks (found without importing them)."""
    return [name for name in BENCH_MODULES if importlib.util.find_spec(name) is None]


def main() -> None:
    """Run the CLI; without the [bench] extra, say so in one line."""
    if sys.argv[1:] in (["--version"], ["-V"]):
        from poolbench import __version__

        print(f"poolbench {__version__}")
        return
    missing = missing_bench_modules()
    if missing:
        print(
            f"error: poolbench's commands need the [bench] extra (missing: {', '.join(missing)});"
            f" install it with: {BENCH_INSTALL}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    from poolbench.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
