"""The `poolbench` command: the CLI, or one line naming the extra it needs (exit 2)."""

from __future__ import annotations

import importlib.metadata
import re
import sys

BENCH_INSTALL = "pip install 'poolbench[bench]'"
_BENCH_EXTRA = re.compile(r"""extra\s*==\s*["']bench["']""")
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def missing_bench_packages() -> list[str]:
    """The [bench] extra's distributions this environment lacks, read from our own metadata.

    pyproject.toml's `[project.optional-dependencies] bench` is the one list; this reads it back
    from the installed metadata instead of keeping a copy.
    """
    missing = []
    for requirement in importlib.metadata.requires("poolbench") or ():
        if _BENCH_EXTRA.search(requirement) and (name := _NAME.match(requirement)):
            try:
                importlib.metadata.version(name.group(0))
            except importlib.metadata.PackageNotFoundError:
                missing.append(name.group(0))
    return missing


def main() -> None:
    """Run the CLI; without the [bench] extra, say so in one line."""
    if sys.argv[1:] in (["--version"], ["-V"]):
        from poolbench import __version__

        print(f"poolbench {__version__}")
        return
    missing = missing_bench_packages()
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
