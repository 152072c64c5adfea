"""Every default of a sweep spec, in one place (standard library only: Locust processes read it)."""

from __future__ import annotations

# What the load does.
DEFAULT_SHAPE = "constant"
DEFAULT_OPEN_MODEL_RPS = 0.0  # per user; 0 is a closed loop
# Concurrent open-model requests per Locust process. Generous: reaching it means the server
# is far behind the offered rate; the run then reports the dropped arrivals.
DEFAULT_OPEN_MODEL_MAX_INFLIGHT = 1000

# The grid's axes, when not swept.
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10
DEFAULT_HTTP_CONCURRENCY_LIMIT = 20
DEFAULT_USERS = 32
DEFAULT_PG_MAX_SIZE = 10
DEFAULT_PG_MAX_CONNECTIONS = 100
DEFAULT_QUERIES_PER_REQUEST = 1
DEFAULT_APP_WORKERS = 1
DEFAULT_PGBOUNCER_POOL_SIZE = 20  # PgBouncer's own default_pool_size
# Capacity points need users well above the pool: this many times the largest pool by default.
DEFAULT_CAPACITY_USERS_PER_CONNECTION = 4

# What each request does.
DEFAULT_SIM_LATENCY_MS = 0.0
DEFAULT_THINK_TIME_S = 0.0
DEFAULT_FANOUT_CALLS = 5
DEFAULT_DOWNSTREAM_LATENCY_MS = 20.0
DEFAULT_SEED_USERS = 1000

# How long and how often each point runs.
DEFAULT_REPETITIONS = 1
DEFAULT_WARMUP_S = 3.0
DEFAULT_DURATION_S = 10.0  # the measured window, warm-up excluded
DEFAULT_SPAWN_RATE = 100.0

# A target of the user's own.
DEFAULT_HEALTH_PATH = "/health"

# The objective and the fleet.
DEFAULT_SLO_P95_MS = 250.0
DEFAULT_SLO_MAX_ERROR_RATE = 0.01
DEFAULT_INSTANCES = 1
DEFAULT_WORKERS_PER_INSTANCE = 1
DEFAULT_FLEET_MAX_CONNECTIONS = 100
DEFAULT_RESERVED_CONNECTIONS = 3
DEFAULT_PGBOUNCER_INSTANCES = 1
