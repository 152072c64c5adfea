"""From live telemetry to pool sizes, without a benchmark (`poolbench observe URL`).

Reads an instrumented service's cumulative counters (`/telemetry/totals`, else Prometheus
`/metrics`) at the start and the end of a window and takes the difference, so the service's own
window is never reset. Every model is fed per pool from those figures by the same builder as
`analyze` (poolbench.analysis.inputs); a model whose input the service did not report says so
instead of getting a guessed number. In between, the counters are polled to sample the
peaks (a lower bound: what was in flight at each poll).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from poolbench.analysis.inputs import Measured, SizingOptions, measured_inputs
from poolbench.analysis.models import ModelResult
from poolbench.analysis.recommend import DEFAULT_UNUSED_PG_POOL, PoolConfig, config_snippet
from poolbench.errors import UsageError
from poolbench.fmt import num
from poolbench.instrumentation.prometheus import parse_metrics
from poolbench.instrumentation.readings import (
    PoolWindow,
    Reading,
    Window,
    reading_from_totals,
    window_between,
)
from poolbench.instrumentation.telemetry import ASYNCPG, SQLALCHEMY
from poolbench.objectives import Fleet

DEFAULT_POLL_S = 1.0
HTTP_TIMEOUT_S = 5.0
MAX_DURATION_S = 7 * 24 * 3600.0
TOTALS_PATH = "/telemetry/totals"
METRICS_PATH = "/metrics"
LITTLE, ERLANG = "Little's law", "Erlang C"
# Fewer leases than this in the window: the means are noisy.
MIN_LEASES = 100
USL_NOTE = "needs a capacity sweep (>= 6 pool sizes), not live telemetry"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds from `60s`, `90` (seconds), `2m`, `1h` or `500ms`; UsageError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"--for {text!r}: give a duration such as 60s, 90 or 2m")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_DURATION_S:
        raise UsageError(f"--for {text!r}: must be more than 0 and at most 7 days")
    return seconds


def base_url(url: str) -> tuple[str, str | None]:
    """The service's base URL, and the source the URL names (`/metrics`) if it names one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{url!r} is not an http(s) URL of a service")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise UsageError(f"{url!r} has a bad port") from None
    path = parts.path.rstrip("/")
    only = None
    for suffix in (TOTALS_PATH, "/telemetry", METRICS_PATH):
        if path.endswith(suffix):
            path = path.removesuffix(suffix)
            only = METRICS_PATH if suffix == METRICS_PATH else TOTALS_PATH
            break
    return f"{parts.scheme}://{parts.netloc}{path}", only


class _Source:
    """Where the readings come from, chosen once: /telemetry/totals, else /metrics."""

    def __init__(self, client: httpx.Client, base: str, only: str | None) -> None:
        self.client = client
        self.base = base
        self.path = only
        self.missing: list[str] = []
        self.tried: list[str] = []

    def _get(self, path: str) -> httpx.Response:
        try:
            return self.client.get(self.base + path)
        except httpx.HTTPError as exc:
            raise UsageError(
                f"cannot reach {self.base}{path}: {exc or type(exc).__name__}"
            ) from None

    def _parse(self, path: str, response: httpx.Response) -> Reading:
        if path == TOTALS_PATH:
            reading = reading_from_totals(response.json())
        else:
            reading, self.missing = parse_metrics(response.text)
            if reading.completed is None and not reading.pools:
                raise ValueError("no poolbench_* series")
        return reading

    def read(self) -> Reading:
        """One reading; the first call picks the source."""
        candidates = [self.path] if self.path else [TOTALS_PATH, METRICS_PATH]
        for path in candidates:
            response = self._get(path)
            try:
                response.raise_for_status()
                reading = self._parse(path, response)
            except (httpx.HTTPStatusError, ValueError) as exc:
                if self.path is not None:  # the source already chosen went bad: say so
                    raise UsageError(f"{self.base}{path}: {_reason(exc)}") from None
                self.tried.append(f"{path}: {_reason(exc)}")
                continue
            self.path = path
            return reading
        raise UsageError(
            f"{self.base} serves no poolbench telemetry ({'; '.join(self.tried)}); "
            "instrument it with poolbench.instrumentation.instrument(app, ...)"
        )


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return str(exc).split("\n")[0][:200] or type(exc).__name__


