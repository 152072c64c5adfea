"""Reading a sweep spec: TOML plus `--set` overrides, into a SweepSpec that checks itself.

Any problem is one UsageError line that names the file and the field.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from poolbench.checks import field_error
from poolbench.errors import UsageError
from poolbench.spec import SweepSpec


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `KEY=VALUE` (VALUE in TOML syntax, else a bare string) from `--set`."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set {text!r}: expected KEY=VALUE, e.g. timing.duration_s=5")
    try:
        return key, tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value.strip()  # `--set scenario=write_heavy` without quotes


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of the raw spec with dotted-key overrides set (validated afterwards).

    A top-level override of None removes the key (TOML has no null, so `--set` never gives one).
    """
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for dotted, value in overrides.items():
        head, _, rest = dotted.partition(".")
        if not rest:
            merged[head] = value
            if value is None:
                del merged[head]
            continue
        if "." in rest:
            raise UsageError(f"--set {dotted}: keys have at most one dot (table.key)")
        table = merged.setdefault(head, {})
        if not isinstance(table, dict):
            raise UsageError(f"--set {dotted}: {head} is not a table")
        table[rest] = value
    return merged


def spec_from_dict(
    raw: Mapping[str, Any],
    *,
    source: str,
    overrides: Mapping[str, Any] | None = None,
    check_files: bool = True,
) -> SweepSpec:
    """Validate a raw spec (from TOML or a manifest); errors name `source` and the field.

    The name defaults to the file's stem. `check_files=False` reads a stored spec leniently:
    its scenario file need not exist here.
    """
    merged = apply_overrides(raw, overrides or {})
    merged.setdefault("name", Path(source).stem)
    # A relative locustfile is relative to the spec file, not to the working directory.
    context = {"base_dir": Path(source).parent, "check_files": check_files}
    try:
        return SweepSpec.model_validate(merged, context=context)
    except ValidationError as exc:
        raise UsageError(f"spec {source}: {field_error(exc, SweepSpec)}") from None


def load_spec(path: Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read a TOML spec and apply overrides; any problem is one UsageError line."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"spec {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"spec {path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"spec {path}: not valid TOML: {exc}") from None
    return spec_from_dict(raw, source=str(path), overrides=overrides)


def spec_from_manifest(manifest: Mapping[str, Any], source: str) -> SweepSpec:
    """Load the spec a sweep stored in its manifest back into a SweepSpec (leniently)."""
    raw = manifest.get("spec")
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: no spec in the manifest")
    return spec_from_dict(raw, source=source, check_files=False)
