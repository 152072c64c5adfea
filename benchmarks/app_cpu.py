"""Server CPU per request: the sample app against bare FastAPI and Starlette baselines (issue 12).

    .venv/bin/python benchmarks/app_cpu.py [--seconds 5] [--rounds 3]

One throwaway Postgres, seeded once. Each server in turn runs as one uvicorn worker on a
loopback port (pool 10, no simulated latency) and is driven by a real Locust process: 16
closed-loop FastHttpUsers reading random users by id. Over a fixed window the server process's
CPU time (user + system, /proc through psutil) is divided by the responses with status 200
that arrived in the window (counted by Locust); any error fails the run. Servers alternate over
rounds; the table gives the median and range per server and the ratios against the targets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from poolbench.sample_app.config import settings_env  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from poolbench.sweep.commands import python_env, seed_argv  # noqa: E402
from poolbench.sweep.pg import PostgresServer, free_port  # noqa: E402
from poolbench.sweep.procs import Children, supervised  # noqa: E402

LOCUSTFILE = Path(__file__).resolve().parent / "app_cpu_locustfile.py"
USERS = 16
POOL_SIZE = 10
SEED_USERS = 1000
START_TIMEOUT_S = 30.0
LOCUST_START_ALLOWANCE_S = 3.0
ORM_TARGET = 1.1
RAW_TARGET = 1.5


@dataclass(frozen=True, kw_only=True)
class Server:
    """One server under test: its ASGI app, the path it serves, extra settings."""

    name: str
    app: str
    path: str
    env: dict[str, str] = field(default_factory=dict)


SAMPLE_ORM = Server(name="sample app ORM", app="poolbench.sample_app.main:app", path="/users/{id}")
BARE_ORM = Server(
    name="bare FastAPI + SQLAlchemy",
    app="benchmarks.bare.fastapi_sqlalchemy:app",
    path="/users/{id}",
)
SAMPLE_RAW = Server(
    name="sample app raw", app="poolbench.sample_app.main:app", path="/raw/users/{id}"
)
BARE_RAW = Server(
    name="bare Starlette + asyncpg", app="benchmarks.bare.starlette_asyncpg:app", path="/users/{id}"
)
SAMPLE_ORM_NO_PING = Server(
    name="sample app ORM, pre-ping off",
    app="poolbench.sample_app.main:app",
    path="/users/{id}",
    env=settings_env(db_pool_pre_ping=False),
)
SERVERS = (SAMPLE_ORM, BARE_ORM, SAMPLE_RAW, BARE_RAW, SAMPLE_ORM_NO_PING)


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One window of one server."""

    cpu_us_per_request: float
    rps: float
    server_cpu_pct: float
    locust_cpu_pct: float
    host_cpu_pct: float


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_serving(url: str, child_alive: object) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _get_ok(url):
            return
        if callable(child_alive) and not child_alive():
            raise RuntimeError(f"server exited before serving {url}")
        time.sleep(0.2)
    raise RuntimeError(f"no 200 from {url} within {START_TIMEOUT_S:g} s")


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _host_busy_s() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole host, every core."""
    times = psutil.cpu_times()
    total = float(sum(times))
    return total - times.idle - getattr(times, "iowait", 0.0), total


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def measure(
    children: Children,
    server: Server,
    *,
    database_url: str,
    warmup_s: float,
    seconds: float,
    work: Path,
) -> Measurement:
    """Start the server, drive it with Locust, and return its CPU per request in the window."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app_env = settings_env(
        database_url=database_url,
        db_pool_size=POOL_SIZE,
        db_max_overflow=0,
        sim_query_latency_ms=0.0,
        log_level="WARNING",
        access_log=False,
        create_schema=False,
    )
    uvicorn = children.spawn(
        server.name,
        [sys.executable, "-m", "uvicorn", server.app, "--host", "127.0.0.1", "--port", str(port)]
        + ["--workers", "1", "--log-level", "warning", "--no-access-log"],
        env=python_env({**app_env, **server.env}),
        cwd=ROOT,
        log_path=work / "server.log",
    )
    try:
        _wait_serving(base + server.path.format(id=1), uvicorn.alive)
        start = time.time() + LOCUST_START_ALLOWANCE_S + warmup_s
        end = start + seconds
        out = work / "counts.json"
        out.unlink(missing_ok=True)
        run_s = round(end - time.time() + 1)
        locust = children.spawn(
            "locust",
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
            + ["-u", str(USERS), "-r", str(USERS), "-t", f"{run_s}s", "--host", base]
            + ["--only-summary", "--loglevel", "WARNING"],
            env=python_env(
                {
                    "APP_CPU_PATH": server.path,
                    "APP_CPU_SEED_USERS": str(SEED_USERS),
                    "APP_CPU_WINDOW_START": repr(start),
                    "APP_CPU_WINDOW_END": repr(end),
                    "APP_CPU_OUT": str(out),
                }
            ),
            cwd=ROOT,
            log_path=work / "locust.log",
        )
        app_proc, locust_proc = psutil.Process(uvicorn.pid), psutil.Process(locust.pid)
        _sleep_until(start)
        app_before, locust_before, wall_before = _cpu_s(app_proc), _cpu_s(locust_proc), time.time()
        host_before = _host_busy_s()
        _sleep_until(end)
        app_after, locust_after, wall_after = _cpu_s(app_proc), _cpu_s(locust_proc), time.time()
        host_after = _host_busy_s()
        if children.wait(locust, run_s + 30) is None:
            raise RuntimeError(f"locust did not finish: {locust.log_tail()}")
        children.stop(locust)
        counts = json.loads(out.read_text())
    finally:
        children.stop(uvicorn)
    if counts["errors"] or counts["errors_outside"]:
        raise RuntimeError(f"{server.name}: {counts} (errors): {uvicorn.log_tail()}")
    if not counts["first_response"] or counts["first_response"] > start - warmup_s / 2:
        raise RuntimeError(f"{server.name}: Locust started too late to warm up ({counts})")
    if counts["ok"] == 0:
        raise RuntimeError(f"{server.name}: no request completed in the window")
    wall = wall_after - wall_before
    return Measurement(
        cpu_us_per_request=(app_after - app_before) / counts["ok"] * 1e6,
        rps=counts["ok"] / seconds,
        server_cpu_pct=(app_after - app_before) / wall * 100,
        locust_cpu_pct=(locust_after - locust_before) / wall * 100,
        host_cpu_pct=(host_after[0] - host_before[0]) / (host_after[1] - host_before[1]) * 100,
    )


