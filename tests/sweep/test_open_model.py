"""The open model: real Locust processes against a slow loopback HTTP server (no mocks).

A tiny stdlib asyncio server answers `GET /<any>` after `--latency-ms`, serving at most
`--max-concurrent` requests at once (the others queue), and reports at `GET /stats` how many
requests it received per path and its peak number of requests in flight (queued or served).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from poolbench.sweep.arrivals import window_figures

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

SERVER = r"""
import asyncio, json, sys
from urllib.parse import parse_qs, urlsplit

latency_s, max_concurrent = float(sys.argv[1]) / 1000, int(sys.argv[2])
stats = {"requests": 0, "paths": {}, "in_flight": 0, "peak_in_flight": 0}


async def answer(target, serving):
    url = urlsplit(target)
    if url.path == "/stats":
        return json.dumps(stats)
    stats["requests"] += 1
    stats["paths"][url.path] = stats["paths"].get(url.path, 0) + 1
    stats["in_flight"] += 1
    stats["peak_in_flight"] = max(stats["peak_in_flight"], stats["in_flight"])
    try:
        async with serving:
            await asyncio.sleep(latency_s)
    finally:
        stats["in_flight"] -= 1
    return "{}"


async def main():
    serving = asyncio.Semaphore(max_concurrent)

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode()
                body = (await answer(target, serving)).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""

# Two weighted tasks, so the open model's task choice can be checked against @task weights.
LOCUSTFILE = """
from locust import task

from poolbench.load import PoolbenchUser


class WorkUser(PoolbenchUser):
    @task(3)
    def get_a(self) -> None:
        self.client.get("/a")

    @task(1)
    def get_b(self) -> None:
        self.client.get("/b")
"""


class Server:
    """The slow server, in its own process."""

    def __init__(self, latency_ms: float, max_concurrent: int = 100_000) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(latency_ms), str(max_concurrent)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def stats(self) -> dict[str, Any]:
        with urlopen(f"{self.url}/stats", timeout=10) as response:
            return dict(json.load(response))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A slow server; `@pytest.mark.parametrize("server", [(latency_ms, K)], indirect=True)`."""
    latency_ms, max_concurrent = request.param
    srv = Server(latency_ms, max_concurrent)
    yield srv
    srv.stop()


@dataclass(frozen=True)
class Run:
    """One finished Locust run and its window's figures."""

    run_dir: Path
    start_epoch: float
    end_epoch: float
    wall_s: float
    log: str
    figures: dict[str, Any]

    @property
    def window_s(self) -> float:
        return self.end_epoch - self.start_epoch

    def p(self, q: int) -> float:
        """The window's latency q-th percentile (HDR, 3 significant digits)."""
        return float(self.figures["latency"][f"p{q}_ms"])

    def summary(self) -> dict[str, Any]:
        return dict(json.loads((self.run_dir / "summary.json").read_text()))


def run_locust(
    tmp_path: Path,
    host: str,
    *,
    users: int,
    run_time_s: float,
    open_rps: float,
    warmup_s: float = 1.0,
    max_inflight: int | None = None,
    processes: int | None = None,
) -> Run:
    """Run the two-task locustfile headless with the env the sweep runner sets."""
    run_dir = tmp_path / f"run-{time.monotonic_ns()}"
    run_dir.mkdir()
    locustfile = tmp_path / "work_locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLBENCH_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "POOLBENCH_OUT_DIR": str(run_dir),
        "POOLBENCH_WARMUP_S": f"{warmup_s:g}",
        "POOLBENCH_OPEN_RPS": f"{open_rps:g}",
    }
    if max_inflight is not None:
        env["POOLBENCH_MAX_INFLIGHT"] = str(max_inflight)
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless"]
    argv += ["-u", str(users), "-r", str(users), "-t", f"{run_time_s:g}s", "--host", host]
    argv += ["--only-summary"]
    if processes:
        argv += ["--processes", str(processes)]
    began = time.monotonic()
    result = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=run_time_s + 60
    )
    wall_s = time.monotonic() - began
    assert result.returncode == 0, result.stderr[-3000:]
    markers = {}
    for line in (run_dir / "window.jsonl").read_text().splitlines():
        marker = json.loads(line)
        markers[marker["event"]] = marker["epoch"]
    figures = window_figures(run_dir, markers["start"], markers["end"])
    return Run(run_dir, markers["start"], markers["end"], wall_s, result.stderr, figures)


