"""k6-style thresholds (`--fail-on "p95_ms>200"`): parse them and check them against a config."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from poolbench.errors import UsageError

THRESHOLD_METRICS = ("p50_ms", "p95_ms", "p99_ms", "error_rate", "rps")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
}
_THRESHOLD_RE = re.compile(
    r"^\s*(?P<metric>[a-z0-9_]+)\s*(?P<op>>=|<=|==|>|<)\s*"
    r"(?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


@dataclass(frozen=True, kw_only=True)
class Threshold:
    """`metric op value`: the run fails when the condition is true (`--fail-on`)."""

    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def triggered(self, actual: float) -> bool:
        """True when the measured value matches the failure condition (NaN always fails)."""
        return math.isnan(actual) or _OPERATORS[self.op](actual, self.value)


def parse_threshold(text: str) -> Threshold:
    """Parse `p95_ms>200` style text; bad syntax raises UsageError."""
    match = _THRESHOLD_RE.match(text)
    if not match:
        raise UsageError(
            f"bad threshold {text!r}: expected METRIC OP NUMBER, e.g. 'p95_ms>200' "
            f"(operators > >= < <= ==)"
        )
    metric = match["metric"]
    if metric not in THRESHOLD_METRICS:
        raise UsageError(
            f"bad threshold {text!r}: unknown metric {metric!r} "
            f"(one of {', '.join(THRESHOLD_METRICS)})"
        )
    return Threshold(metric=metric, op=match["op"], value=float(match["value"]))


def check_thresholds(
    thresholds: list[Threshold], metrics: Mapping[str, float]
) -> list[tuple[Threshold, float]]:
    """The thresholds that were triggered, with the measured value."""
    return [(t, metrics[t.metric]) for t in thresholds if t.triggered(metrics[t.metric])]
