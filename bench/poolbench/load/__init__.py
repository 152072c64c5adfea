"""The Locust side of poolbench: the scenario user, the open model, shapes and the measured window.

Names are imported on first use (PEP 562), so `poolbench.load.latency_file`, which the sweep
runner reads the Locust processes' files with, imports neither Locust nor gevent (importing
Locust monkey-patches the whole process with gevent).

- `latency_file`: the latency file, its names and format version, read and written;
- `recorder`: one process's window and per-second figures, in bounded memory;
- `tracking`: every request of a Locust process, timed from its intended start;
- `open_model`: `OpenArrivals` and `PoolbenchUser`, Locust's closed loop or Poisson arrivals;
- `wrapping`: a user's own locustfile's classes, with `OpenArrivals` for the open model;
- `scenario_data`: the `POOLBENCH_*` settings, user ids and order bodies scenarios share;
- `shapes`: the load shapes chosen by `POOLBENCH_SHAPE`;
- `window`: the measured window's edges, master-worker messages and files;
- `listeners`: the Locust event wiring, registered once on import;
- `own_locustfile.py`: what Locust runs (by path) for a user's own locustfile.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poolbench.load.latency_file import (
        LATENCY_FILE,
        LATENCY_FILE_PREFIX,
        LATENCY_FILE_SUFFIX,
        REQUESTS_FILE_GLOB,
        REQUESTS_FORMAT,
        WINDOW_HDR_KEY,
        Latencies,
        RequestLog,
    )
    from poolbench.load.open_model import (
        PoissonArrivals,
        PoolbenchUser,
        pacing,
        poisson_pacing,
    )
    from poolbench.load.recorder import SecondSeries, WindowRecorder
    from poolbench.load.scenario_data import SETTINGS, order_body, random_user_id
    from poolbench.load.shapes import SpikeShape, StepShape, shape_from_env

# Each public name -> the module that defines it.
_MODULES = {
    "LATENCY_FILE": "latency_file",
    "LATENCY_FILE_PREFIX": "latency_file",
    "LATENCY_FILE_SUFFIX": "latency_file",
    "REQUESTS_FILE_GLOB": "latency_file",
    "REQUESTS_FORMAT": "latency_file",
    "WINDOW_HDR_KEY": "latency_file",
    "Latencies": "latency_file",
    "RequestLog": "latency_file",
    "PoissonArrivals": "open_model",
    "PoolbenchUser": "open_model",
    "pacing": "open_model",
    "poisson_pacing": "open_model",
    "SecondSeries": "recorder",
    "WindowRecorder": "recorder",
    "SETTINGS": "scenario_data",
    "order_body": "scenario_data",
    "random_user_id": "scenario_data",
    "SpikeShape": "shapes",
    "StepShape": "shapes",
    "shape_from_env": "shapes",
}

__all__ = [
    "LATENCY_FILE",
    "LATENCY_FILE_PREFIX",
    "LATENCY_FILE_SUFFIX",
    "REQUESTS_FILE_GLOB",
    "REQUESTS_FORMAT",
    "SETTINGS",
    "WINDOW_HDR_KEY",
    "Latencies",
    "PoissonArrivals",
    "PoolbenchUser",
    "RequestLog",
    "SecondSeries",
    "SpikeShape",
    "StepShape",
    "WindowRecorder",
    "order_body",
    "pacing",
    "poisson_pacing",
    "random_user_id",
    "shape_from_env",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
