"""Engine, sessions and schema-revision checks.

One engine per process and URL. Services never commit: a unit of work is
opened with :func:`session_scope` (or the web layer's session dependency),
which commits when the block succeeds and rolls back when it raises.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlmodel import Session, create_engine

from campaigns.errors import SchemaOutOfDate
from campaigns.settings import Settings, get_settings

_engines: dict[tuple[str, str | None], Engine] = {}
_engines_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (see
    # _sqlite_begin); the module's own implicit BEGIN breaks SAVEPOINTs.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # Foreign keys are off by default in SQLite; WAL lets readers work while one writer writes;
    # busy_timeout makes concurrent writers wait for the lock instead of failing at once.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


#: Execution options of a SQLite connection whose transactions only read: they begin
#: DEFERRED, take no lock, and read the database as it was at their first read.
SQLITE_READ_ONLY = {"sqlite_begin": "DEFERRED"}


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front. A deferred transaction that reads and then
    # writes fails with "database is locked" when another writer got in between (the
    # busy timeout cannot help there); waiting for the lock at BEGIN always works. A
    # connection that will only read may ask for DEFERRED (SQLITE_READ_ONLY).
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    if mode not in ("IMMEDIATE", "DEFERRED"):
        raise ValueError(f"sqlite_begin must be IMMEDIATE or DEFERRED, not {mode!r}")
    connection.exec_driver_sql(f"BEGIN {mode}")


#: Seconds to wait for a new PostgreSQL connection. psycopg's own default is 130 s: with a
#: database that does not answer, every request would hang for two minutes, not fail fast.
CONNECT_TIMEOUT_SECONDS = 3
#: Seconds a request waits for a pooled connection before giving up (SQLAlchemy's default
#: is 30). The web layer's DatabaseGate keeps API requests from queueing here at all.
POOL_TIMEOUT_SECONDS = 5


def build_engine(url: str, *, schema: str | None = None, pool_size: int = 10,
                 pooled: bool = True) -> Engine:
    """Create an engine for ``url`` with the settings each backend needs.

    ``pooled=False`` (SQLite only) opens a new connection for each checkout and closes it
    on return: for connections held beside the pool's, which must never wait for it
    (see :func:`sqlite_unpooled`).

    On PostgreSQL, every pooled connection is pinged (one round trip of an empty query)
    when it is checked out, so connections that died while idle in the pool (database
    restarted, backend terminated, proxy restarted) are replaced instead of failing the
    request. A ``connect_timeout`` in the URL's query wins over the default here.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" and not pooled:
        raise ValueError("only a SQLite engine can be unpooled")
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               hide_parameters=True,
                               **({} if pooled else {"poolclass": NullPool}))
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    if schema:
        connect_args["options"] = f"-c search_path={schema}"
    engine = create_engine(
        url,
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        pool_pre_ping=True,
        # Statement parameters (coupon codes, key hashes) stay out of error messages,
        # which end up in logs.
        hide_parameters=True,
    )
    _connect_args[engine] = connect_args
    return engine


#: The driver arguments :func:`build_engine` added to each PostgreSQL engine's URL.
_connect_args: weakref.WeakKeyDictionary[Engine, dict[str, Any]] = weakref.WeakKeyDictionary()


#: The unpooled twin of each SQLite engine that asked for one.
_unpooled: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def sqlite_unpooled(engine: Engine) -> Engine:
    """An engine on the same SQLite database as ``engine``, with the same settings, whose
    connections bypass any pool: a process holding some of ``engine``'s connections can
    open more without waiting for the pool's limit."""
    with _engines_lock:
        twin = _unpooled.get(engine)
        if twin is None:
            twin = _unpooled[engine] = build_engine(
                engine.url.render_as_string(hide_password=False), pooled=False)
        return twin


def psycopg_connect_kwargs(engine: Engine) -> dict[str, Any]:
    """``psycopg.connect`` arguments reaching the same database, as the same schema, with
    the same timeouts as ``engine``'s own connections: for a pool of psycopg's own."""
    _args, kwargs = engine.dialect.create_connect_args(engine.url)
    kwargs.pop("context", None)  # SQLAlchemy's own type adapters; psycopg's defaults here
    return {**kwargs, **_connect_args.get(engine, {})}


