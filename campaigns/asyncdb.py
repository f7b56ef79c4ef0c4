"""Async database access for the hot routes on PostgreSQL, without the ORM.

The storefront's busiest routes (offers, redemptions) run on the event loop, on
connections of psycopg's async pool (``web.deps.AsyncPool``), in autocommit: each of
their statements is its own transaction. Their services take a :class:`Database`, which
psycopg's ``AsyncConnection`` is; the API tests pass a :class:`SessionConnection` instead,
which runs the same statements inside the test's transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar

from psycopg import AsyncConnection, Connection
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


class OneCursor:
    """A connection as a :class:`Database` whose statements all run on one cursor (a new
    cursor per statement, as ``AsyncConnection.execute`` makes, costs its own setup each
    time). A statement's rows must be read before the next statement runs."""

    def __init__(self, connection: AsyncConnection[Any]) -> None:
        self._connection = connection
        self._cursor = connection.cursor()

    @property
    def autocommit(self) -> bool:
        return self._connection.autocommit

    async def execute(self, query: str, params: dict[str, Any], *,
                      prepare: bool | None = None) -> Rows:
        return await self._cursor.execute(query, params, prepare=prepare)

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        return self._connection.transaction()


async def fetch_alone(database: Database, query: str, params: dict[str, Any]) -> list[Any]:
    """The rows of a statement that, if it fails, must leave nothing behind and let the
    caller go on: in autocommit it is its own transaction; inside a caller's transaction,
    it runs in a savepoint (an error would otherwise abort the whole transaction)."""
    if database.autocommit:
        return await (await database.execute(query, params, prepare=True)).fetchall()
    async with database.transaction():
        return await (await database.execute(query, params, prepare=True)).fetchall()


_DIALECT = psycopg_dialect.dialect()


def psycopg_sql(statement: ClauseElement) -> tuple[str, dict[str, Any]]:
    """A SQLAlchemy statement as psycopg's SQL text (``%(name)s`` parameters) and the
    values of the parameters the statement fixed itself: one statement, written once, for
    the ORM path and the async path alike. Values given at execution are passed as
    psycopg adapts them (a ``Jsonb`` for a JSONB parameter, an aware datetime for a
    timestamp), not through SQLAlchemy's type processing."""
    compiled = statement.compile(dialect=_DIALECT)
    return str(compiled), dict(compiled.params)


Item = TypeVar("Item")
Result = TypeVar("Result")


class Grouped(Generic[Item, Result]):
    """Concurrent requests' items written together: one statement for many requests.

    Each caller of :meth:`submit` waits for its own result. While ``max_flushes``
    statements are running, new items wait and are sent together with the next one, up to
    ``max_batch`` at a time (the way PostgreSQL groups the commits of concurrent
    transactions): an idle server sends each item at once, alone, and a busy one pays the
    per-statement cost (a round trip, the driver's work, PostgreSQL's parse, lock and WAL
    flush) once for many requests. One statement at a time (the default) makes the
    batches largest: under wrk, 1,191-1,646 req/s against 1,088-1,514 with two, and less
    CPU per request in PostgreSQL.

    With ``coming`` (how many items are sure to be submitted soon: requests in flight that
    have not reached this step yet), a batch waits for them, up to ``linger`` seconds,
    before it is sent (the way PostgreSQL's ``commit_delay`` waits for the commits of
    concurrent transactions). A lone request never waits. Under moderate load, when
    statements are quick and requests seldom meet, that turns many statements of one
    request each into fewer of several, for a fraction of a millisecond of waiting: the
    CPU a request costs, and with it the queueing, goes down.

    ``flush`` gets the items in order and returns one result per item, in the same order.
    If it fails, every caller of that batch gets its exception. A caller that stops waiting
    (its request cancelled) does not stop the batch it is in: its item may still be written.
    """

    def __init__(self, flush: Callable[[list[Item]], Awaitable[list[Result]]], *,
                 max_batch: int = 128, max_flushes: int = 1, linger: float = 0.0,
                 coming: Callable[[], int] | None = None) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._max_flushes = max_flushes
        self._linger = linger if coming is not None else 0.0
        self._coming = coming
        self._arrival: asyncio.Future[None] | None = None
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushing = 0
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self.recheck()
        if self._flushing < self._max_flushes:
            self._flushing += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                if self._linger:
                    await self._gather()
                batch = [(item, future) for item, future in self._pending[:self._max_batch]
                         if not future.done()]
                del self._pending[:self._max_batch]
                if batch:
                    await self._write(batch)
        finally:
            self._flushing -= 1

    def recheck(self) -> None:
        """Tell a waiting batch to look at ``coming`` again (an item it waited for will not
        come: its request ended without one)."""
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(None)

    async def _gather(self) -> None:
        """Wait, up to the linger, while items are coming and the batch has room."""
        assert self._coming is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._linger
        while self._coming() > 0 and len(self._pending) < self._max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            arrival = self._arrival = loop.create_future()
            timer = loop.call_later(remaining, _settle, arrival)
            try:
                await arrival
            finally:
                timer.cancel()
                self._arrival = None

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=False):
            if not future.done():
                future.set_result(result)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
