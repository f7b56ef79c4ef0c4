"""A killed test run (or benchmark) leaves its PostgreSQL schemas behind; the next run of
the same kind drops them once they are hours old, and nothing else."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, text

from campaigns.db import build_engine, create_marked_schema, schema_comment
from campaigns.db import drop_stale_schemas as drop_marked_schemas
from tests.scratch import SCHEMA_COMMENT, STALE_AFTER, create_test_schema, drop_stale_schemas

pytestmark = pytest.mark.postgres_only


def schemas(connection: Connection, names: list[str]) -> set[str]:
    return set(connection.execute(text(
        "SELECT nspname FROM pg_namespace WHERE nspname = ANY(:names)"),
        {"names": names}).scalars())


@pytest.fixture
def admin(database: tuple[str, str | None]) -> Engine:
    url, schema = database
    # Like every postgres_only module, deselected on SQLite (-m "not postgres_only").
    assert schema is not None, "needs CHANNELSHIFT_TEST_DATABASE_URL=postgresql"
    return build_engine(url)


def test_only_old_test_schemas_are_dropped(admin: Engine) -> None:
    token = secrets.token_hex(4)
    old, fresh, other = f"cs_old_{token}", f"cs_fresh_{token}", f"cs_other_{token}"
    long_ago = (datetime.now(UTC) - STALE_AFTER * 2).isoformat()
    with admin.begin() as connection:
        create_test_schema(connection, old)
        connection.execute(text(f"COMMENT ON SCHEMA {old} IS '{SCHEMA_COMMENT}{long_ago}'"))
        connection.execute(text(f"CREATE TABLE {old}.leftover (id integer)"))
        create_test_schema(connection, fresh)
        # Not a test run's (a benchmark's, a developer's): never touched, however old.
        connection.execute(text(f"CREATE SCHEMA {other}"))
        connection.execute(text(f"COMMENT ON SCHEMA {other} IS 'created {long_ago}'"))
    try:
        with admin.begin() as connection:
            dropped = drop_stale_schemas(connection)
        assert old in dropped
        assert fresh not in dropped and other not in dropped
        with admin.connect() as connection:
            assert schemas(connection, [old, fresh, other]) == {fresh, other}
    finally:
        with admin.begin() as connection:
            for name in (old, fresh, other):
                connection.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()


def test_the_running_suites_own_schema_is_kept(admin: Engine,
                                                database: tuple[str, str | None]) -> None:
    _, schema = database
    with admin.begin() as connection:
        assert schema not in drop_stale_schemas(connection)
        assert schemas(connection, [str(schema)]) == {schema}
    admin.dispose()


def test_a_benchmarks_schemas_are_its_own_to_drop(admin: Engine) -> None:
    """benchmarks/harness.py marks its schemas as a benchmark's: the test suite leaves them
    alone, the next benchmark drops them once stale."""
    token = secrets.token_hex(4)
    old, fresh = f"cs_bench_old_{token}", f"cs_bench_fresh_{token}"
    long_ago = (datetime.now(UTC) - STALE_AFTER * 2).isoformat()
    with admin.begin() as connection:
        create_marked_schema(connection, old, kind="benchmark")
        connection.execute(text(
            f"COMMENT ON SCHEMA {old} IS '{schema_comment('benchmark')}{long_ago}'"))
        create_marked_schema(connection, fresh, kind="benchmark")
    try:
        with admin.begin() as connection:
            assert old not in drop_stale_schemas(connection)  # the test suite's cleanup
            assert schemas(connection, [old, fresh]) == {old, fresh}
        with admin.begin() as connection:
            dropped = drop_marked_schemas(connection, kind="benchmark",
                                          older_than=STALE_AFTER)
        assert old in dropped and fresh not in dropped
        with admin.connect() as connection:
            assert schemas(connection, [old, fresh]) == {fresh}
    finally:
        with admin.begin() as connection:
            for name in (old, fresh):
                connection.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()
