"""Adaptive search: each workload's SLO optimum from a fraction of the grid's runs.

A full grid measures every pool size at every repetition, though the answer of an SLO sweep (the
fewest connections that met the SLO in every repetition, `bench.analysis.optimum`) depends only
on the sizes next to the SLO boundary. `--search adaptive` runs the same points, chosen one at a
time from the verdicts so far, and only the grid's own points, so the analysis reads the result
as it reads a grid:

1. probe: repetition 1 of the smallest size, then of sizes about doubling until one meets the SLO;
2. bisect: repetition 1 of the middle size between the largest failing and smallest passing size,
   until they are neighbours in the grid;
3. confirm: the passing neighbour's remaining repetitions. If one fails, that size fails: the
   search goes on above it (one size at a time once anything has passed).

It stops when the smallest passing size passed every repetition, or when every size failed. The
decision is a pure function of the finished runs' verdicts, so `--resume` carries on where the
search stopped. A run a CPU or the load generator limited says nothing about the pool: it counts
as a failure here (the search moves up), as the analysis leaves it out.

It assumes what pool sizing assumes: a size that meets the SLO is not followed by a larger size
that misses it. Sizes below the largest failing one are never run, so the analysis cannot
contradict that assumption; a full grid can (`poolbench sweep` without `--search`).

Capacity points (closed loop, `kind = "capacity"` or `"both"`) have no SLO boundary: they run as
in a grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.analysis.optimum import run_failure
from bench.objectives import Slo
from bench.results import UNTRUSTED_BOTTLENECKS
from bench.spec import SLO, Point

# What a finished run says about its pool size.
PASS, FAIL = "pass", "fail"


def run_verdict(point: Point, record: Mapping[str, Any], slo: Slo) -> str:
    """PASS if the run met the SLO and nothing but the pool could have limited it, else FAIL."""
    figures = record.get("figures") or {}
    if figures.get("bottleneck") in UNTRUSTED_BOTTLENECKS:
        return FAIL
    row = {**point.as_dict(), **figures}
    return PASS if run_failure(row, slo, record.get("endpoints") or {}) is None else FAIL


@dataclass(kw_only=True)
class Line:
    """One workload config of the grid: its points by (pool size, repetition)."""

    sizes: list[int]
    repetitions: int
    points: dict[tuple[int, int], Point] = field(default_factory=dict)

    def next_point(self, verdicts: Mapping[str, str]) -> Point | None:
        """The next point to run given the verdicts so far (by run_id), or None: done."""
        known = {
            key: verdict
            for key, point in self.points.items()
            if (verdict := verdicts.get(point.run_id)) is not None
        }
        failing = [i for i, size in enumerate(self.sizes) if self._fails(known, size)]
        lo = max(failing, default=-1)
        passing = [
            i for i, size in enumerate(self.sizes) if i > lo and self._passed_once(known, size)
        ]
        if not passing:
            if lo == len(self.sizes) - 1:
                return None  # every size failed
            ever_passed = any(v == PASS for v in known.values())
            return self._first(self._probe(lo) if not ever_passed else lo + 1)
        hi = passing[0]
        if hi - lo > 1:
            return self._first((lo + hi) // 2)
        size = self.sizes[hi]
        for rep in range(1, self.repetitions + 1):
            if (size, rep) not in known:
                return self.points[(size, rep)]
        return None  # the smallest passing size passed every repetition

    def _probe(self, lo: int) -> int:
        """The index after lo whose size about doubles it (the smallest size first)."""
        if lo < 0:
            return 0
        target = 2 * self.sizes[lo]
        later = [i for i in range(lo + 1, len(self.sizes)) if self.sizes[i] >= target]
        return later[0] if later else len(self.sizes) - 1

    def _first(self, index: int) -> Point:
        return self.points[(self.sizes[index], 1)]

    def _fails(self, known: Mapping[tuple[int, int], str], size: int) -> bool:
        return any(v == FAIL for (s, _), v in known.items() if s == size)

    def _passed_once(self, known: Mapping[tuple[int, int], str], size: int) -> bool:
        return any(v == PASS for (s, _), v in known.items() if s == size)


def _line_key(point: Point) -> tuple[Any, ...]:
    """Everything that makes a point but its pool size and repetition."""
    values = asdict(point)
    for key in ("run_id", "pool_size", "repetition"):
        del values[key]
    return tuple(sorted(values.items()))


@dataclass(kw_only=True)
class AdaptiveSearch:
    """The grid's SLO points as lines searched side by side; capacity points run in full."""

    lines: list[Line]
    always: list[Point]
    slo: Slo

    @classmethod
    def of(cls, points: Sequence[Point], slo: Slo, repetitions: int) -> AdaptiveSearch:
        lines: dict[tuple[Any, ...], Line] = {}
        always = []
        for point in points:
            if point.experiment != SLO:
                always.append(point)
                continue
            line = lines.setdefault(_line_key(point), Line(sizes=[], repetitions=repetitions))
            line.points[(point.pool_size, point.repetition)] = point
        for line in lines.values():
            line.sizes = sorted({size for size, _ in line.points})
        return cls(lines=list(lines.values()), always=always, slo=slo)

    def next_point(self, finished: Mapping[str, Mapping[str, Any]]) -> Point | None:
        """The next point to run given the finished runs (run.json records by run_id)."""
        for point in self.always:
            if point.run_id not in finished:
                return point
        verdicts = {
            point.run_id: run_verdict(point, finished[point.run_id], self.slo)
            for line in self.lines
            for point in line.points.values()
            if point.run_id in finished
        }
        # Lines take turns: each next point comes from the line with the fewest runs so far.
        candidates = [
            (sum(p.run_id in finished for p in line.points.values()), index, point)
            for index, line in enumerate(self.lines)
            if (point := line.next_point(verdicts)) is not None
        ]
        return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None
