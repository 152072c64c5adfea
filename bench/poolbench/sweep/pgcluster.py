"""A throwaway cluster's directory: its owner file, stopping its postmaster, stale-cluster clean-up.

The owner file is written by the process that makes a cluster and read by later starts, which
stop and delete the clusters whose owner died without cleaning up (a SIGKILLed sweep's).
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from pathlib import Path

import psutil

from poolbench.sweep.procgroup import Leader, stop_group

CLUSTER_PREFIX = "poolbench-pg-"
OWNER_FILE = "owner.json"  # {"pid": ..., "started": ...} of the process that made the cluster
# Postgres's fast shutdown: sessions are cut, the postmaster exits once its backends have.
POSTMASTER_STOP_SIGNAL = signal.SIGINT
DEFAULT_STOP_TIMEOUT_S = 15.0
# psutil derives a start time from the boot time, which the kernel may report a second apart.
_START_TIME_TOLERANCE_S = 2.0


def stop_postmaster(postmaster: Leader) -> None:
    """Fast shutdown, then SIGKILL to its group (we start it as a session leader)."""
    stop_group(postmaster, POSTMASTER_STOP_SIGNAL, DEFAULT_STOP_TIMEOUT_S)


def write_owner(cluster_dir: Path) -> None:
    """Record this process as the cluster's owner."""
    me = psutil.Process()
    path = cluster_dir / OWNER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": me.pid, "started": me.create_time()}))
    tmp.rename(path)  # a reader sees the whole file or none


def _owner_alive(cluster_dir: Path) -> bool:
    """False only when the owner file proves its process gone; unknown counts as alive."""
    try:
        owner = json.loads((cluster_dir / OWNER_FILE).read_text())
        pid, started = int(owner["pid"]), float(owner["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return True  # an older poolbench's cluster, or one being created right now
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - started) < _START_TIME_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _stop_stale_postmaster(data_dir: Path) -> None:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        postmaster = psutil.Process(pid)
        # The pid may have been reused: only a postgres serving this data directory is ours.
        if str(data_dir) not in postmaster.cmdline():
            return
    except (OSError, ValueError, psutil.Error):
        return
    stop_postmaster(postmaster)


def remove_stale_clusters(tmp_root: Path | None = None) -> list[Path]:
    """Stop and delete the clusters whose owner process is dead (a SIGKILLed sweep's).

    Clusters of live owners, and any without an owner file, are left alone.
    """
    root = tmp_root or Path(tempfile.gettempdir())
    removed = []
    for cluster_dir in sorted(root.glob(CLUSTER_PREFIX + "*")):
        if not cluster_dir.is_dir() or cluster_dir.is_symlink() or _owner_alive(cluster_dir):
            continue
        _stop_stale_postmaster(cluster_dir / "data")
        shutil.rmtree(cluster_dir, ignore_errors=True)
        removed.append(cluster_dir)
    return removed
