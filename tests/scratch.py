"""A migrated database that one test module writes to for real, dropped afterwards.

The suite's shared database runs every test in a transaction that is rolled back. Tests whose
subject opens connections of its own (the CLI, a server, snapshot-sharing report
connections, the async pool) need committed data, so they get a scratch database of the
run's backend instead: a schema of its own on PostgreSQL, a file of its own on SQLite.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

from campaigns import migrate
from campaigns.db import build_engine


@dataclass(frozen=True)
class Scratch:
    engine: Engine
    url: str
    schema: str | None


@contextmanager
def scratch_database(database: tuple[str, str | None], directory: Path, *,
                     prefix: str = "cs_scratch", query: str = "") -> Iterator[Scratch]:
    """A migrated database of this run's backend that only the caller uses, dropped after.

    ``query`` is appended to a PostgreSQL URL (``application_name=...`` to find the
    connections of the engines and servers built on it).
    """
    url, _ = database
    schema = None
    admin = None
    if url.startswith("sqlite"):
        url = f"sqlite:///{(directory / 'scratch.sqlite3').as_posix()}"
    else:
        schema = f"{prefix}_{secrets.token_hex(4)}"
        admin = build_engine(url)
        with admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        if query:
            url += ("&" if "?" in url else "?") + query
    engine = build_engine(url, schema=schema)
    try:
        migrate.upgrade(engine)
        yield Scratch(engine, url, schema)
    finally:
        engine.dispose()
        if admin is not None:
            with admin.begin() as connection:
                connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            admin.dispose()
