"""Database fixtures: one migrated database per test run, one rolled-back transaction per test.

The backend comes from ``CHANNELSHIFT_TEST_DATABASE_URL``: unset means a SQLite file in
a temporary folder; a PostgreSQL URL gets a fresh schema for the run, dropped at the end
(and the schemas of killed runs, once they are hours old, at the start of the next).
Migrations are applied exactly as ``channelshift db upgrade`` applies them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from campaigns import migrate
from campaigns.db import build_engine
from tests.scratch import create_test_schema, drop_stale_schemas

POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# The lifecycle scheduler would start, end, draw and pause campaigns under the tests' feet;
# tests that exercise it turn it on explicitly (Settings(scheduler=True, ...)).
os.environ.setdefault("CHANNELSHIFT_SCHEDULER", "false")
os.environ.setdefault("CHANNELSHIFT_GUARDRAIL_INTERVAL_SECONDS", "0")


@pytest.fixture(scope="session")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of an empty database for this run."""
    url = os.environ.get("CHANNELSHIFT_TEST_DATABASE_URL") or ""
    if not url or url == "sqlite":
        path = Path(tmp_path_factory.mktemp("db")) / "test.sqlite3"
        yield f"sqlite:///{path.as_posix()}", None
        return
    if url == "postgresql":
        url = POSTGRES_DEFAULT
    schema = f"cs_test_{secrets.token_hex(4)}"
    admin = build_engine(url)
    with admin.begin() as connection:
        drop_stale_schemas(connection)
        create_test_schema(connection, schema)
    try:
        yield url, schema
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(scope="session")
def engine(database: tuple[str, str | None]) -> Iterator[Engine]:
    url, schema = database
    engine = build_engine(url, schema=schema)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def backend(engine: Engine) -> str:
    return make_url(str(engine.url)).get_backend_name()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose work, commits included, is rolled back after the test."""
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint",
                      expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()
