"""Pool sizing models: pure functions with small frozen results, no I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SEED_FACTOR = 1.5
DEFAULT_HEADROOM = 1.2
DEFAULT_P99_WAIT_MS = 10.0
DEFAULT_TOLERANCE = 0.05
USL_MIN_POINTS = 6
# Erlang C search stops here: a pool this large is a sizing error in its own right.
ERLANG_MAX_SERVERS = 10_000


@dataclass(frozen=True, kw_only=True)
class ModelResult:
    """A model's recommended pool size (connections) and the throughput it predicts there."""

    name: str
    pool_size: int | None
    predicted_rps: float | None
    formula: str
    note: str = ""
    # The figures the model used, by name (concurrency, hold_time_ms, target_rps, ...).
    inputs: Mapping[str, float] = field(default_factory=dict)


# --- 1. the seed formula -------------------------------------------------------------------


def seed_formula(concurrent_requests: float, queries_per_request: float) -> int:
    """Return `ceil(concurrent_requests / queries_per_request * 1.5)`, the folklore rule."""
    if queries_per_request <= 0:
        raise ValueError("queries_per_request must be > 0")
    return max(1, math.ceil(concurrent_requests / queries_per_request * SEED_FACTOR))


# --- 2. Little's law -----------------------------------------------------------------------


def busy_connections(rps: float, hold_time_ms: float) -> float:
    """Mean connections in use, L = lambda x W (arrival rate times mean hold time)."""
    return rps * hold_time_ms / 1000.0


def throughput_ceiling_rps(pool_size: float, hold_time_ms: float) -> float:
    """Most requests per second `pool_size` connections can serve: pool_size / hold_time."""
    if hold_time_ms <= 0:
        return math.inf
    return pool_size / (hold_time_ms / 1000.0)


def littles_pool(target_rps: float, hold_time_ms: float, headroom: float = DEFAULT_HEADROOM) -> int:
    """Connections to carry `target_rps` with `headroom`: ceil(rps x hold_time x headroom)."""
    return max(1, math.ceil(busy_connections(target_rps, hold_time_ms) * headroom - 1e-9))


def request_hold_time_ms(queries: float, per_query_ms: float, overhead_ms: float = 0.0) -> float:
    """Hold time of a session-per-request handler: every query plus the work in between."""
    return queries * per_query_ms + overhead_ms


def corrected_pool(
    target_rps: float,
    request_hold_time_ms: float,
    headroom: float = DEFAULT_HEADROOM,
    concurrency: float | None = None,
) -> int:
    """The corrected rule: ceil(target_rps x request hold time x headroom), capped at concurrency.

    With a session per request a connection is held for the whole request, so query count only
    enters through the hold time. No request holds two connections, so more connections than
    concurrent requests can never be busy.
    """
    pool = littles_pool(target_rps, request_hold_time_ms, headroom)
    if concurrency is not None and concurrency >= 1:
        pool = min(pool, math.ceil(concurrency))
    return pool


# --- 3. HikariCP ---------------------------------------------------------------------------


def hikari_pool(db_cores: int, effective_spindles: int = 0) -> int:
    """HikariCP's rule of thumb: db_cores * 2 + effective_spindles."""
    return max(1, db_cores * 2 + effective_spindles)


def deadlock_floor(max_threads: int, connections_per_task: int) -> int:
    """Smallest pool that cannot deadlock when each task holds `Cm` connections: Tn*(Cm-1)+1."""
    return max_threads * (connections_per_task - 1) + 1


# --- 4. Universal Scalability Law ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class UslFit:
    """Fitted USL coefficients and the peak they imply."""

    sigma: float
    kappa: float
    lam: float
    r2: float
    n_points: int
    max_n: float
    # inf when kappa is 0: no retrograde region, throughput still rises at every N.
    peak_n: float
    peak_rps: float

    def throughput(self, n: float | np.ndarray) -> float | np.ndarray:
        """Predicted throughput at concurrency n."""
        return usl_throughput(n, self.sigma, self.kappa, self.lam)

    def knee_n(self, tolerance: float = DEFAULT_TOLERANCE) -> int:
        """Smallest whole N whose predicted throughput is within `tolerance` of the peak."""
        top_n = self.peak_n if math.isfinite(self.peak_n) else self.max_n
        top_rps = float(self.throughput(top_n))
        n_values = np.arange(1, max(1, math.ceil(top_n)) + 1, dtype=float)
        ok = np.flatnonzero(self.throughput(n_values) >= (1 - tolerance) * top_rps)
        return int(n_values[ok[0]]) if ok.size else max(1, math.ceil(top_n))


