"""Locust's capacity as a load generator: requests per Locust CPU-second (issue 12, item 4).

Run from the repository root: `.venv/bin/python benchmarks/locust_capacity.py` (about 2 minutes;
on a shared machine under `flock /tmp/poolbench-cpu.lock`). Real headless Locust processes
(FastHttpUser, closed loop with no wait, or the project's open model) load a trivially cheap
loopback HTTP server (raw asyncio, a fixed `{}` answer on keep-alive connections, in a process of
its own) for a measured window after a warm-up. Per case it prints the requests the server
answered in the window, divided by the CPU-seconds (utime + stime) of every Locust process
(master and workers), the busiest Locust process's and the server's CPU in percent of a core,
and the whole host's: a case whose server or host is near its limit measured them, not Locust.

Cases: a plain FastHttpUser at 1 and 2 Locust processes (`--processes 2`: a master and two
workers), then the scenario user sweeps run (`scenarios/single_query.py`, `PoolbenchUser`, which
logs every request for the exact window figures) in a closed loop at 1 and 2 processes, and in the
open model at the default sweep's 100 requests/s and at 1,000 requests/s. The sweep runner's
choice of Locust processes (`bench/sweep/loadgen.py`) uses the open model's figure at 1,000/s.
Everything started is stopped; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, machine  # noqa: E402
from poolbench.locustfiles import scenario_path  # noqa: E402
from poolbench.scenario_env import ScenarioEnv  # noqa: E402
from poolbench.sweep.commands import local_processes_args, python_env  # noqa: E402
from poolbench.sweep.pg import free_port  # noqa: E402
from poolbench.sweep.samplers import HostCpu, ProcessTree  # noqa: E402

WARMUP_S = 4.0
WINDOW_S = 8.0
CLOSED_USERS = 32
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
COUNT_PATH = b"/__count"
PLAIN_LOCUSTFILE = '''\
from locust import FastHttpUser, constant, task


class PlainUser(FastHttpUser):
    """A bare FastHttpUser: one GET per task, no wait, no bookkeeping."""

    wait_time = constant(0)

    @task
    def get_user(self) -> None:
        self.client.get("/users/1", name="/users/[id]")
'''


# --- the server ---------------------------------------------------------------------------


def serve(port: int) -> None:
    """Answer every GET with `{}` (keep-alive); GET /__count returns the requests answered."""
    answered = 0
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    class Http(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            nonlocal answered
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
                if head.split(b" ", 2)[1:2] == [COUNT_PATH]:
                    body = str(answered).encode()
                    self.transport.write(  # type: ignore[attr-defined]
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                else:
                    answered += 1
                    self.transport.write(ok)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def answered(url: str) -> int:
    with urllib.request.urlopen(url + COUNT_PATH.decode(), timeout=5) as response:
        return int(response.read())


def wait_listening(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            answered(url)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not listen at {url}")


# --- the cases ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    user: str  # "plain" or "scenario"
    processes: int
    users: int
    open_rps: float = 0.0  # per user; 0 = closed loop

    @property
    def offered(self) -> str:
        return f"{self.users * self.open_rps:g}/s" if self.open_rps else "closed, no wait"


@dataclass(frozen=True, kw_only=True)
class Result:
    case: Case
    rps: float
    locust_cpu_s: float
    locust_busiest_pct: float
    server_pct: float
    host_pct: float

    @property
    def rps_per_cpu_s(self) -> float:
        return self.rps * WINDOW_S / self.locust_cpu_s if self.locust_cpu_s else float("nan")


CASES = (
    Case(name="FastHttpUser", user="plain", processes=1, users=CLOSED_USERS),
    Case(name="FastHttpUser", user="plain", processes=2, users=CLOSED_USERS),
    Case(name="PoolbenchUser single_query", user="scenario", processes=1, users=CLOSED_USERS),
    Case(name="PoolbenchUser single_query", user="scenario", processes=2, users=CLOSED_USERS),
    Case(name="PoolbenchUser single_query", user="scenario", processes=1, users=40, open_rps=2.5),
    Case(name="PoolbenchUser single_query", user="scenario", processes=1, users=100, open_rps=10),
)


def locust_command(case: Case, url: str, plain_file: Path) -> list[str]:
    file = plain_file if case.user == "plain" else scenario_path("single_query")
    argv = [sys.executable, "-m", "locust", "-f", str(file), "--headless"]
    argv += ["-u", str(case.users), "-r", str(case.users), "-t", f"{WARMUP_S + WINDOW_S + 2:g}s"]
    argv += ["--host", url, "--only-summary", "--loglevel", "WARNING"]
    return argv + local_processes_args(case.processes)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def measure(case: Case, url: str, server_pid: int, work: Path) -> Result:
    out_dir = work / f"{case.user}-{case.processes}-{case.users}-{case.open_rps:g}"
    out_dir.mkdir()
    scenario = ScenarioEnv(
        warmup_s=WARMUP_S, open_rps=case.open_rps, users=case.users, out_dir=out_dir
    )
    locust = subprocess.Popen(
        locust_command(case, url, work / "plain_locustfile.py"),
        env=python_env(scenario.to_env()),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(out_dir / "locust.log").open("wb"),
        start_new_session=True,
    )
    try:
        time.sleep(WARMUP_S)
        if locust.poll() is not None:
            raise RuntimeError(f"locust exited early: see {out_dir / 'locust.log'}")
        trees = ProcessTree(locust.pid), ProcessTree(server_pid)
        host = HostCpu()
        for sampler in (*trees, host):
            sampler.sample(first=True)
        before = answered(url)
        time.sleep(WINDOW_S)
        after = answered(url)
        for sampler in (*trees, host):
            sampler.sample()
    finally:
        stop(locust)
    locust_tree, server_tree = trees
    processes = locust_tree.max_processes
    expected = case.processes + (1 if case.processes > 1 else 0)  # a master and its workers
    if processes != expected:
        raise RuntimeError(f"{case}: {processes} Locust processes, expected {expected}")
    return Result(
        case=case,
        rps=(after - before) / WINDOW_S,
        locust_cpu_s=locust_tree.cpu_seconds(),
        locust_busiest_pct=locust_tree.busiest_process_cpu_seconds() / WINDOW_S * 100,
        server_pct=server_tree.cpu_seconds() / WINDOW_S * 100,
        host_pct=(host.busy_fraction() or 0.0) * 100,
    )


def table(results: list[Result]) -> str:
    lines = [
        f"Machine: {machine()}; window {WINDOW_S:g} s after {WARMUP_S:g} s warm-up, loopback.",
        "",
        "| user | Locust processes | load | rps | Locust CPU-s | requests / Locust CPU-s "
        "| busiest Locust % | server % | host % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.case
        lines.append(
            f"| {c.name} | {c.processes} | {c.offered} | {r.rps:.0f} | {r.locust_cpu_s:.2f} "
            f"| {r.rps_per_cpu_s:.0f} | {r.locust_busiest_pct:.0f} | {r.server_pct:.0f} "
            f"| {r.host_pct:.0f} |"
        )
    lines += [
        "",
        "Target: the sweep runner keeps every Locust process under Locust's 90 % CPU warning; "
        "its estimate uses the open-model figure at 1000/s (bench/sweep/loadgen.py "
        "LOCUST_RPS_PER_CPU_S).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], start_new_session=True
    )
    results = []
    try:
        wait_listening(url, server)
        with tempfile.TemporaryDirectory(prefix="locust-capacity-") as tmp:
            work = Path(tmp)
            (work / "plain_locustfile.py").write_text(PLAIN_LOCUSTFILE)
            for case in CASES:
                results.append(measure(case, url, server.pid, work))
                print(f"measured: {case.name}, {case.processes} process(es), {case.offered}")
    finally:
        stop(server)
    print(table(results))


if __name__ == "__main__":
    main()
