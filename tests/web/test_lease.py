"""A group of statements keeps one connection of the async pool (web.deps.Lease): one
checkout and one cursor for many statements, given back after an error and after its
time, so that the pool still sees every connection now and then."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine

from campaigns.asyncdb import Database
from campaigns.db import psycopg_connect_kwargs
from web.deps import MIN_POOL_FOR_LEASES, AsyncPool, Lease

pytestmark = pytest.mark.postgres_only

T = TypeVar("T")


def with_pool(engine: Engine, test: Callable[[AsyncConnectionPool], Awaitable[T]]) -> T:
    async def run() -> T:
        pool = AsyncConnectionPool(kwargs={**psycopg_connect_kwargs(engine), "autocommit": True},
                                   min_size=2, max_size=2, open=False)
        await pool.open(wait=True)
        try:
            return await test(pool)
        finally:
            await pool.close()
    return asyncio.run(run())


async def backend_pid(database: Database) -> int:
    row = await (await database.execute("SELECT pg_backend_pid()", {}, prepare=True)).fetchone()
    return int(row[0])


def taken(pool: AsyncConnectionPool) -> int:
    """How many times a connection was taken from the pool."""
    return int(pool.get_stats().get("requests_num", 0))


def test_statements_share_one_connection_and_cursor(engine: Engine) -> None:
    async def test(pool: AsyncConnectionPool) -> None:
        lease = Lease(pool)
        databases: list[Any] = []

        async def work(database: Database) -> int:
            databases.append(database)
            return await backend_pid(database)

        pids = [await lease.run(work) for _ in range(5)]
        assert len(set(pids)) == 1
        assert len({id(database) for database in databases}) == 1
        assert taken(pool) == 1
        assert pool.get_stats()["pool_available"] == 1  # the other one
        await lease.release()
        assert pool.get_stats()["pool_available"] == 2
    with_pool(engine, test)


def test_an_error_gives_the_connection_back(engine: Engine) -> None:
    async def test(pool: AsyncConnectionPool) -> None:
        lease = Lease(pool)
        await lease.run(backend_pid)

        async def failing(database: Database) -> None:
            await backend_pid(database)
            raise ValueError("the work failed")

        with pytest.raises(ValueError, match="the work failed"):
            await lease.run(failing)
        assert pool.get_stats()["pool_available"] == 2
        await lease.run(backend_pid)
        assert taken(pool) == 2
    with_pool(engine, test)


def test_a_dead_connection_is_replaced(engine: Engine) -> None:
    async def test(pool: AsyncConnectionPool) -> None:
        lease = Lease(pool)
        dead = await lease.run(backend_pid)
        async with pool.connection() as other:
            await other.execute("SELECT pg_terminate_backend(%s)", (dead,))
        with pytest.raises(psycopg.OperationalError):
            await lease.run(backend_pid)
        replacement = await lease.run(backend_pid)
        assert replacement != dead
    with_pool(engine, test)


def test_the_connection_goes_back_after_its_time(engine: Engine) -> None:
    async def test(pool: AsyncConnectionPool) -> None:
        lease = Lease(pool, seconds=0.0)
        for _ in range(3):
            await lease.run(backend_pid)
            assert pool.get_stats()["pool_available"] == 2
        assert taken(pool) == 3
    with_pool(engine, test)


def test_only_a_pool_with_room_for_other_routes_lends_connections_for_good(engine: Engine
                                                                           ) -> None:
    # The offers groups keep three connections: in a smaller pool they would starve (or
    # take every connection of) the other routes, so they borrow one per statement.
    small = AsyncPool(engine, size=MIN_POOL_FOR_LEASES - 1)
    room = AsyncPool(engine, size=MIN_POOL_FOR_LEASES)
    assert small._leases == []
    assert len(room._leases) == 3
