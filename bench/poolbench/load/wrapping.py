"""A user's own locustfile in the open model: its User classes with `OpenArrivals` mixed in.

Locust runs `own_locustfile.py`, which imports the user's file (`POOLBENCH_LOCUSTFILE`) as Locust
itself would and hands Locust its classes. In a closed loop they are handed over as they are; in
the open model each concrete User class is subclassed, under its own name, with `OpenArrivals`
first: every simulated client (one per Locust user, so a bounded set) runs the class's `on_start`
once, e.g. a login, and then starts one of the class's tasks, weights kept, at each of its Poisson
arrivals, timed from the intended start. Load shapes in the file are handed over unchanged.

A file the open model cannot run is refused with a reason (`Unwrappable`); the spec check runs
`python -m poolbench.load.wrapping FILE` so that the reason comes before the sweep starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from locust import FastHttpUser, HttpUser, TaskSet, User
from locust.util.load_locustfile import load_locustfile

from poolbench.load.open_model import OpenArrivals, open_model_concurrency
from poolbench.load.scenario_data import SETTINGS


class Unwrappable(Exception):
    """The open model cannot run this locustfile's users; the message says why."""


def wrap(user_classes: dict[str, type[User]]) -> dict[str, type[User]]:
    """Each class with `OpenArrivals` mixed in (a PoolbenchUser already has it)."""
    if not user_classes:
        raise Unwrappable("it defines no Locust user class")
    return {name: _wrapped(cls) for name, cls in user_classes.items()}


def _wrapped(cls: type[User]) -> type[User]:
    if issubclass(cls, OpenArrivals):
        return cls
    name = cls.__name__
    if not issubclass(cls, HttpUser | FastHttpUser):
        raise Unwrappable(
            f"{name} is not an HttpUser or FastHttpUser: the open model times requests from "
            "their intended start through Locust's HTTP clients"
        )
    if cls.run is not User.run:
        raise Unwrappable(f"{name} defines its own run(), which the open model replaces")
    if not cls.tasks:
        raise Unwrappable(f"{name} has no tasks")
    for task in cls.tasks:
        if isinstance(task, type) and issubclass(task, TaskSet):
            raise Unwrappable(
                f"{name}'s task {task.__name__} is a TaskSet, which runs a closed loop of its own; "
                "the open model starts one task function per arrival (make them @task methods "
                "of the user)"
            )
    attributes: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
    metaclass: Any = type(cls)  # Locust's UserMeta
    return metaclass(name, (OpenArrivals, cls), attributes | open_model_concurrency(cls))


def classes(path: str) -> dict[str, type]:
    """What Locust should run from the user's file under this process's settings."""
    users, shapes = load_locustfile(path)
    found: dict[str, type] = dict(wrap(users) if SETTINGS.open_model else users)
    return found | {type(shape).__name__: type(shape) for shape in shapes}


def from_env() -> dict[str, type]:
    """`classes` of the file POOLBENCH_LOCUSTFILE names (what `own_locustfile.py` runs)."""
    if not SETTINGS.locustfile:
        raise SystemExit("POOLBENCH_LOCUSTFILE is not set: the locustfile to run")
    return classes(SETTINGS.locustfile)


def problem(path: str) -> str | None:
    """Why the open model cannot run the file, or None."""
    try:
        users, _ = load_locustfile(str(Path(path).resolve()))
    except Exception as exc:  # the user's module raised it: its words are the reason
        return f"importing it failed: {type(exc).__name__}: {exc}"
    try:
        wrap(users)
    except Unwrappable as exc:
        return str(exc)
    return None


if __name__ == "__main__":
    reason = problem(sys.argv[1])
    if reason is not None:
        print(reason)
        sys.exit(1)
