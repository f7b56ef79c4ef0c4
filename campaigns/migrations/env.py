"""Alembic environment: runs against the application's engine (see campaigns.migrate)."""

from __future__ import annotations

from alembic import context

import campaigns.models  # noqa: F401  (registers every table on the metadata)
from campaigns.db import get_engine
from campaigns.models import metadata

config = context.config


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or get_engine()
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode rebuilds a table by copy, drop and rename. With foreign keys on,
            # dropping a parent table would cascade its deletes into the children, so they
            # stay off for the migration (the pragma only works outside a transaction) and
            # the result is checked before they come back on.
            connection.connection.driver_connection.execute(  # type: ignore[union-attr]
                "PRAGMA foreign_keys=OFF")
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        if sqlite:
            driver = connection.connection.driver_connection
            problems = driver.execute("PRAGMA foreign_key_check").fetchall()  # type: ignore[union-attr]
            driver.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
            if problems:
                raise RuntimeError(f"migration left broken foreign keys: {problems[:5]}")


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; "
                     "run `channelshift db upgrade`")
run_migrations_online()