def usl_throughput(
    n: float | np.ndarray, sigma: float, kappa: float, lam: float
) -> float | np.ndarray:
    """X(N) = lambda*N / (1 + sigma*(N-1) + kappa*N*(N-1))."""
    return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


def usl_peak(sigma: float, kappa: float) -> float:
    """N* = sqrt((1 - sigma) / kappa), inf when kappa is 0."""
    if kappa <= 0:
        return math.inf
    return math.sqrt((1 - sigma) / kappa)


def fit_usl(n: Sequence[float] | np.ndarray, rps: Sequence[float] | np.ndarray) -> UslFit:
    """Fit the USL to (N, throughput) points by bounded least squares; needs >= 6 distinct N."""
    from scipy.optimize import least_squares  # imported on use, like scipy.stats in poolbench.load

    n_arr = np.asarray(n, dtype=float)
    x_arr = np.asarray(rps, dtype=float)
    keep = np.isfinite(n_arr) & np.isfinite(x_arr) & (n_arr > 0)
    n_arr, x_arr = n_arr[keep], x_arr[keep]
    distinct = np.unique(n_arr).size
    if distinct < USL_MIN_POINTS:
        raise ValueError(
            f"not enough points: {distinct} distinct N, the USL needs {USL_MIN_POINTS}"
        )
    # lambda is roughly the throughput of one unit of concurrency; the best of X/N is a good start.
    lam0 = float(np.max(x_arr / n_arr))
    # Plain (absolute) residuals, like codahale/usl, so the fit reproduces its published example;
    # dividing by the largest X only keeps the problem well scaled.
    scale = max(float(np.max(np.abs(x_arr))), 1e-12)

    def residuals(p: np.ndarray) -> np.ndarray:
        return (usl_throughput(n_arr, p[0], p[1], p[2]) - x_arr) / scale

    best = None
    for sigma0, kappa0 in ((0.05, 1e-4), (0.3, 1e-3), (0.01, 1e-6), (0.8, 1e-2)):
        result = least_squares(
            residuals,
            x0=[sigma0, kappa0, lam0],
            bounds=([0.0, 0.0, 1e-12], [1.0, np.inf, np.inf]),
            x_scale="jac",
            method="trf",
        )
        if best is None or result.cost < best.cost:
            best = result
    assert best is not None
    sigma, kappa, lam = (float(v) for v in best.x)
    predicted = usl_throughput(n_arr, sigma, kappa, lam)
    ss_res = float(np.sum((x_arr - predicted) ** 2))
    ss_tot = float(np.sum((x_arr - x_arr.mean()) ** 2))
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else 1.0
    # Numerically tiny kappa means "no coherency cost"; call it 0 so the peak is reported as inf.
    if kappa < 1e-12:
        kappa = 0.0
    peak_n = usl_peak(sigma, kappa)
    peak_rps = (
        float(usl_throughput(peak_n, sigma, kappa, lam))
        if math.isfinite(peak_n)
        else (lam / sigma if sigma > 0 else math.inf)
    )
    return UslFit(
        sigma=sigma,
        kappa=kappa,
        lam=lam,
        r2=r2,
        n_points=int(n_arr.size),
        max_n=float(n_arr.max()),
        peak_n=peak_n,
        peak_rps=peak_rps,
    )


# --- 5. Erlang C ---------------------------------------------------------------------------


def erlang_b(servers: int, offered_erlangs: float) -> float:
    """Erlang B blocking probability by the stable recursion B(c) = aB(c-1) / (c + aB(c-1))."""
    blocking = 1.0
    for c in range(1, servers + 1):
        blocking = offered_erlangs * blocking / (c + offered_erlangs * blocking)
    return blocking