def poisson_bounds(rate: float, window_s: float, sigmas: float = 4.0) -> tuple[float, float]:
    """Bounds on a Poisson count's rate over a window (normal approximation)."""
    expected = rate * window_s
    spread = sigmas * math.sqrt(expected)
    return (expected - spread) / window_s, (expected + spread) / window_s


@pytest.mark.parametrize("server", [(20, 100_000)], indirect=True)
def test_open_model_offers_users_times_rate(tmp_path: Path, server: Server) -> None:
    run = run_locust(tmp_path, server.url, users=4, run_time_s=6, open_rps=10)
    f = run.figures
    assert f["open_model"] and f["max_inflight"] == 1000
    low, high = poisson_bounds(4 * 10, run.window_s)
    assert low <= f["completed"] / run.window_s <= high, (f["completed"], run.window_s)
    assert f["failures"] == 0
    # Ample capacity: latency from the intended start is the server's 20 ms plus a little.
    assert 20 <= run.p(50) < 60
    assert f["schedule_lag_p95_ms"] is not None and 0 <= f["schedule_lag_p95_ms"] < 50
    assert f["dropped_arrivals"] == 0 and not f["cap_reached"]
    assert f["inflight_at_end"] <= 8  # 40 rps x 20 ms: about one in flight
    # @task(3) and @task(1): the open model keeps Locust's weights.
    paths = server.stats()["paths"]
    share_a = paths["/a"] / (paths["/a"] + paths["/b"])
    assert 0.6 < share_a < 0.9, paths
    summary = run.summary()
    assert summary["open_rps"] == 10 and summary["cap_reached"] is False


@pytest.mark.parametrize("server", [(500, 100_000)], indirect=True)
def test_open_model_keeps_sending_while_responses_are_slow(tmp_path: Path, server: Server) -> None:
    """2 users x 20 rps against 500 ms answers: ~20 requests in flight, 10x the users."""
    run = run_locust(tmp_path, server.url, users=2, run_time_s=6, open_rps=20)
    f = run.figures
    low, high = poisson_bounds(2 * 20, run.window_s)
    assert low <= f["sent"] / run.window_s <= high, (f["sent"], run.window_s)
    assert low <= f["completed"] / run.window_s <= high, (f["completed"], run.window_s)
    assert server.stats()["peak_in_flight"] >= 12  # a closed loop could never exceed 2
    # Latency from the intended start: the 500 ms answer, not a queue behind the users.
    assert 500 <= run.p(50) < 650
    assert run.p(95) < 800
    # Little's law: 40 rps x 0.5 s = 20 requests in flight when the window ends, counted.
    assert 8 <= f["inflight_at_end"] <= 40, f["inflight_at_end"]
    assert f["dropped_arrivals"] == 0


@pytest.mark.parametrize("server", [(500, 100_000)], indirect=True)
def test_closed_model_is_unchanged(tmp_path: Path, server: Server) -> None:
    """POOLBENCH_OPEN_RPS=0: each user waits for its answer, so in flight <= users."""
    run = run_locust(tmp_path, server.url, users=2, run_time_s=5, open_rps=0)
    f = run.figures
    assert not f["open_model"] and f["max_inflight"] is None
    assert server.stats()["peak_in_flight"] <= 2
    # 2 users / 0.5 s = 4 rps, latency the server's 500 ms.
    assert 3 <= f["completed"] / run.window_s <= 4.5
    assert 500 <= run.p(95) < 650
    assert f["schedule_lag_p95_ms"] is None
    assert f["dropped_arrivals"] == 0 and not f["cap_reached"]
    assert f["inflight_at_end"] <= 2
    assert run.summary()["max_inflight"] is None


