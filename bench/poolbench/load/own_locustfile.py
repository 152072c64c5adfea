"""The locustfile Locust runs for a user's own file: `locust -f .../own_locustfile.py`.

It imports the measured window's listeners under their package name (registered once, also when
the user's file imports `poolbench.load` too) and hands Locust the classes of the file that
POOLBENCH_LOCUSTFILE names, wrapped for the open model when it is on (`poolbench.load.wrapping`).
The user's file is not changed.
"""

import poolbench.load.listeners  # noqa: F401
from poolbench.load.wrapping import from_env

globals().update(from_env())
