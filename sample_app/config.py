"""Every knob of the sample app, read from the environment or `.env` and validated at start-up."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Self

from pydantic import Field, HttpUrl, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/poolbench"
DEFAULT_DOWNSTREAM_URL = "http://127.0.0.1:8081"

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Settings for one app process; the sweep runner sets these per point through env vars."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    db_pool_size: PositiveInt = 5
    db_max_overflow: NonNegativeInt = 10
    db_pool_timeout_s: PositiveSeconds = 30.0
    db_pool_recycle_s: int = Field(default=1800, ge=-1)
    db_pool_pre_ping: bool = True
    db_echo: bool = False
    # False behind a transaction-pooling PgBouncer (1.18 has no max_prepared_statements): no
    # statement cache, and unique names for the statements asyncpg still prepares.
    db_prepared_statements: bool = True

    # The direct asyncpg pool, a separate path from SQLAlchemy's pool.
    pg_pool_min_size: NonNegativeInt = 1
    pg_pool_max_size: PositiveInt = 10
    pg_pool_max_inactive_s: float = Field(default=300.0, ge=0)
    pg_pool_acquire_timeout_s: PositiveSeconds = 30.0

    downstream_url: HttpUrl = HttpUrl(DEFAULT_DOWNSTREAM_URL)
    http_concurrency_limit: PositiveInt = 20
    http_timeout_s: PositiveSeconds = 2.0
    http_max_connections: PositiveInt = 100
    http_max_keepalive: NonNegativeInt = 20

    # pg_sleep per query: models a remote or slow database without burning CPU.
    sim_query_latency_ms: float = Field(default=0.0, ge=0, le=60_000)
    to_thread_work_ms: float = Field(default=5.0, ge=0, le=60_000)

    cors_origins: list[str] = ["http://localhost", "http://127.0.0.1"]
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    access_log: bool = False
    create_schema: bool = True

    @model_validator(mode="after")
    def _check_pools(self) -> Self:
        if not self.database_url.startswith("postgresql+asyncpg://"):
            raise ValueError("DATABASE_URL must use the postgresql+asyncpg:// scheme")
        if self.pg_pool_min_size > self.pg_pool_max_size:
            raise ValueError("PG_POOL_MIN_SIZE must be <= PG_POOL_MAX_SIZE")
        return self

    @property
    def asyncpg_dsn(self) -> str:
        """Return the database URL in the plain form asyncpg accepts."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings (read once)."""
    return Settings()


def settings_env(**values: object) -> dict[str, str]:
    """Return env vars that set these Settings fields (`pool_size=5` style names are rejected).

    The one place that knows a field's env var name, for the sweep runner and restart commands.
    """
    env: dict[str, str] = {}
    for name, value in values.items():
        if name not in Settings.model_fields:
            raise KeyError(f"no setting {name!r}")
        text = f"{value:g}" if isinstance(value, float) else str(value)
        env[name.upper()] = text.lower() if isinstance(value, bool) else text
    return env
