"""Blocking work moved off the event loop with asyncio.to_thread."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import SettingsDep
from ..schemas import CpuOut

router = APIRouter(tags=["cpu"])

MAX_WORK_MS = 10_000.0
# hashlib releases the GIL for inputs over 2 KiB, so this is real CPU work in the worker thread
# that does not stall the event loop.
_BLOCK = b"\x5a" * 65_536


def burn_cpu(seconds: float) -> int:
    """Hash blocks until `seconds` of wall time have passed; return the rounds done."""
    deadline = time.perf_counter() + seconds
    rounds = 0
    while True:
        hashlib.sha256(_BLOCK).digest()
        rounds += 1
        if time.perf_counter() >= deadline:
            return rounds


@router.get("/cpu")
async def cpu(
    settings: SettingsDep,
    work_ms: Annotated[float | None, Query(ge=0, le=MAX_WORK_MS)] = None,
) -> CpuOut:
    """Run blocking work in a thread (default TO_THREAD_WORK_MS)."""
    work = settings.to_thread_work_ms if work_ms is None else work_ms
    started = time.perf_counter()
    rounds = await asyncio.to_thread(burn_cpu, work / 1000)
    return CpuOut(
        work_ms=work, elapsed_ms=round((time.perf_counter() - started) * 1000, 2), rounds=rounds
    )