def erlang_c(servers: int, offered_erlangs: float) -> float:
    """Probability an arrival waits for a connection in M/M/c (1.0 when the pool is overloaded)."""
    if servers <= 0 or offered_erlangs >= servers:
        return 1.0
    if offered_erlangs <= 0:
        return 0.0
    blocking = erlang_b(servers, offered_erlangs)
    return servers * blocking / (servers - offered_erlangs * (1 - blocking))


def allen_cunneen(ca2: float = 1.0, cs2: float = 1.0) -> float:
    """The G/G/c correction (Ca^2 + Cs^2) / 2 to M/M/c waits (1 for Poisson arrivals and
    exponential holds; about 1/2 for Poisson arrivals and nearly constant holds)."""
    return (ca2 + cs2) / 2


def _drain_per_s(servers: int, arrival_rps: float, hold_time_ms: float) -> float | None:
    """c*mu - lambda, the rate a queue drains at; None when the pool is overloaded."""
    hold_s = hold_time_ms / 1000.0
    drain = servers / hold_s - arrival_rps
    return drain if arrival_rps * hold_s < servers else None


def wait_tail(
    servers: int, arrival_rps: float, hold_time_ms: float, wait_ms: float, variability: float = 1.0
) -> float:
    """P(W > t) = C(c, a) * exp(-(c*mu - lambda) * t / v).

    M/M/c for `variability` v = 1; G/G/c by Allen-Cunneen with v = (Ca^2 + Cs^2) / 2, which
    scales the whole wait distribution (its mean exactly as the approximation does).
    """
    drain = _drain_per_s(servers, arrival_rps, hold_time_ms)
    if drain is None:
        return 1.0
    c_wait = erlang_c(servers, arrival_rps * hold_time_ms / 1000.0)
    if variability <= 0:
        return 0.0 if wait_ms > 0 else c_wait
    return c_wait * math.exp(-drain * wait_ms / 1000.0 / variability)


def mean_wait_ms(
    servers: int, arrival_rps: float, hold_time_ms: float, variability: float = 1.0
) -> float:
    """Mean acquire wait Wq = C(c, a) / (c*mu - lambda) x v, in ms (inf when overloaded)."""
    drain = _drain_per_s(servers, arrival_rps, hold_time_ms)
    if drain is None:
        return math.inf
    return 1000.0 * erlang_c(servers, arrival_rps * hold_time_ms / 1000.0) / drain * variability


def wait_quantile_ms(
    servers: int,
    arrival_rps: float,
    hold_time_ms: float,
    quantile: float = 0.99,
    variability: float = 1.0,
) -> float:
    """The `quantile` of the acquire wait, in ms (inf when overloaded); see `wait_tail`."""
    drain = _drain_per_s(servers, arrival_rps, hold_time_ms)
    if drain is None:
        return math.inf
    c_wait = erlang_c(servers, arrival_rps * hold_time_ms / 1000.0)
    if c_wait <= 1 - quantile:
        return 0.0
    return 1000.0 * math.log(c_wait / (1 - quantile)) / drain * variability


def erlang_pool(
    arrival_rps: float,
    hold_time_ms: float,
    wait_ms: float = DEFAULT_P99_WAIT_MS,
    quantile: float = 0.99,
    variability: float = 1.0,
) -> int:
    """Smallest pool whose `quantile` acquire wait is at most `wait_ms` (see `wait_tail`)."""
    offered = arrival_rps * hold_time_ms / 1000.0
    servers = max(1, math.floor(offered) + 1)
    while servers < ERLANG_MAX_SERVERS:
        if wait_tail(servers, arrival_rps, hold_time_ms, wait_ms, variability) <= 1 - quantile:
            return servers
        servers += 1
    return servers