@dataclass(frozen=True, kw_only=True)
class Observation:
    """What `observe` read: the window's figures and the peaks sampled while it lasted."""

    url: str
    window: Window
    polls: int
    poll_s: float
    peak_in_flight: float | None
    peak_checked_out: Mapping[str, float] = field(default_factory=dict)
    # Series a /metrics source lacked (empty for /telemetry/totals).
    missing_series: tuple[str, ...] = ()


def observe(
    url: str,
    duration_s: float,
    *,
    poll_s: float = DEFAULT_POLL_S,
    client: httpx.Client | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Observation:
    """Read the service at `url` for `duration_s` seconds without resetting anything."""
    base, only = base_url(url)
    own = client is None
    http = client or httpx.Client(timeout=HTTP_TIMEOUT_S, follow_redirects=False)
    try:
        source = _Source(http, base, only)
        start = source.read()
        began = clock()
        end, polls = start, 1
        peak_in_flight = start.in_flight
        peaks = {name: p.checked_out or 0.0 for name, p in start.pools.items()}
        while (left := began + duration_s - clock()) > 0:
            sleep(min(poll_s, left))
            end = source.read()
            polls += 1
            if end.pid != start.pid:
                raise UsageError(
                    f"{base}: process {start.pid} answered first, then {end.pid}: several "
                    "worker processes share this port; observe each worker on a port of its own"
                )
            if end.in_flight is not None:
                peak_in_flight = max(peak_in_flight or 0.0, end.in_flight)
            for name, pool in end.pools.items():
                peaks[name] = max(peaks.get(name, 0.0), pool.checked_out or 0.0)
        elapsed = clock() - began
    finally:
        if own:
            http.close()
    try:
        window = window_between(start, end, elapsed_s=elapsed)
    except ValueError as exc:
        raise UsageError(f"{base}: {exc}") from None
    return Observation(
        url=base,
        window=window,
        polls=polls,
        poll_s=poll_s,
        peak_in_flight=peak_in_flight,
        peak_checked_out=peaks,
        missing_series=tuple(source.missing),
    )


@dataclass(frozen=True, kw_only=True)
class PoolSizing:
    """One pool's models from live figures, the size to use and why (None: cannot tell)."""

    pool: str
    figures: PoolWindow
    models: list[ModelResult]
    missing: tuple[str, ...]
    size: int | None
    why: str


def live_figures(observation: Observation, pool: PoolWindow) -> Measured:
    """What the window measured for one pool: no stand-ins, a live service has no design."""
    window = observation.window
    return Measured(
        concurrency=window.inflight_mean,
        peak_concurrency=observation.peak_in_flight,
        queries_per_request=window.statements_per_request,
        hold_time_ms=pool.hold_time_mean_ms,
        # Little's law is L = lambda W with W the mean lease, so lambda is leases per second (the
        # request rate when every request leases once).
        target_rps=pool.lease_rps,
        hold_time_cv=pool.hold_time_cv,
    )


def pool_bound(pool: PoolWindow) -> float | None:
    """The most connections the pool may open, as configured: size + overflow."""
    return None if pool.pool_size is None else pool.pool_size + (pool.max_overflow or 0)


def size_pool(observation: Observation, name: str, options: SizingOptions) -> PoolSizing:
    """Every model's size for one instrumented pool from the observed window."""
    pool = observation.window.pools[name]
    if not pool.leases:
        why = "not used in the observed window" if pool.leases == 0 else "its leases are missing"
        return PoolSizing(pool=name, figures=pool, models=[], missing=(), size=None, why=why)
    built = measured_inputs(live_figures(observation, pool), options)
    missing = built.missing
    models = built.models(usl_note=USL_NOTE)
    by_name = {m.name: m for m in models if m.pool_size is not None}
    chosen = [by_name[n] for n in (LITTLE, ERLANG) if n in by_name]
    if not chosen:
        return PoolSizing(
            pool=name,
            figures=pool,
            models=models,
            missing=tuple(sorted(missing)),
            size=None,
            why=f"Little's law and Erlang C lack inputs ({', '.join(sorted(missing))})",
        )
    size = max(m.pool_size or 0 for m in chosen)
    parts = [f"{m.name} {m.pool_size} ({m.formula})" for m in chosen]
    why = (
        f"the larger of {' and '.join(parts)}, fed from {observation.window.window_s:.0f} s of "
        f"live telemetry ({pool.lease_rps:.1f} leases/s x {pool.hold_time_mean_ms:.1f} ms held)"
    )
    return PoolSizing(
        pool=name, figures=pool, models=models, missing=tuple(sorted(missing)), size=size, why=why
    )


def warnings(observation: Observation) -> list[str]:
    """What to distrust in an observed window, in sentences."""
    out: list[str] = []
    window = observation.window
    for name, pool in window.pools.items():
        bound = pool_bound(pool) or 0
        peak = observation.peak_checked_out.get(name, 0.0)
        waited = (pool.acquire_wait_p95_ms or 0.0) >= 1.0
        if pool.timeouts or (waited and bound and peak >= bound):
            out.append(
                f"the {name} pool was saturated in the window (acquire wait p95 "
                f"{pool.acquire_wait_p95_ms or 0:.1f} ms, {pool.timeouts or 0:g} timeouts, "
                f"{peak:g} of {bound:g} checked out at a poll): the rate it served may be capped "
                "by the pool, so these sizes are a lower bound; observe again with a larger pool"
            )
        if pool.leases and pool.leases < MIN_LEASES:
            out.append(
                f"only {pool.leases:g} {name} leases in {window.window_s:.0f} s: the means are "
                "noisy; observe longer (--for)"
            )
    if window.source == METRICS_PATH:
        out.append("figures from Prometheus /metrics: the acquire-wait p95 is bucketed")
    return out


def observation_json(
    observation: Observation, sizings: Mapping[str, PoolSizing], snippet: str | None
) -> dict[str, Any]:
    """The `observe --json` document."""
    window = observation.window
    return {
        "url": observation.url,
        "source": window.source,
        "window_s": window.window_s,
        "polls": observation.polls,
        "requests": {
            "completed": window.completed,
            "rps": window.rps,
            "inflight_mean": window.inflight_mean,
            "inflight_peak_sampled": observation.peak_in_flight,
            "statements_per_request": window.statements_per_request,
        },
        "pools": {
            name: {
                "figures": asdict(s.figures),
                "peak_checked_out_sampled": observation.peak_checked_out.get(name),
                "size": s.size,
                "why": s.why,
                "missing": list(s.missing),
                "models": [
                    {
                        "name": m.name,
                        "pool_size": m.pool_size,
                        "predicted_rps": m.predicted_rps,
                        "formula": m.formula,
                        "note": m.note,
                        "inputs": dict(m.inputs),
                    }
                    for m in s.models
                ],
            }
            for name, s in sizings.items()
        },
        "missing": list(window.missing) + list(observation.missing_series),
        "warnings": warnings(observation),
        "snippet": snippet,
    }


def observe_snippet(
    observation: Observation,
    sizings: Mapping[str, PoolSizing],
    *,
    p95_slo_ms: float | None = None,
    fleet: Fleet | None = None,
    idle_timeout_s: float | None = None,
) -> str | None:
    """The same paste-ready snippet as `recommend`, for the sizes observed (None: no size)."""
    main = sizings.get(SQLALCHEMY)
    if main is None or main.size is None:
        return None
    direct = sizings.get(ASYNCPG)
    pg_size: int | None = None
    pg_why = ""
    if direct is not None:
        pg_size = direct.size if direct.size is not None else DEFAULT_UNUSED_PG_POOL
        pg_why = direct.why if direct.size is not None else f"{direct.why}; kept small"
    window = observation.window
    header = [
        f"# poolbench recommendation from observing {observation.url} for "
        f"{window.window_s:.0f} s ({window.source})",
        f"# measured: {num(window.rps)} rps, {num(window.inflight_mean, 2)} requests in flight "
        f"on average, {num(window.statements_per_request, 2)} statements/request, "
        f"hold {num(main.figures.hold_time_mean_ms)} ms (cv {num(main.figures.hold_time_cv, 2)}), "
        f"acquire wait mean {num(main.figures.acquire_wait_mean_ms, 2)} ms",
        f"# SLO: p95 <= {p95_slo_ms:g} ms (sets pool_timeout)"
        if p95_slo_ms is not None
        else "# SLO: none given (--slo-p95-ms)",
    ]
    config = PoolConfig(
        pool_size=main.size,
        # Steady production load: overflow connections would only churn (see the risks).
        max_overflow=0,
        pool_why=main.why,
        pg_max_size=pg_size,
        pg_why=pg_why,
        p95_slo_ms=p95_slo_ms,
        fleet=fleet,
        warnings=warnings(observation),
    )
    return config_snippet(header, config, idle_timeout_s)
