"""What spec fields are made of: self-checking models, bounded values, one-line field errors.

Every spec value object derives from `SpecModel` (pydantic, frozen, unknown keys refused) and
declares each field's check beside its type, so a spec read from TOML and one built in Python
pass through the same checks and fail with the same `FieldError`: one line naming the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, get_args

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError

from poolbench.errors import UsageError

# Upper bounds keep a typo (or `inf`) from starting Postgres and failing an hour later.
MAX_SECONDS = 86_400.0  # one run's warm-up, window or think time: a day
MAX_MS = 600_000.0  # a latency, an objective: ten minutes
MAX_RATE = 100_000.0  # arrivals or spawns per second
MAX_COUNT = 1_000_000  # users, pool sizes, connections, queries
MAX_REPETITIONS = 1_000
MAX_POINTS = 10_000  # runs in one sweep: weeks of measurement already

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FieldError(UsageError, ValueError):
    """A spec field fails its check: `where` it is (dotted) and why, in one line.

    A ValueError too, so a check raising it inside validation becomes part of the
    ValidationError that `field_error` turns back into one of these, with the full path.
    """

    def __init__(self, where: str | Sequence[str | int], message: str) -> None:
        self.where = tuple(where.split(".")) if isinstance(where, str) else tuple(where)
        self.message = message
        super().__init__(f"{dotted(self.where)}: {message}" if self.where else message)


def dotted(where: Sequence[str | int]) -> str:
    """`slo.endpoints."POST /orders".p95_ms`: names as in TOML, other keys quoted."""
    parts = map(str, where)
    return ".".join(p if _IDENTIFIER.match(p) else json.dumps(p, ensure_ascii=False) for p in parts)


class SpecModel(BaseModel):
    """A frozen spec table that checks itself when it is made, from TOML or from Python."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    # Where the table sits in a spec file (`grid`), so an error names the field as TOML does.
    table: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise field_error(exc, type(self)) from None

    # Tell pydantic this __init__ only validates, as BaseModel's does: validating a spec from a
    # dict (model_validate, nested tables) then skips it and keeps its validation context.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


def field_error(exc: ValidationError, model: type[BaseModel]) -> FieldError:
    """The first problem of a failed validation as one FieldError naming the field."""
    error = exc.errors()[0]
    table = getattr(model, "table", "")
    where: tuple[str | int, ...] = (*(table.split(".") if table else ()), *error["loc"])
    where = tuple(part for part in where if part != "[key]")  # a bad key of a table of tables
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return FieldError((*where, *cause.where), cause.message)
    if isinstance(cause, ValueError):
        return FieldError(where, str(cause))
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(_model_at(model, error["loc"][:-1]).model_fields))
        return FieldError(where, f"unknown key (expected one of: {allowed})")
    if error["type"] == "missing":
        return FieldError(where, "missing")
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return FieldError(where, "must be a table")
    return FieldError(where, error["msg"])


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel]:
    """The model of the table at `loc` (keys that are no field, like an endpoint's name, pass)."""
    for part in loc:
        info = model.model_fields.get(str(part))
        if info is not None:
            model = _model_in(info.annotation) or model
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if found := _model_in(arg):
            return found
    return None


# --- field checks: each is a PlainValidator, so the message is ours, not pydantic's -----------


def _optional(check: Callable[[object], Any], optional: bool) -> PlainValidator:
    """A validator of `check`, letting None through when the field is optional."""
    if not optional:
        return PlainValidator(check)
    return PlainValidator(lambda value: None if value is None else check(value))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: object, minimum: int, maximum: int) -> bool:
    """Whether `value` is an integer (not a bool) within the bounds."""
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum


def integer(minimum: int, maximum: int = MAX_COUNT, *, optional: bool = False) -> PlainValidator:
    """An integer from `minimum` to `maximum`."""

    def check(value: object) -> int:
        if not is_int(value, minimum, maximum):
            raise ValueError(f"must be an integer from {minimum} to {maximum:,}")
        assert isinstance(value, int)
        return value

    return _optional(check, optional)


def number(
    minimum: float, maximum: float, *, strict: bool = False, optional: bool = False
) -> PlainValidator:
    """A finite number >= `minimum` (> when strict) and <= `maximum`, as a float."""

    def check(value: object) -> float:
        if _is_number(value):
            n = float(value)  # type: ignore[arg-type]
            above = n > minimum or (n == minimum and not strict)
            if above and n <= maximum and math.isfinite(n):
                return n
        low = f"{'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"must be a finite number {low} and <= {maximum:,g}")

    return _optional(check, optional)


def fraction(*, optional: bool = False) -> PlainValidator:
    """A number between 0 and 1, as a float."""

    def check(value: object) -> float:
        if not (_is_number(value) and 0 <= value <= 1):  # type: ignore[operator]
            raise ValueError("must be a fraction between 0 and 1")
        return float(value)  # type: ignore[arg-type]

    return _optional(check, optional)


def non_empty_text(value: object) -> str:
    """A string with something in it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def text(*, optional: bool = False) -> PlainValidator:
    """A non-empty string."""
    return _optional(non_empty_text, optional)


def any_text(value: object) -> str:
    """A string, possibly empty."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def one_of(choices: Sequence[str]) -> PlainValidator:
    """One of `choices`."""

    def check(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)

    return PlainValidator(check)


def as_list(value: object) -> list[Any]:
    """A grid axis: a list (or tuple), or one value standing for a list of it."""
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values:
        raise ValueError("must not be empty (give at least one value)")
    return values


def integers(minimum: int) -> PlainValidator:
    """A non-empty list of integers from `minimum` to MAX_COUNT, as a tuple."""

    def check(value: object) -> tuple[int, ...]:
        values = as_list(value)
        if not all(is_int(v, minimum, MAX_COUNT) for v in values):
            raise ValueError(f"must be a list of integers from {minimum} to {MAX_COUNT:,}")
        return tuple(values)

    return PlainValidator(check)


def numbers(minimum: float, maximum: float) -> PlainValidator:
    """A non-empty list of finite numbers within the bounds, as a tuple of floats."""

    def check(value: object) -> tuple[float, ...]:
        values = as_list(value)
        floats = [float(v) for v in values if _is_number(v)]
        if len(floats) != len(values) or not all(
            minimum <= n <= maximum and math.isfinite(n) for n in floats
        ):
            raise ValueError(f"must be a list of finite numbers from {minimum:g} to {maximum:,g}")
        return tuple(floats)

    return PlainValidator(check)
