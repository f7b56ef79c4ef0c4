"""Request dependencies: one transaction per request, API-key authentication by scope."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Annotated, Any, TypeVar, cast

import psycopg
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import Connection, Engine
from sqlmodel import Session

from analytics.queries import report_view
from campaigns.asyncdb import Database, OneCursor, SessionConnection
from campaigns.db import POOL_TIMEOUT_SECONDS, psycopg_connect_kwargs
from campaigns.models import ApiKey, ApiScope
from campaigns.services.apikeys import find_api_key
from campaigns.services.catalog import Catalog
from campaigns.services.offers_postgresql import DirectSteps, GroupedSteps, StepGroups
from campaigns.wording import with_article
from web.api.guards import refuse_nul_characters
from web.errors import (
    ApiError,
    DatabaseUnavailable,
    is_concurrency_conflict,
    is_database_unavailable,
    log_database_unavailable,
)


def _finish(session: Session, *, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's unit of work: committed when the route returns, rolled back if it raises.

    Declared with ``scope="function"`` below so the commit happens *before* the response
    is sent: a client that was told "redeemed" can rely on the redemption being durable.
    Opening a Session does no I/O, so it happens on the event loop; the commit (or
    rollback) and close run together in one trip to the thread pool.

    A database that fails under the request (unreachable, restarting, connection cut) turns
    into :class:`~web.errors.DatabaseUnavailable`: a 503 with Retry-After for the API and
    the UI alike. The pool has already discarded the broken connection, so the next request
    gets a fresh one.
    """
    session = Session(request.app.state.engine, expire_on_commit=False)
    try:
        yield session
    except BaseException as error:
        try:
            await run_in_threadpool(_finish, session, commit=False)
        except Exception as rollback_error:
            if not is_database_unavailable(rollback_error):
                raise
        if isinstance(error, Exception) and not isinstance(error, DatabaseUnavailable) \
                and is_database_unavailable(error):
            log_database_unavailable(request, error)
            raise DatabaseUnavailable.from_error(error) from error
        raise
    if not (session.in_transaction() or session.new or session.dirty or session.deleted):
        # The route committed its own work (the hot routes do, on their thread): closing
        # is bookkeeping without I/O, so it needs no trip to the thread pool.
        session.close()
        return
    try:
        await run_in_threadpool(_finish, session,
                                commit=not getattr(request.state, "roll_back", False))
    except Exception as error:
        if not is_database_unavailable(error):
            raise
        log_database_unavailable(request, error)
        raise DatabaseUnavailable.from_error(error) from error


def roll_back_request(request: Request) -> None:
    """Have the request's unit of work rolled back although the route returned a response.

    For route classes that turn an exception into a response themselves (the UI's problem
    pages): the session dependency never sees the exception and would otherwise commit
    whatever the failed route had already flushed.
    """
    request.state.roll_back = True


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


@contextmanager
def read_view(session: Session) -> Iterator[Connection]:
    """A connection for a long read (a report, the channel economics, a dashboard
    headline): one state of the database for all its statements, holding nothing a
    writer waits for (:func:`analytics.queries.report_view`).

    What the request's session did so far (an API key looked up, a UI session touched)
    is committed first: on SQLite its transaction holds the write lock, and would keep
    holding it while the report runs. A session bound to a connection (a transaction its
    caller owns, as the tests' are) is read on that connection.
    """
    bind = session.get_bind()
    if isinstance(bind, Connection):
        yield session.connection()
        return
    if session.in_transaction():
        session.commit()
    with report_view(bind) as connection:
        yield connection


@contextmanager
def read_session(session: Session) -> Iterator[Session]:
    """:func:`read_view` as a Session, for service functions written against one (counting
    an audience, streaming an export)."""
    with read_view(session) as connection, Session(bind=connection) as view:
        yield view


T = TypeVar("T")


