"""Loaded by path after a user's own locustfile (`locust -f theirs.py,window_plugin.py`).

Importing `poolbench.load.listeners` under its package name registers the measured window's event
listeners once, also when the user's file imports `poolbench.load` too. This file defines no
listener itself: Locust imports it under another name (`window_plugin`), so a listener here would
be registered a second time whenever the package imported this file.
"""

import poolbench.load.listeners  # noqa: F401