def seed(children: Children, database_url: str, work: Path) -> None:
    """Seed the sample app's schema and users (`python -m poolbench.sample_app.seed`)."""
    child = children.spawn(
        "seed",
        seed_argv(SEED_USERS),
        env=python_env(settings_env(database_url=database_url, log_level="WARNING")),
        cwd=ROOT,
        log_path=work / "seed.log",
    )
    code = children.wait(child, 120)
    children.stop(child)
    if code != 0:
        raise RuntimeError(f"seeding failed ({code=}): {child.log_tail()}")


def _median(values: list[float]) -> float:
    return statistics.median(values)


def render(results: dict[str, list[Measurement]], *, seconds: float, rounds: int) -> str:
    """The Markdown table: per server median and range, then the ratios against the targets."""
    lines = [
        f"Server CPU per request, `GET /users/{{id}}`: 1 uvicorn worker, pool {POOL_SIZE}, no "
        f"simulated latency, {USERS} closed-loop users (Locust FastHttpUser), {seconds:g} s "
        f"window, {rounds} rounds. Machine: {machine()}. Server and "
        "Locust CPU % are of one core; host CPU % is of every core (server, Locust, Postgres "
        "and anything else running): server CPU well under 100 % means the host was contended.",
        "",
        "| server | CPU per request, median (us) | range (us) | rps, median "
        "| server CPU % | Locust CPU % | host CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        cpu = [m.cpu_us_per_request for m in runs]
        lines.append(
            f"| {name} | {_median(cpu):.0f} | {min(cpu):.0f}-{max(cpu):.0f} "
            f"| {_median([m.rps for m in runs]):.0f} "
            f"| {_median([m.server_cpu_pct for m in runs]):.0f} "
            f"| {_median([m.locust_cpu_pct for m in runs]):.0f} "
            f"| {_median([m.host_cpu_pct for m in runs]):.0f} |"
        )

    def med(server: Server) -> float:
        return _median([m.cpu_us_per_request for m in results[server.name]])

    orm = med(SAMPLE_ORM) / med(BARE_ORM)
    raw = med(SAMPLE_RAW) / med(BARE_RAW)
    ping = med(SAMPLE_ORM) - med(SAMPLE_ORM_NO_PING)
    lines += [
        "",
        "| ratio | measured | target | met |",
        "|---|---:|---:|---|",
        f"| sample app ORM / bare FastAPI + SQLAlchemy | {orm:.2f}x | <= {ORM_TARGET}x "
        f"| {'yes' if orm <= ORM_TARGET else 'NO'} |",
        f"| sample app raw / bare Starlette + asyncpg | {raw:.2f}x | <= {RAW_TARGET}x "
        f"| {'yes' if raw <= RAW_TARGET else 'NO'} |",
        "",
        f"pool_pre_ping's cost on the ORM path: {ping:.0f} us per request "
        f"({ping / med(SAMPLE_ORM) * 100:.0f}% of the sample app's ORM path).",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per run")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="load before the window")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server, alternating")
    args = parser.parse_args()
    results: dict[str, list[Measurement]] = {server.name: [] for server in SERVERS}
    with tempfile.TemporaryDirectory(prefix="poolbench-app-cpu-") as tmp, supervised() as children:
        work = Path(tmp)
        postgres = PostgresServer()
        children.defer(postgres.stop)
        database_url = postgres.start().database.sqlalchemy_url
        seed(children, database_url, work)
        for round_ in range(args.rounds):
            for server in SERVERS:
                m = measure(
                    children,
                    server,
                    database_url=database_url,
                    warmup_s=args.warmup_s,
                    seconds=args.seconds,
                    work=work,
                )
                results[server.name].append(m)
                print(
                    f"round {round_ + 1}: {server.name}: {m.cpu_us_per_request:.0f} us/request, "
                    f"{m.rps:.0f} rps, server {m.server_cpu_pct:.0f}% CPU",
                    file=sys.stderr,
                )
    print(render(results, seconds=args.seconds, rounds=args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
