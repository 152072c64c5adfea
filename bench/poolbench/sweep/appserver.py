"""Run the sample app as N uvicorn worker processes sharing one listening socket.

`python -m poolbench.sweep.appserver --port P --private-ports p0,p1,...`: this process is worker 0.
It binds the shared socket on 127.0.0.1:P (what Locust loads, as `uvicorn --workers N` would:
one accept queue, every worker accepting from it), starts workers 1..N-1 with that socket's fd
(`--fd`), and each worker also listens on its own loopback port p_i, so the runner can reset and
read the telemetry of every process instead of whichever one a request lands on. All workers are
in worker 0's process group and tree: stopping the group stops them, and CPU sampling of the
tree covers them. A worker that exits on its own takes the others down (exit code 1), so a run
never silently measures fewer processes than it says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import Sequence

import uvicorn

from poolbench.shipped import SAMPLE_APP_ASGI
from poolbench.sweep.procgroup import die_with_parent

DEFAULT_BACKLOG = 2048  # uvicorn's default
DEFAULT_CHILD_STOP_S = 15.0
WATCH_INTERVAL_S = 0.5


def _private_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(DEFAULT_BACKLOG)
    return sock


def _server(log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(
        SAMPLE_APP_ASGI,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        backlog=DEFAULT_BACKLOG,
    )
    return uvicorn.Server(config)


async def _watch(server: uvicorn.Server, children: list[subprocess.Popen[bytes]]) -> None:
    """Stop worker 0 when another worker exits on its own."""
    while not server.should_exit:
        if any(child.poll() is not None for child in children):
            exited = [c.returncode for c in children if c.returncode is not None]
            print(f"appserver: a worker exited ({exited}); stopping all", file=sys.stderr)
            server.should_exit = True
            return
        await asyncio.sleep(WATCH_INTERVAL_S)


async def _serve(
    server: uvicorn.Server, sockets: list[socket.socket], children: list[subprocess.Popen[bytes]]
) -> None:
    watcher = asyncio.create_task(_watch(server, children)) if children else None
    try:
        await server.serve(sockets=sockets)
    finally:
        if watcher is not None:
            watcher.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="worker 0: bind the shared socket here")
    parser.add_argument("--fd", type=int, help="workers 1..N-1: the shared socket's fd")
    parser.add_argument("--private-ports", default="", help="comma-separated, one per worker")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.private_ports.split(",") if p]
    if (args.port is None) == (args.fd is None):
        parser.error("give exactly one of --port (worker 0) and --fd")
    children: list[subprocess.Popen[bytes]] = []
    if args.fd is not None:
        shared = socket.socket(fileno=args.fd)
    else:
        shared = _private_socket(args.port)
        shared.set_inheritable(True)
        for port in ports[1:]:
            argv_child = [sys.executable, "-m", "poolbench.sweep.appserver"]
            argv_child += ["--fd", str(shared.fileno()), "--private-ports", str(port)]
            children.append(
                subprocess.Popen(
                    [*argv_child, "--log-level", args.log_level],
                    pass_fds=(shared.fileno(),),
                    preexec_fn=die_with_parent,
                )
            )
    server = _server(args.log_level)
    failed = False
    try:
        private = [_private_socket(ports[0])] if ports else []
        # uvicorn's own loop choice (uvloop when installed), as `uvicorn` on the command line.
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(_serve(server, [shared, *private], children))
    finally:
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=DEFAULT_CHILD_STOP_S)
            if child.poll() is None:
                child.kill()
                child.wait()
            failed = failed or child.returncode not in (0, -15)
    return 1 if failed or not server.started else 0


if __name__ == "__main__":
    sys.exit(main())
