"""Loaded by path after a user's own locustfile (`locust -f theirs.py,window_plugin.py`).

Importing `poolbench.load.common` under its package name registers the measured window's event
listeners once, also when the user's file imports it too.
"""

import poolbench.load.common  # noqa: F401
