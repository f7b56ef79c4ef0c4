"""Async database access for the hot routes on PostgreSQL, without the ORM.

The storefront's busiest routes (offers, redemptions) run on the event loop, on
connections of psycopg's async pool (``web.deps.AsyncPool``), in autocommit: each of
their statements is its own transaction. Their services take a :class:`Database`, which
psycopg's ``AsyncConnection`` is; the API tests pass a :class:`SessionConnection` instead,
which runs the same statements inside the test's transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from psycopg import Connection
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.sql.expression import ClauseElement
from sqlmodel import Session


class Rows(Protocol):
    async def fetchone(self) -> Any: ...

    async def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """What the hot paths need of a connection: psycopg's ``AsyncConnection`` has it."""

    @property
    def autocommit(self) -> bool: ...

    async def execute(self, query: str, params: dict[str, Any], *,
                      prepare: bool | None = None) -> Rows: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...


class _SyncRows:
    def __init__(self, rows: Sequence[Any]) -> None:
        self._rows = rows

    async def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    async def fetchall(self) -> list[Any]:
        return list(self._rows)


class SessionConnection:
    """A SQLAlchemy session's psycopg connection, inside its transaction, as a
    :class:`Database`: the API tests run each request in the test's own transaction.

    Statements run synchronously (they block the event loop while they wait), which is
    fine where a test drives one request at a time and nowhere else.
    """

    autocommit = False

    def __init__(self, session: Session) -> None:
        connection = session.connection().connection.driver_connection
        assert isinstance(connection, Connection)
        self._connection = connection

    async def execute(self, query: str, params: dict[str, Any], *,
                      prepare: bool | None = None) -> _SyncRows:
        cursor = self._connection.execute(query, params, prepare=prepare)
        return _SyncRows(cursor.fetchall() if cursor.description is not None else [])

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        with self._connection.transaction():
            yield


_DIALECT = psycopg_dialect.dialect()


def psycopg_sql(statement: ClauseElement) -> tuple[str, dict[str, Any]]:
    """A SQLAlchemy statement as psycopg's SQL text (``%(name)s`` parameters) and the
    values of the parameters the statement fixed itself: one statement, written once, for
    the ORM path and the async path alike. Values given at execution are passed as
    psycopg adapts them (a ``Jsonb`` for a JSONB parameter, an aware datetime for a
    timestamp), not through SQLAlchemy's type processing."""
    compiled = statement.compile(dialect=_DIALECT)
    return str(compiled), dict(compiled.params)