# --- all models side by side ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SizingInputs:
    """What the models need: measured in a reference run, or typed in for `poolbench size`."""

    concurrency: float
    queries_per_request: float
    hold_time_ms: float
    db_cores: int
    target_rps: float | None = None
    spindles: int = 0
    headroom: float = DEFAULT_HEADROOM
    # The most requests in flight at once: a second reading of "concurrent requests".
    peak_concurrency: float | None = None
    # Erlang C: the acquire wait allowed at `wait_quantile`. With an SLO, its p95 minus the
    # measured service time at the 0.95 quantile; without one, 10 ms at the 0.99 quantile.
    wait_budget_ms: float = DEFAULT_P99_WAIT_MS
    wait_quantile: float = 0.99
    # Coefficient of variation of the hold time (Cs); None: exponential (Cs = 1, M/M/c).
    hold_time_cv: float | None = None

    @property
    def offered_rps(self) -> float:
        """Target rate; without one, every concurrent request busy for its hold time."""
        if self.target_rps is not None and self.target_rps > 0:
            return self.target_rps
        return throughput_ceiling_rps(self.concurrency, self.hold_time_ms)

    @property
    def variability(self) -> float:
        """Allen-Cunneen's (Ca^2 + Cs^2) / 2 for Poisson arrivals (Ca^2 = 1)."""
        cs = 1.0 if self.hold_time_cv is None else self.hold_time_cv
        return allen_cunneen(1.0, cs * cs)


def _ceiling_rps(pool_size: int, inputs: SizingInputs) -> float:
    """Little's-law throughput of a pool, never above the offered load."""
    return min(throughput_ceiling_rps(pool_size, inputs.hold_time_ms), inputs.offered_rps)


def _seed(inputs: SizingInputs, concurrency: float, reading: str) -> ModelResult:
    seed = seed_formula(concurrency, inputs.queries_per_request)
    return ModelResult(
        name=f"seed formula ({reading})",
        pool_size=seed,
        predicted_rps=_ceiling_rps(seed, inputs),
        formula=f"ceil({concurrency:.1f} / {inputs.queries_per_request:g} x 1.5)",
        note="divides by queries per request: more queries, smaller pool",
        inputs={"concurrency": concurrency, "queries_per_request": inputs.queries_per_request},
    )


def _usl(usl: UslFit | None, usl_note: str, tolerance: float) -> ModelResult:
    if usl is None:
        return ModelResult(
            name="USL fit",
            pool_size=None,
            predicted_rps=None,
            formula="X(N) = lambda N / (1 + sigma (N-1) + kappa N (N-1))",
            note=usl_note or "no throughput-vs-pool-size points",
        )
    knee = usl.knee_n(tolerance)
    peak = "inf (no retrograde region)" if math.isinf(usl.peak_n) else f"{usl.peak_n:.1f}"
    return ModelResult(
        name="USL fit",
        pool_size=knee,
        predicted_rps=float(usl.throughput(knee)),
        formula=f"smallest N within {tolerance:.0%} of X(N*)",
        note=(
            f"sigma={usl.sigma:.4f} kappa={usl.kappa:.2e} lambda={usl.lam:.2f} "
            f"N*={peak} R2={usl.r2:.3f}"
        ),
        inputs={"capacity_points": float(usl.n_points)},
    )


def _erlang(inputs: SizingInputs) -> ModelResult:
    rate, hold = inputs.offered_rps, inputs.hold_time_ms
    budget, quantile, variability = inputs.wait_budget_ms, inputs.wait_quantile, inputs.variability
    erlang = erlang_pool(rate, hold, budget, quantile, variability)
    corrected = "" if variability == 1 else f", Allen-Cunneen x{variability:.2f}"
    return ModelResult(
        name="Erlang C",
        pool_size=erlang,
        predicted_rps=min(rate, throughput_ceiling_rps(erlang, hold)),
        formula=f"smallest c with P(wait > {budget:.1f} ms) <= {1 - quantile:.0%}{corrected}",
        note=(
            f"offered {busy_connections(rate, hold):.1f} Erlangs; "
            f"P(wait) = {erlang_c(erlang, busy_connections(rate, hold)):.3f}"
        ),
        inputs={
            "target_rps": rate,
            "hold_time_ms": hold,
            "wait_budget_ms": budget,
            "wait_quantile": quantile,
            "hold_time_cv": 1.0 if inputs.hold_time_cv is None else inputs.hold_time_cv,
        },
    )


