"""Runtime configuration from ``CHANNELSHIFT_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("data")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHANNELSHIFT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="Folder for the embedded SQLite database and other local files.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL. Unset: a SQLite file in data_dir. Production: "
            "postgresql+psycopg://user:password@host:5432/dbname"
        ),
    )
    database_schema: str | None = Field(
        default=None,
        description="PostgreSQL schema to use (search_path); unset means the server default.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)
    currency: str = Field(default="EUR", min_length=3, max_length=3)
    config_refresh_seconds: float = Field(
        default=1.0, ge=0, le=60,
        description="How often each worker checks whether campaign configuration changed.",
    )
    scheduler: bool = Field(
        default=True,
        description="Run the lifecycle scheduler in each server process: it starts and ends "
        "campaigns on their schedule, runs prize draws on their announced date, pauses "
        "campaigns whose budget is spent and checks guardrails, each job at its own interval "
        "(+-10% jitter). Off: cron runs `channelshift lifecycle tick` and `channelshift "
        "guardrails check` instead.",
    )
    schedule_interval_seconds: float = Field(
        default=30, ge=0,
        description="How often the scheduler starts and ends campaigns whose time has come "
        "(0: never).",
    )
    draw_interval_seconds: float = Field(
        default=30, ge=0,
        description="How often the scheduler runs prize draws whose announced date has come "
        "(0: never).",
    )
    budget_interval_seconds: float = Field(
        default=30, ge=0,
        description="How often the scheduler pauses running campaigns whose remaining budget "
        "cannot pay one more redemption (0: never).",
    )
    guardrail_interval_seconds: float = Field(
        default=900, ge=0,
        description="How often the scheduler checks running campaigns' guardrail metrics "
        "and pauses those that measurably do harm (0: never).",
    )
    body_timeout_seconds: float = Field(
        default=10.0, gt=0, le=600,
        description="How long a client may take to send a whole request body; 408 after.",
    )
    opentelemetry: bool = Field(
        default=False,
        description="Send traces, metrics and logs to the OpenTelemetry providers set up in "
        "the server process (FastAPI's own instrumentation). Off by default: ChannelShift's "
        "metrics are at /metrics and its logs are JSON lines; looking for providers costs "
        "every request.",
    )

    report_parallelism: int | None = Field(
        default=None, ge=1, le=16,
        description="How many connections a large campaign's report splits its "
        "customers over (each reading the same snapshot). Unset on PostgreSQL: the server's "
        "max_parallel_workers_per_gather + 1, as many processes as one query may use there; "
        "on SQLite: the cores this process may use (at most 8).",
    )

    @field_validator("database_schema")
    @classmethod
    def _schema_is_identifier(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "").isalnum():
            raise ValueError("database_schema must contain only letters, digits and underscores")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'channelshift.sqlite3').as_posix()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
