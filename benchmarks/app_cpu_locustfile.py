"""Closed-loop reads of one user by id, counted inside a fixed window (benchmarks/app_cpu.py).

The benchmark passes the window as wall-clock times and where to write the counts; a request
counts when its response arrives inside the window.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task

PATH_TEMPLATE = os.environ["APP_CPU_PATH"]  # e.g. "/users/{id}"
SEED_USERS = int(os.environ["APP_CPU_SEED_USERS"])
WINDOW_START = float(os.environ["APP_CPU_WINDOW_START"])
WINDOW_END = float(os.environ["APP_CPU_WINDOW_END"])
OUT = Path(os.environ["APP_CPU_OUT"])

_counts = {"ok": 0, "errors": 0, "errors_outside": 0, "first_response": 0.0}


@events.request.add_listener
def _count(response: Any, exception: BaseException | None, **_: Any) -> None:
    now = time.time()
    if not _counts["first_response"]:
        _counts["first_response"] = now
    failed = exception is not None or response is None or response.status_code != 200
    if WINDOW_START <= now < WINDOW_END:
        _counts["errors" if failed else "ok"] += 1
    elif failed:
        _counts["errors_outside"] += 1


@events.quitting.add_listener
def _write(**_: Any) -> None:
    OUT.write_text(json.dumps(_counts))


class ReaderUser(FastHttpUser):
    """One closed-loop client: read a random seeded user, then the next at once."""

    wait_time = constant(0)

    @task
    def read_user(self) -> None:
        user_id = random.randint(1, SEED_USERS)
        self.client.get(PATH_TEMPLATE.format(id=user_id), name=PATH_TEMPLATE)