def size_all(
    inputs: SizingInputs,
    usl: UslFit | None = None,
    usl_note: str = "",
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    corrected: bool = False,
) -> list[ModelResult]:
    """Every model's recommendation for the same inputs.

    `corrected` adds the no-benchmark corrected rule (`poolbench size`): with measured inputs
    it is only Little's law again.
    """
    rate, hold = inputs.offered_rps, inputs.hold_time_ms
    little = littles_pool(rate, hold, inputs.headroom)
    hikari = hikari_pool(inputs.db_cores, inputs.spindles)
    results = [_seed(inputs, inputs.concurrency, "mean in flight")]
    if inputs.peak_concurrency is not None and inputs.peak_concurrency != inputs.concurrency:
        results.append(_seed(inputs, inputs.peak_concurrency, "peak in flight"))
    results += [
        ModelResult(
            name="Little's law",
            pool_size=little,
            predicted_rps=_ceiling_rps(little, inputs),
            formula=f"ceil({rate:.1f} rps x {hold:.1f} ms x {inputs.headroom:g})",
            note=f"busy connections L = {busy_connections(rate, hold):.1f}",
            inputs={"target_rps": rate, "hold_time_ms": hold, "headroom": inputs.headroom},
        ),
        ModelResult(
            name="HikariCP",
            pool_size=hikari,
            predicted_rps=_ceiling_rps(hikari, inputs),
            formula=f"{inputs.db_cores} cores x 2 + {inputs.spindles} spindles",
            note="assumes CPU-bound queries on the database; blind to hold time",
            inputs={"db_cores": inputs.db_cores, "spindles": inputs.spindles},
        ),
        _usl(usl, usl_note, tolerance),
        _erlang(inputs),
    ]
    if corrected:
        pool = corrected_pool(rate, hold, inputs.headroom, inputs.concurrency)
        results.append(
            ModelResult(
                name="corrected formula",
                pool_size=pool,
                predicted_rps=_ceiling_rps(pool, inputs),
                formula=(
                    f"min(ceil({rate:.1f} rps x {hold:.1f} ms x {inputs.headroom:g}), "
                    f"{inputs.concurrency:g} concurrent)"
                ),
                note="hold time is the whole request; query count enters only through it",
                inputs={
                    "target_rps": rate,
                    "hold_time_ms": hold,
                    "headroom": inputs.headroom,
                    "concurrency": inputs.concurrency,
                },
            )
        )
    return results


def seed_formula_explanation(
    concurrency: float, queries_per_request: float, hold_time_ms: float, target_rps: float
) -> str:
    """Plain words on why the seed formula misleads, with this workload's numbers."""
    seed = seed_formula(concurrency, queries_per_request)
    busy = busy_connections(target_rps, hold_time_ms)
    return (
        f"The seed formula divides {concurrency:g} concurrent requests by {queries_per_request:g} "
        f"queries per request and multiplies by 1.5, giving {seed}. With a session per request, "
        f"a request holds its connection from the first query until commit, so the hold time "
        f"({hold_time_ms:.1f} ms here) grows with the number of queries. Little's law says busy "
        f"connections = throughput x hold time = {target_rps:.1f} rps x {hold_time_ms:.1f} ms = "
        f"{busy:.1f}: more queries per request need more connections, not fewer. "
        + _seed_verdict(seed, busy)
    )


def _seed_verdict(seed: int, busy: float) -> str:
    """Say whether, for this workload, the seed formula over- or under-sizes the pool."""
    if seed > busy * 2:
        return (
            f"Here it over-sizes the pool ({seed} against {busy:.1f} busy): it ignores how "
            f"briefly each connection is held, so the extra connections sit idle while costing "
            f"server memory and fleet budget. It shrinks the pool exactly when requests hold "
            f"connections longest."
        )
    if seed < busy:
        return (
            f"Here it under-sizes the pool ({seed} against {busy:.1f} busy): requests queue for "
            f"a connection and the acquire wait adds straight to latency."
        )
    return (
        f"Here it lands near the need ({seed} against {busy:.1f} busy) only by accident; it "
        f"shrinks the pool exactly when requests hold connections longest."
    )
