"""The Locust event wiring: this process's request tracker and window, registered on import.

Python imports a module once per name, so the listeners are registered exactly once however
many locustfiles import `poolbench.load` (a scenario through `PoolbenchUser`, a user's own file
through `own_locustfile.py`, or both). Only ever import this module by its package name.
"""

from __future__ import annotations

from locust import events

from poolbench.load.scenario_data import SETTINGS
from poolbench.load.tracking import ProcessRequests
from poolbench.load.window import Window

REQUESTS = ProcessRequests(SETTINGS)
WINDOW = Window(SETTINGS, REQUESTS)

events.init.add_listener(WINDOW.on_init)
events.test_start.add_listener(WINDOW.on_test_start)
events.request.add_listener(REQUESTS.on_request)
events.test_stopping.add_listener(WINDOW.on_test_stopping)
events.test_stop.add_listener(REQUESTS.drain)
events.quit.add_listener(WINDOW.on_quit)