def get_engine(settings: Settings | None = None) -> Engine:
    """The process-wide engine for the configured database."""
    settings = settings or get_settings()
    key = (settings.resolved_database_url, settings.database_schema)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = build_engine(
                key[0], schema=key[1], pool_size=settings.database_pool_size
            )
            _engines[key] = engine
        return engine


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    with Session(engine or get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def insert_ignore(
    session: Session, model: type[Any], rows: Sequence[Mapping[str, Any]], *,
    conflict_columns: Sequence[str],
) -> int:
    """INSERT rows, silently skipping those that hit the unique key ``conflict_columns``.

    This is how "record once" is done without check-then-insert races: the database's
    unique constraint decides, on SQLite and PostgreSQL alike. Returns rows inserted.
    """
    if not rows:
        return 0
    from sqlalchemy.dialects import postgresql, sqlite

    table = model.__table__
    statement: Any
    if session.get_bind().dialect.name == "postgresql":
        statement = postgresql.insert(table)
    else:
        statement = sqlite.insert(table)
    statement = statement.on_conflict_do_nothing(index_elements=list(conflict_columns))
    if len(rows) <= 100:
        # One multi-row VALUES statement: one round trip (executemany would make one each).
        result = session.execute(statement.values(list(rows)))
    else:
        result = session.execute(statement, list(rows))
    return int(getattr(result, "rowcount", 0) or 0)


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_schema_current(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is at the code's head revision."""
    from campaigns.migrate import head_revision

    head = head_revision()
    current = current_revision(engine)
    if current != head:
        state = "empty (no schema)" if current is None else f"at revision {current}"
        raise SchemaOutOfDate(
            f"the database is {state} but this version of ChannelShift needs revision {head}; "
            "run `channelshift db upgrade` first"
        )


def schema_comment(kind: str) -> str:
    """The comment that marks a schema a run of ``kind`` (tests, a benchmark) created."""
    return f"channelshift {kind} schema, created "


def create_marked_schema(connection: Connection, schema: str, *, kind: str) -> None:
    """``CREATE SCHEMA`` with a comment saying who made it and when, so that a later run
    can drop it if this one is killed before it does (:func:`drop_stale_schemas`)."""
    connection.execute(text(f"CREATE SCHEMA {schema}"))
    # COMMENT takes a literal only; the text is ours (a constant and an ISO timestamp).
    connection.execute(text(f"COMMENT ON SCHEMA {schema} IS "
                            f"'{schema_comment(kind)}{datetime.now(UTC).isoformat()}'"))


def drop_stale_schemas(connection: Connection, *, kind: str, older_than: timedelta,
                       now: datetime | None = None) -> list[str]:
    """Drop the schemas that runs of ``kind`` marked and left behind more than
    ``older_than`` ago; their names.

    Only schemas marked by :func:`create_marked_schema` for that kind are considered, so
    nothing else in the database (another kind's, a developer's) is touched, nor a live
    run's.
    """
    now = now or datetime.now(UTC)
    marked = schema_comment(kind)
    rows = connection.execute(text(
        "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace "
        "WHERE obj_description(oid, 'pg_namespace') LIKE :marked"),
        {"marked": marked + "%"}).all()
    dropped = []
    for name, comment in rows:
        try:
            created = datetime.fromisoformat(comment.removeprefix(marked))
        except ValueError:
            continue
        if now - created < older_than:
            continue
        try:
            with connection.begin_nested():
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        except DBAPIError:
            continue  # another run dropped it first
        dropped.append(name)
    return dropped


@contextmanager
def read_only_session(engine: Engine | None = None) -> Iterator[Session]:
    """A session for reads only: on SQLite its transaction takes no write lock."""
    with (engine or get_engine()).connect() as connection:
        connection.execution_options(**SQLITE_READ_ONLY)
        with Session(bind=connection) as session:
            yield session
