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
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; "
                     "run `channelshift db upgrade`")
run_migrations_online()