@pytest.mark.parametrize("server", [(500, 100_000)], indirect=True)
def test_cap_drops_and_counts_arrivals(tmp_path: Path, server: Server) -> None:
    """POOLBENCH_MAX_INFLIGHT=5 where ~20 would be needed: arrivals are dropped and counted."""
    run = run_locust(tmp_path, server.url, users=2, run_time_s=5, open_rps=20, max_inflight=5)
    f = run.figures
    assert f["max_inflight"] == 5 and f["cap_reached"]
    assert server.stats()["peak_in_flight"] <= 5
    # At most 5 in flight for 0.5 s each: <= 10 rps get through, the rest of 40 rps is dropped.
    assert f["completed"] / run.window_s <= 11
    low, high = poisson_bounds(2 * 20, run.window_s)
    assert low <= (f["sent"] + f["dropped_arrivals"]) / run.window_s <= high
    assert f["dropped_arrivals"] / run.window_s >= 20
    assert 1 <= f["inflight_at_end"] <= 5
    assert "reached POOLBENCH_MAX_INFLIGHT" in run.log
    summary = run.summary()
    assert summary["cap_reached"] is True and summary["dropped_arrivals"] > 0


@pytest.mark.parametrize("server", [(60_000, 100_000)], indirect=True)
@pytest.mark.parametrize("open_rps", [5.0, 0.0], ids=["open", "closed"])
def test_requests_in_flight_at_the_end_are_counted(
    tmp_path: Path, server: Server, open_rps: float
) -> None:
    """Answers take 60 s, the run 3 s: nothing completes, every sent request is in flight."""
    run = run_locust(tmp_path, server.url, users=3, run_time_s=3, open_rps=open_rps, warmup_s=0)
    f = run.figures
    assert f["completed"] == 0
    assert run.wall_s < 30  # the run stops in bounded time, whatever is still in flight
    assert f["window_exact"] and f["inflight_at_end"] > 0
    if open_rps:
        low, _ = poisson_bounds(3 * open_rps, run.window_s)
        assert f["inflight_at_end"] >= low * run.window_s
    else:
        assert f["inflight_at_end"] == 3  # one per closed-loop user


def test_open_model_latency_grows_with_run_length_under_overload(tmp_path: Path) -> None:
    """2 at a time x 50 ms = 40 rps served, 80 rps offered: the queue grows by 40 a second.

    An arrival at t completes at about 2t, so latencies by the run's end T reach about T / 2;
    a closed loop against the same server stays near users / throughput. A fresh server per
    run: the killed requests of a run stay queued in the last one.
    """

    def p95_ms(users: int, run_time_s: float, open_rps: float) -> tuple[float, Run]:
        server = Server(latency_ms=50, max_concurrent=2)
        try:
            run = run_locust(
                tmp_path, server.url, users=users, run_time_s=run_time_s, open_rps=open_rps,
                warmup_s=0,
            )  # fmt: skip
        finally:
            server.stop()
        return float(run.p(95)), run

    short_p95, short = p95_ms(users=2, run_time_s=3, open_rps=40)
    long_p95, long = p95_ms(users=2, run_time_s=6, open_rps=40)
    assert short_p95 > 700, short_p95
    assert long_p95 > 1.5 * short_p95, (short_p95, long_p95)
    assert long.figures["inflight_at_end"] > short.figures["inflight_at_end"] > 50
    closed_p95, _ = p95_ms(users=4, run_time_s=6, open_rps=0)
    assert closed_p95 < 300, closed_p95  # 4 users / 40 rps = 100 ms


@pytest.mark.parametrize("server", [(20, 100_000)], indirect=True)
def test_open_model_in_distributed_mode(tmp_path: Path, server: Server) -> None:
    """--processes 2: each worker runs its users' arrivals; the files of all add up."""
    run = run_locust(tmp_path, server.url, users=4, run_time_s=6, open_rps=10, processes=2)
    f = run.figures
    # The master writes each worker's figures, sent at the window's end; none of its own.
    assert f["processes"] == 2 and f["window_exact"]
    low, high = poisson_bounds(4 * 10, run.window_s)
    assert low <= f["completed"] / run.window_s <= high, (f["completed"], run.window_s)
    assert 20 <= run.p(50) < 60
    summary = run.summary()
    assert summary["distributed"] and summary["cap_reached"] is None
