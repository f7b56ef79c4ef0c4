"""A migrated database that one test module writes to for real, dropped afterwards.

The suite's shared database runs every test in a transaction that is rolled back. Tests whose
subject opens connections of its own (the CLI, a server, snapshot-sharing report
connections, the async pool) need committed data, so they get a scratch database of the
run's backend instead: a schema of its own on PostgreSQL, a file of its own on SQLite.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text

from campaigns import migrate
from campaigns.db import (
    build_engine,
    create_marked_schema,
    dispose_engines,
    schema_comment,
)
from campaigns.db import drop_stale_schemas as drop_marked_schemas
from campaigns.settings import get_settings

#: Every schema a test run creates says so, and when, in its comment.
SCHEMA_COMMENT = schema_comment("test")
#: A test schema older than this was left by a run that was killed before it could drop it
#: (a full run takes minutes, CI at most 90): the next run drops it.
STALE_AFTER = timedelta(hours=6)


def create_test_schema(connection: Connection, schema: str) -> None:
    """``CREATE SCHEMA`` with the comment :func:`drop_stale_schemas` recognises."""
    create_marked_schema(connection, schema, kind="test")


def drop_stale_schemas(connection: Connection, *, now: datetime | None = None) -> list[str]:
    """Drop the test schemas of killed runs (older than :data:`STALE_AFTER`); their names.
    A benchmark's schemas, or a developer's, are never touched."""
    return drop_marked_schemas(connection, kind="test", older_than=STALE_AFTER, now=now)


@dataclass(frozen=True)
class Scratch:
    engine: Engine
    url: str
    schema: str | None


@contextmanager
def empty_schema(url: str, *, prefix: str) -> Iterator[str | None]:
    """A new, empty PostgreSQL schema on ``url``'s database (None for SQLite), dropped with
    everything in it afterwards: for a subject that creates its tables itself (``channelshift
    db upgrade``, ``channelshift demo``) or that the caller migrates."""
    if url.startswith("sqlite"):
        yield None
        return
    schema = f"{prefix}_{secrets.token_hex(4)}"
    admin = build_engine(url)
    try:
        with admin.begin() as connection:
            create_test_schema(connection, schema)
        yield schema
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


@contextmanager
def scratch_database(database: tuple[str, str | None], directory: Path, *,
                     prefix: str = "cs_scratch", query: str = "",
                     pool_size: int = 10) -> Iterator[Scratch]:
    """A migrated database of this run's backend that only the caller uses, dropped after.

    ``query`` is appended to a PostgreSQL URL (``application_name=...`` to find the
    connections of the engines and servers built on it).
    """
    url, _ = database
    if url.startswith("sqlite"):
        url = f"sqlite:///{(directory / 'scratch.sqlite3').as_posix()}"
    elif query:
        url += ("&" if "?" in url else "?") + query
    with empty_schema(url, prefix=prefix) as schema:
        engine = build_engine(url, schema=schema, pool_size=pool_size)
        try:
            migrate.upgrade(engine)
            yield Scratch(engine, url, schema)
        finally:
            engine.dispose()


@contextmanager
def cli_database(database: tuple[str, str | None], directory: Path,
                 env: pytest.MonkeyPatch, *, prefix: str = "cs_cli") -> Iterator[Scratch]:
    """A scratch database that the CLI, run in this process, is pointed at.

    The environment is the test's (``env``) with no other ``CHANNELSHIFT_`` setting, and
    the cached settings and engines are reset around it.
    """
    for name in [name for name in os.environ if name.startswith("CHANNELSHIFT_")]:
        env.delenv(name)
    env.setenv("COLUMNS", "300")  # keep rich from wrapping lines the assertions read
    with scratch_database(database, directory, prefix=prefix) as scratch:
        env.setenv("CHANNELSHIFT_DATABASE_URL", scratch.url)
        if scratch.schema:
            env.setenv("CHANNELSHIFT_DATABASE_SCHEMA", scratch.schema)
        get_settings.cache_clear()
        try:
            yield scratch
        finally:
            dispose_engines()
            get_settings.cache_clear()