#: How the async pool's connections plan. Its statements (offers, redemptions) are
#: prepared once per connection; PostgreSQL would still plan them again for every
#: execution (custom plans, about 1 ms each for the exposure CTE) unless told to keep the
#: generic plan. They are key lookups and inserts, for which the generic plan is the
#: plan, made once whatever the tables hold at that moment: planned against a table still
#: empty (a new database, a new campaign's first minute), reading it whole looks cheapest,
#: and that plan would be kept as the table grows, until autovacuum's next ANALYZE. With
#: sequential scans off, a lookup uses its index whatever the statistics say; a statement
#: that has no index to use still scans (this only makes the planner avoid it).
ASYNC_POOL_SETTINGS = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"}


#: How long a :class:`Lease` keeps a connection before giving it back to the pool.
LEASE_SECONDS = 60.0
#: The smallest pool whose connections the offers groups keep (three of them), leaving the
#: other routes at least as many; a smaller pool lends one per statement.
MIN_POOL_FOR_LEASES = 6


class Lease:
    """A connection of the pool kept by one group of statements, which runs one statement
    at a time (:class:`campaigns.asyncdb.Grouped`), with one cursor for all of them.

    At moderate load a grouped statement carries one or two requests, so what a statement
    costs the worker beyond its own work counts per request: taking a connection from
    psycopg's pool and giving it back, and a new cursor, were about 45 of the 115 µs a
    one-row statement cost the worker (docs/PERFORMANCE.md). The connection goes back to
    the pool after any error (the pool then keeps it, resets it or closes it, as it finds
    it) and at the first statement after ``seconds``, so that the pool's health checks and
    maximum lifetime apply to it as to the others.
    """

    def __init__(self, pool: AsyncConnectionPool, *, seconds: float = LEASE_SECONDS) -> None:
        self._pool = pool
        self._seconds = seconds
        self._kept: tuple[psycopg.AsyncConnection[Any], OneCursor] | None = None
        self._until = 0.0

    async def run(self, work: Callable[[Database], Awaitable[T]]) -> T:
        if self._kept is None:
            connection = await self._pool.getconn()
            self._kept = connection, OneCursor(connection)
            self._until = time.monotonic() + self._seconds
        try:
            result = await work(self._kept[1])
        except BaseException:
            await self.release()
            raise
        if time.monotonic() >= self._until:
            await self.release()
        return result

    async def release(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            await self._pool.putconn(kept[0])


class AsyncPool:
    """psycopg's async connection pool, for the routes that run on the event loop.

    Requests on the offers route wait for the database without holding a thread: no trip
    to the thread pool and back, no GIL hand-off, per round trip. Its connections are in
    autocommit (see :mod:`campaigns.services.offers_postgresql`) and are not pinged when
    taken from the pool; instead a unit of work that fails on a connection error is run
    once more after the pool has tested its idle connections and dropped the dead ones,
    so a pool left stale by a database restart heals without an error reaching a client.
    Work given to :meth:`run` must therefore be safe to repeat. A database that stays
    unreachable is :class:`DatabaseUnavailable` (503) within the pool's timeout; a deadlock
    the work did not resolve itself is a 503 at once (``concurrency_conflict``), the
    connections being fine.
    """

    def __init__(self, engine: Engine, *, size: int) -> None:
        kwargs = psycopg_connect_kwargs(engine)
        kwargs["options"] = " ".join(filter(None, [kwargs.get("options"), *(
            f"-c {name}={value}" for name, value in ASYNC_POOL_SETTINGS.items())]))
        self.pool = AsyncConnectionPool(
            kwargs={**kwargs, "autocommit": True},
            min_size=1, max_size=size, timeout=POOL_TIMEOUT_SECONDS, open=False,
            name="channelshift-async")
        # Concurrent offers requests write their customers, exposures and codes together,
        # each kind of statement on a connection it keeps (see Lease) if the pool has room.
        self._leases: list[Lease] = []
        self.offer_groups = StepGroups(self._leased if size >= MIN_POOL_FOR_LEASES
                                       else lambda: lambda work: self.run(None, work))

    def offer_steps(self) -> GroupedSteps:
        return GroupedSteps(self.offer_groups)

    async def open(self) -> None:
        # Not waiting: the server starts (and /healthz answers) while the database is down.
        await self.pool.open(wait=False)

    async def close(self) -> None:
        for lease in self._leases:
            await lease.release()
        await self.pool.close()

    def _leased(self) -> Callable[[Callable[[Database], Awaitable[T]]], Awaitable[T]]:
        lease = Lease(self.pool)
        self._leases.append(lease)
        return lambda work: self.run(None, work, lease=lease)

    async def run(self, request: Request | None, work: Callable[[Database], Awaitable[T]],
                  *, lease: Lease | None = None) -> T:
        """Run ``work`` on a connection of the pool, or on the one ``lease`` keeps;
        ``request`` (if any) names the request in the log line of a database error."""
        for attempt in (1, 2):
            try:
                if lease is not None:
                    return await lease.run(work)
                async with self.pool.connection() as connection:
                    return await work(connection)
            except PoolTimeout as error:
                log_database_unavailable(request, error)
                raise DatabaseUnavailable.from_error(error) from error
            except psycopg.OperationalError as error:
                if attempt == 1 and not is_concurrency_conflict(error):
                    # The other idle connections probably died with this one (a database
                    # restart): test them all (one empty query each) and drop the dead
                    # before trying again.
                    await self.pool.check()
                    continue
                log_database_unavailable(request, error)
                raise DatabaseUnavailable.from_error(error) from error
        raise AssertionError("unreachable")


class SessionRunner:
    """Runs async database work on the request's session instead of the async pool: what
    the API tests put in place of :func:`async_database`, so that each request runs in the
    test's own transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def run(self, request: Request, work: Callable[[Database], Awaitable[T]]) -> T:
        return await work(SessionConnection(self.session))

    def offer_steps(self) -> DirectSteps:
        return DirectSteps(SessionConnection(self.session))


async def async_database(request: Request) -> AsyncPool | SessionRunner | None:
    """The async pool on PostgreSQL (opened by the app's lifespan), None on SQLite or without
    a lifespan: the routes then take their ORM path on a thread."""
    pool: AsyncPool | None = getattr(request.state, "async_pool", None)
    return pool


AsyncDatabase = Annotated[AsyncPool | SessionRunner | None, Depends(async_database)]


class OnDemand:
    """The request's session and async database for a route that skips FastAPI's dependency
    solving (:class:`web.api.direct.DirectRoute`), each made only when first asked for.

    They are what :func:`get_session` and :func:`async_database` give every other route, or
    what the app's ``dependency_overrides`` put in their place (the tests' transaction), so
    such a route behaves like the others. Used as an async context manager: on leaving it,
    the session (if one was opened) is committed, or rolled back if the route raised, exactly
    as the dependency does, before the response is sent. On the offers route with warm
    caches no session is opened at all.
    """

    def __init__(self, request: Request) -> None:
        self.request = request
        self._stack = AsyncExitStack()
        self._session: Session | None = None

    async def session(self) -> Session:
        if self._session is None:
            provider = self.request.app.dependency_overrides.get(get_session, get_session)
            arguments = (self.request,) if inspect.signature(provider).parameters else ()
            if inspect.isasyncgenfunction(provider):
                session = await self._stack.enter_async_context(
                    asynccontextmanager(provider)(*arguments))
            else:
                session = self._stack.enter_context(contextmanager(provider)(*arguments))
            self._session = cast(Session, session)
        return self._session

    async def database(self) -> AsyncPool | SessionRunner | None:
        provider = self.request.app.dependency_overrides.get(async_database)
        if provider is None:
            return await async_database(self.request)
        value = provider(self.request) if inspect.signature(provider).parameters \
            else provider()
        return cast(AsyncPool | SessionRunner | None,
                    await value if inspect.isawaitable(value) else value)

    async def __aenter__(self) -> OnDemand:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> bool:
        return bool(await self._stack.__aexit__(kind, error, traceback))


@dataclass(frozen=True)
class Caller:
    """Who is calling: the API key's id, name and scope (never its secret)."""

    api_key_id: int
    name: str
    scope: ApiScope

    @property
    def actor(self) -> str:
        return f"api_key:{self.api_key_id}:{self.name}"


class ApiKeyCache:
    """Recently seen keys, so the hot path does not look up the key on every request.

    Entries live ``ttl_seconds`` and are dropped whenever the configuration epoch moves
    (revoking a key bumps it), so a revoked key stops working across all workers quickly.
    Past ``refresh_after`` of its life an entry is due for a refresh: one request reloads
    it (:func:`_lookup`) while the others go on using it, so under steady traffic a key
    never expires with requests waiting on it.
    """

    def __init__(self, ttl_seconds: float = 10.0, *, refresh_after: float = 0.7) -> None:
        self.ttl = ttl_seconds
        self.refresh_after = refresh_after
        #: secret -> (expires at, refresh due at, caller), on the monotonic clock
        self._entries: dict[str, tuple[float, float, Caller | None]] = {}
        self._epoch: int | None = None
        self._lock = threading.Lock()

    def get(self, secret: str, *, epoch: int) -> tuple[bool, Caller | None, bool]:
        """(hit, the caller if hit, whether the entry is due for a refresh)."""
        with self._lock:
            if epoch != self._epoch:
                self._entries.clear()
                self._epoch = epoch
            entry = self._entries.get(secret)
            now = time.monotonic()
            if entry and entry[0] > now:
                return True, entry[2], entry[1] <= now
            return False, None, False

    def put(self, secret: str, caller: Caller | None, *, epoch: int) -> None:
        """Keep what a read begun at ``epoch`` found, unless the epoch has moved since (a
        key revoked meanwhile must not be cached as valid)."""
        with self._lock:
            if epoch != self._epoch:
                return
            if len(self._entries) > 10_000:
                self._entries.clear()
            now = time.monotonic()
            self._entries[secret] = (now + self.ttl, now + self.ttl * self.refresh_after,
                                     caller)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated",
                       "send an API key as 'Authorization: Bearer <key>'",
                       headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def _load_caller(session: Session, secret: str) -> Caller | None:
    api_key: ApiKey | None = find_api_key(session, secret)
    if api_key is None or api_key.id is None:
        return None
    return Caller(api_key_id=api_key.id, name=api_key.name, scope=ApiScope(api_key.scope))


class SharedReads:
    """One read of a thing at a time in a server process (event loop): the configuration
    epoch, an API key.

    Under load, every request in flight when a cached value fell due read it too, each
    with a thread and a session of its own: a burst of identical queries, and of requests
    waiting for them, once per interval. A request that finds a read of the same thing
    under way now waits for its answer instead, unless that read began ``patience``
    seconds ago or more (stuck on a database that went away, it may take until a timeout).
    If the read it waited for fails, or its request is cancelled, it reads for itself. With
    a patience of 0 (every request reads, so that it sees each change committed before it
    arrived) nothing is shared.
    """

    def __init__(self) -> None:
        #: thing -> (when its read began, on the monotonic clock; the read's answer)
        self._pending: dict[Hashable, tuple[float, asyncio.Future[Any]]] = {}

    def under_way(self, thing: Hashable, *, patience: float) -> bool:
        """Whether a read of ``thing`` began less than ``patience`` seconds ago."""
        pending = self._pending.get(thing)
        return pending is not None and time.monotonic() - pending[0] < patience

    async def read(self, thing: Hashable, load: Callable[[], Awaitable[T]], *,
                   patience: float) -> T:
        """``load()``'s answer: that of the read of ``thing`` under way, or read now."""
        pending = self._pending.get(thing)
        if pending is not None and time.monotonic() - pending[0] < patience:
            try:
                return cast(T, await asyncio.shield(pending[1]))
            except asyncio.CancelledError:
                if not pending[1].cancelled():
                    raise  # this request is being cancelled, not the reader's
            except Exception:  # noqa: S110 (the read failed: this request tries its own)
                pass
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending[thing] = (time.monotonic(), future)
        try:
            value = await load()
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved: nobody may be waiting
            raise
        else:
            future.set_result(value)
            return value
        finally:
            if not future.done():
                future.cancel()
            if self._pending.get(thing, (0.0, None))[1] is future:
                del self._pending[thing]

    async def epoch(self, catalog: Catalog, session: Callable[[], Awaitable[Session]]) -> int:
        """The configuration epoch: cached until due (:meth:`Catalog.epoch_due`), then read
        once for all the requests that find it due, on a thread with a session."""
        if not catalog.epoch_due():
            return catalog.cached_epoch

        async def load() -> int:
            return await run_in_threadpool(catalog.epoch, await session())

        return await self.read(_EPOCH, load, patience=catalog.refresh_interval)


_EPOCH = "configuration epoch"


async def _lookup(request: Request, session: Callable[[], Awaitable[Session]], secret: str
                  ) -> Caller | None:
    """The caller for a key: from the per-process cache, or one query on a miss, shared
    by the requests that miss together (:class:`SharedReads`). An entry due for a refresh
    is reloaded by the first request that finds it so, while the others go on using it.
    ``session`` gives the request's session: it is asked for only to read."""
    cache: ApiKeyCache = request.app.state.api_key_cache
    catalog: Catalog = request.app.state.catalog
    # An app run without its lifespan (some tests) has no shared reads: each reads alone.
    reads: SharedReads = getattr(request.state, "shared_reads", None) or SharedReads()
    epoch = await reads.epoch(catalog, session)
    hit, caller, refresh_due = cache.get(secret, epoch=epoch)
    thing = ("api key", secret)
    if hit and (not refresh_due or reads.under_way(thing, patience=cache.ttl)):
        return caller

    async def load() -> Caller | None:
        found = await run_in_threadpool(_load_caller, await session(), secret)
        cache.put(secret, found, epoch=epoch)
        return found

    try:
        return await reads.read(thing, load, patience=cache.ttl)
    except Exception:
        if not hit:
            raise
        return caller  # a failed refresh: the entry is still valid, a later request retries


def bearer_secret(request: Request) -> str:
    """The API key the request sends (401 if it sends none, or not as a bearer token)."""
    return _bearer(request)


async def authenticate(request: Request) -> Caller:
    """The caller whose valid API key the request sends (401 otherwise), whatever the route.

    :class:`web.admission.RequestBodies` calls it before reading a body; the route's
    :func:`admit` then finds the caller in ``request.state`` and checks only its scope.
    """
    async with OnDemand(request) as on_demand:
        caller = await _lookup(request, on_demand.session, _bearer(request))
    if caller is None:
        raise ApiError(401, "invalid_api_key", "the API key is unknown or revoked",
                       headers={"WWW-Authenticate": "Bearer"})
    request.state.caller = caller
    return caller


async def admit(request: Request, allowed: frozenset[ApiScope],
                session: Callable[[], Awaitable[Session]]) -> Caller:
    """The caller, if its API key is of one of the ``allowed`` scopes (401 / 403 otherwise).
    ``session`` gives the request's session, asked for only if the key is not cached."""
    caller: Caller | None = getattr(request.state, "caller", None)  # authenticated already
    if caller is None:
        caller = await _lookup(request, session, _bearer(request))
    if caller is None:
        raise ApiError(401, "invalid_api_key", "the API key is unknown or revoked",
                       headers={"WWW-Authenticate": "Bearer"})
    if caller.scope not in allowed:
        raise ApiError(403, "wrong_scope",
                       f"this route needs {with_article(' or '.join(sorted(allowed)))} key; "
                       f"this key has scope {caller.scope.value}")
    request.state.caller = caller
    # Input is looked at only once the caller is known to be allowed here.
    await refuse_nul_characters(request)
    return caller


def require_scope(*scopes: ApiScope) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits only API keys of the given scopes (401 / 403 otherwise)."""
    allowed = frozenset(scopes)

    async def dependency(request: Request, session: SessionDep) -> Caller:
        async def given() -> Session:
            return session

        return await admit(request, allowed, given)

    return dependency


StorefrontCaller = Annotated[Caller, Depends(require_scope(ApiScope.STOREFRONT))]
ManagementCaller = Annotated[Caller, Depends(require_scope(ApiScope.MANAGEMENT))]
AnalyticsCaller = Annotated[Caller, Depends(require_scope(ApiScope.ANALYTICS))]
