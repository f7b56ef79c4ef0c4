"""How long a campaign report takes on a large campaign, against a bare aggregate of its rows.

Acceptance: on 1,000,000 exposed customers and 10,000,000 channel events the full report
takes at most 3x a bare aggregate over the same tables, measured in the same run, and the
process that computes it peaks below 1 GiB, on PostgreSQL and on SQLite.

* **report**: :func:`analytics.report.build_report` with the ``value_tier`` breakdown,
  exactly what the API and ``channelshift report`` produce, in the same read-only view
  (:func:`analytics.queries.report_view`): one aggregation pass (every
  metric of every arm and segment value; CUPED, Holm, SRM, economics, guardrails from its
  rows; the adoption timeline from the same pass) plus the spend timeline. The pass is
  cut into customer ranges summed on several connections reading the same data: on
  PostgreSQL as many as one parallel query may use (``max_parallel_workers_per_gather``
  + 1, the same cores the bare aggregate's parallel plan gets); on SQLite, which runs
  the bare aggregate on one core, as many as the process has cores, so there the report
  uses cores the bare statement cannot. Only a few
  rows per arm, segment value and day come back to Python. Its parts are timed again
  afterwards to show where the time goes.
* **bare**: ``SELECT arm_id, count(*), sum(cost_minor) FROM assignment JOIN channel_event
  ON customer_id GROUP BY arm_id`` over the same campaign: one pass over the same join,
  the least any report of those rows has to do.

The world is written by the database itself (``generate_series`` on PostgreSQL, a
recursive CTE on SQLite) with secondary indexes and foreign keys dropped during the load
and rebuilt after it, then ``ANALYZE``d (PostgreSQL's autovacuum would do that on its own
soon after such a load; on SQLite it is ``PRAGMA optimize``'s job). Customers are exposed
over 14 days; each has events spread over the 30 days before and after exposure (the
goal's window and pre-period), every tenth one a conversion.

Both measurements run in a fresh child process: each once to warm the caches (the bare
aggregate reads the tables, the report also the events' ``(customer_id, occurred_at)``
index, which nothing else reads; otherwise whichever ran first would pay for reading from
disk what the other then finds in memory), then bare, the report and bare again, timed with
``time.perf_counter``; the ratio is the report
against the mean of the two bare runs that bracket it (the machine's load drifts). A
writer starts its transaction one second into the timed report and its wait is printed:
on SQLite it would wait for the write lock if the report held it. Peak
memory is the child's peak resident set size (``VmHWM``), interpreter and libraries
included; its value before the first query is printed as the baseline. The
database server's own memory (PostgreSQL) is not in it.

PostgreSQL runs in its own schema of ``CHANNELSHIFT_BENCH_DATABASE_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), dropped at the end; SQLite in a
temporary file, deleted at the end. The last line is ``ratio=<report/bare>
peak_mib=<MiB>``, the worse of the databases for each.

    python -m benchmarks.report [--customers 1000000] [--events 10000000]
                                [--databases postgresql,sqlite] [--explain]
                                [--covering-index] [--set work_mem=256MB ...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import create_benchmark_schema
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from campaigns import migrate
from campaigns.db import build_engine
from campaigns.models import Arm
from campaigns.services.campaigns import create_campaign
from campaigns.services.channels import create_channel, ensure_default_stages
from campaigns.services.goals import create_goal

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ACTOR = "benchmark"
#: Exposures start here and are spread over 14 days; events lie within 30 days of exposure.
START = datetime(2026, 1, 5, tzinfo=UTC)
EXPOSURE_SPREAD_SECONDS = 14 * 86_400
SEGMENT = "value_tier"
#: Tables the load writes; their secondary indexes and foreign keys are rebuilt after it.
LOADED_TABLES = ("customer", "assignment", "channel_event", "conversion")
CHANNELS = (("call_centre", "call_centre", 700), ("ivr", "ivr", 110), ("web", "web", 20),
            ("app", "app", 15))


@dataclass(frozen=True)
class World:
    campaign_id: int
    control_arm_id: int
    treatment_arm_id: int
    channel_ids: dict[str, int]
    stage_ids: dict[str, int]


@dataclass(frozen=True)
class Measurement:
    bare_before_seconds: float  # the bare aggregate just before the report
    bare_after_seconds: float  # and just after it: the pair brackets the report's load
    report_seconds: float  # build_report(segment=SEGMENT), what the API and CLI produce
    #: the report's parts, timed again one by one after it (warm, for the breakdown only)
    parts: dict[str, float]
    baseline_mib: float
    peak_mib: float
    bare_rows: list[tuple[Any, ...]]
    exposed: int
    adoption_diff: float | None
    comparisons: int
    #: how long a writer waited for its transaction to begin (SQLite: the write lock), a
    #: second into the report's run
    writer_wait_seconds: float

    @property
    def bare_seconds(self) -> float:
        return (self.bare_before_seconds + self.bare_after_seconds) / 2

    @property
    def ratio(self) -> float:
        return self.report_seconds / self.bare_seconds


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def peak_rss_mib() -> float:
    """Peak resident set size of this process image so far, in MiB.

    Linux's ``VmHWM``: ``getrusage``'s ``ru_maxrss`` survives ``exec``, so in a freshly
    spawned child it would still show the parent's peak from before the fork.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ------------------------------------------------------------------------ the world


def configure(engine: Engine) -> World:
    """Channels, a self-service goal and a two-arm campaign, through the domain services."""
    with Session(engine, expire_on_commit=False) as session:
        stages = {stage.key: stage.id for stage in ensure_default_stages(session)}
        channels = {key: create_channel(session, actor=ACTOR, channel_create={
            "key": key, "name": key, "kind": kind}).id for key, kind, _ in CHANNELS}
        goal = create_goal(session, actor=ACTOR, goal_create={
            "name": "Self-service after sale", "stage": "after_sale",
            "source_channels": ["call_centre", "ivr"], "target_channel": "web",
            "target_uplift": "0.05", "window_days": 30})
        campaign = create_campaign(session, actor=ACTOR, campaign_create={
            "name": "Report benchmark", "goal_id": goal.id, "budget_minor": None, "arms": [
                {"name": "control", "weight": 50, "is_control": True},
                {"name": "ten percent", "weight": 50, "incentive": {
                    "name": "10% off", "type": "percent_discount",
                    "config": {"percent_bp": 1000}}}]})
        arms = session.exec(select(Arm).where(col(Arm.campaign_id) == campaign.id)).all()
        session.commit()
        control = next(arm for arm in arms if arm.is_control)
        treatment = next(arm for arm in arms if not arm.is_control)
        assert campaign.id is not None and control.id is not None and treatment.id is not None
        return World(campaign_id=campaign.id, control_arm_id=control.id,
                     treatment_arm_id=treatment.id,
                     channel_ids={k: v for k, v in channels.items() if v is not None},
                     stage_ids={k: v for k, v in stages.items() if v is not None})


class Dialect:
    """The few SQL fragments the two databases spell differently."""

    def __init__(self, name: str) -> None:
        self.name = name

    def series(self, count: int) -> str:
        """A row source ``s(g)`` with g = 1..count."""
        if self.name == "postgresql":
            return f"generate_series(1, {int(count)}) AS s(g)"
        return "s"

    def with_series(self, count: int) -> str:
        if self.name == "postgresql":
            return ""
        return (f"WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s "
                f"WHERE g < {int(count)}) ")

    def at(self, seconds: str) -> str:
        """START + ``seconds`` as a stored UTC time."""
        if self.name == "postgresql":
            return f"(TIMESTAMPTZ '{START.isoformat()}' + ({seconds}) * INTERVAL '1 second')"
        # The text shape SQLAlchemy stores on SQLite, so comparisons stay chronological.
        return (f"strftime('%Y-%m-%d %H:%M:%f000', '{START:%Y-%m-%d %H:%M:%S}', "
                f"({seconds}) || ' seconds')")

    def json_score(self, expression: str) -> str:
        if self.name == "postgresql":
            return f"jsonb_build_object('score', {expression})"
        return f"json_object('score', {expression})"

    def padded(self, prefix: str, expression: str) -> str:
        """A text id that sorts like the number, so the unique index is appended to."""
        if self.name == "postgresql":
            return f"'{prefix}' || lpad(({expression})::text, 10, '0')"
        return f"printf('{prefix}%010d', {expression})"


def _hash(expression: str, modulus: int) -> str:
    """A portable pseudo-random number in [0, modulus), modulus <= 65536.

    Knuth's multiplicative hash keeps the high 16 of 32 bits: the low bits of a product
    repeat the parity (and more) of the input, which would correlate every column.
    """
    if not 0 < modulus <= 65_536:
        raise ValueError(f"modulus must be in 1..65536 (got {modulus})")
    return f"((({expression}) * 2654435761) % 4294967296 / 65536 % {int(modulus)})"


def _case(selector: str, values: tuple[str, ...]) -> str:
    whens = " ".join(f"WHEN {i} THEN '{v}'" for i, v in enumerate(values))
    return f"CASE {selector} {whens} END"


def load_customers(connection: Connection, sql: Dialect, count: int) -> int:
    """Customers 1..count with segment attributes and a score; returns the first id."""
    connection.execute(text(
        sql.with_series(count)
        + "INSERT INTO customer (external_id, segment, value_tier, preferred_channel, region, "
          "age_band, tenure_months, points, lifetime_value_minor, is_new, attributes, "
          "created_at) SELECT "
        + sql.padded("B", "g") + ", "
        + _case(_hash("g", 3), ("consumer", "small_business", "enterprise")) + ", "
        + _case(_hash("g + 1", 3), ("bronze", "silver", "gold")) + ", "
        + _case(_hash("g + 2", 3), ("call_centre", "web", "app")) + ", "
        + _case(_hash("g + 3", 4), ("north", "south", "east", "west")) + ", "
        + _case(_hash("g + 4", 4), ("18-29", "30-44", "45-64", "65+")) + ", "
        + f"g % 120, 0, {_hash('g + 5', 1000)} * 100, {_hash('g + 6', 5)} = 0, "
        + sql.json_score(f"{_hash('g + 7', 1000)} / 1000.0") + ", "
        + sql.at("0") + " FROM " + sql.series(count)))
    first, last, rows = connection.execute(text(
        "SELECT min(id), max(id), count(*) FROM customer")).one()
    if rows != count or last - first + 1 != count:
        raise SystemExit(f"expected {count} customers with consecutive ids, got {rows} "
                         f"({first}..{last})")
    return int(first)


def _exposure_seconds(offset: str) -> str:
    """Seconds after START at which the customer ``offset`` (0-based) was first exposed."""
    return f"(({offset}) * 37 % {EXPOSURE_SPREAD_SECONDS})"


def _treated(offset: str) -> str:
    return f"({_hash(offset, 2)})"


def load_assignments(connection: Connection, sql: Dialect, world: World, *, first_id: int,
                     count: int) -> None:
    connection.execute(text(
        "INSERT INTO assignment (campaign_id, customer_id, arm_id, allocation_period, "
        "first_exposed_at, redemption_count) SELECT "
        f":campaign, id, CASE {_treated(f'id - {first_id}')} WHEN 1 THEN :treatment "
        "ELSE :control END, 1, " + sql.at(_exposure_seconds(f"id - {first_id}")) + ", 0 "
        "FROM customer WHERE id < :end"),
        {"campaign": world.campaign_id, "treatment": world.treatment_arm_id,
         "control": world.control_arm_id, "end": first_id + count})


def load_events(connection: Connection, sql: Dialect, world: World, *, first_id: int,
                customers: int, count: int) -> None:
    """``count`` events, round-robin over the customers, within 30 days of their exposure.

    Treated customers pick the web more often, so the report has an effect to find.
    """
    offset = f"(g % {customers})"
    pick = _hash("g", 100)
    web_share = f"(30 + 10 * {_treated(offset)})"
    channel = (f"CASE WHEN {pick} < {web_share} THEN :web WHEN {pick} < 55 THEN :app "
               f"WHEN {pick} < 90 THEN :call_centre ELSE :ivr END")
    cost = (f"CASE WHEN {pick} < {web_share} THEN 20 WHEN {pick} < 55 THEN 15 "
            f"WHEN {pick} < 90 THEN 700 ELSE 110 END")
    when = (f"{_exposure_seconds(offset)} + ({_hash('g + 11', 60)} - 30) * 86400"
            f" + {_hash('g + 17', 43_200)} * 2")
    connection.execute(text(
        sql.with_series(count)
        + "INSERT INTO channel_event (client_event_id, customer_id, channel_id, stage_id, "
          "kind, occurred_at, cost_minor) SELECT "
        + sql.padded("b", "g") + f", {first_id} + {offset}, {channel}, "
        + f"CASE WHEN {_hash('g + 12', 10)} < 7 THEN :after_sale ELSE :purchase END, "
        + f"CASE WHEN {_hash('g + 13', 100)} = 0 THEN 'complaint' ELSE 'interaction' END, "
        + sql.at(when) + f", {cost} FROM " + sql.series(count)),
        {**{key: world.channel_ids[key] for key, _, _ in CHANNELS},
         "after_sale": world.stage_ids["after_sale"], "purchase": world.stage_ids["purchase"]})


def load_conversions(connection: Connection, sql: Dialect, *, first_id: int,
                     count: int) -> None:
    """Every tenth customer converts a week after exposure."""
    connection.execute(text(
        "INSERT INTO conversion (client_event_id, customer_id, kind, occurred_at, "
        "revenue_minor, margin_minor) SELECT "
        + sql.padded("c", "id") + ", id, 'purchase', "
        + sql.at(f"{_exposure_seconds(f'id - {first_id}')} + 7 * 86400") + ", "
        + f"{_hash('id', 200)} * 100 + 500, NULL FROM customer "
          f"WHERE id % 10 = 0 AND id < {first_id + count}"))


@contextmanager
def postgres_bulk_load(engine: Engine) -> Iterator[Connection]:
    """A connection for the load, with secondary indexes and foreign keys rebuilt after it.

    Building an index once over sorted data and validating a foreign key with one join
    are much faster than maintaining them row by row during a ten-million-row insert.
    """
    with engine.begin() as connection:
        kept: list[tuple[str, str]] = []
        for table in LOADED_TABLES:
            for name, definition in connection.execute(text(
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conrelid = CAST(:t AS regclass) AND contype IN ('f', 'u')"),
                    {"t": table}):
                kept.append((table, f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"))
                connection.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))
            for name, definition in connection.execute(text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t "
                    "AND schemaname = current_schema() AND indexname NOT IN "
                    "(SELECT conname FROM pg_constraint)"), {"t": table}):
                kept.insert(0, (table, definition))
                connection.execute(text(f"DROP INDEX {name}"))
        yield connection
        for _, statement in sorted(kept, key=lambda item: "FOREIGN KEY" in item[1]):
            connection.execute(text(statement))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"VACUUM ANALYZE {', '.join(LOADED_TABLES)}"))


@contextmanager
def sqlite_bulk_load(path: Path) -> Iterator[Connection]:
    """A plain connection (no foreign-key checks, big cache) with indexes rebuilt after it."""
    engine = build_engine(f"sqlite:///{path.as_posix()}")
    with engine.connect() as connection:
        indexes = [(name, statement) for table in LOADED_TABLES
                   for name, statement in connection.execute(text(
                       "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                       "AND tbl_name = :t AND sql IS NOT NULL"), {"t": table})]
        connection.commit()
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.exec_driver_sql("PRAGMA cache_size=-262144")  # 256 MiB, the load only
        for name, _ in indexes:
            connection.exec_driver_sql(f"DROP INDEX {name}")
        connection.commit()
        yield connection
        connection.commit()
        for _, statement in indexes:
            connection.exec_driver_sql(statement)
        connection.exec_driver_sql("ANALYZE")
        connection.commit()
    engine.dispose()


def build(connection: Connection, world: World, *, customers: int, events: int) -> None:
    sql = Dialect(connection.dialect.name)
    steps: list[tuple[str, Callable[[], object]]] = []
    first_id = 0

    def customers_step() -> None:
        nonlocal first_id
        first_id = load_customers(connection, sql, customers)

    steps.append(("customers", customers_step))
    steps.append(("assignments", lambda: load_assignments(
        connection, sql, world, first_id=first_id, count=customers)))
    steps.append(("events", lambda: load_events(
        connection, sql, world, first_id=first_id, customers=customers, count=events)))
    steps.append(("conversions", lambda: load_conversions(
        connection, sql, first_id=first_id, count=customers)))
    for name, step in steps:
        print(f"  load {name}: {timed(step):.1f} s", flush=True)


# ---------------------------------------------------------------------- measurement


#: A covering index (not in the schema) that ``--covering-index`` adds after the load, to
#: measure what it would change: the report's per-customer pass then reads channel events
#: in customer order from the index alone, with no heap access and no sort.
COVERING_INDEX = {
    "postgresql": "CREATE INDEX ix_channel_event_customer_time_covering ON channel_event "
                  "(customer_id, occurred_at) INCLUDE (kind, stage_id, channel_id, cost_minor)",
    "sqlite": "CREATE INDEX ix_channel_event_customer_time_covering ON channel_event "
              "(customer_id, occurred_at, kind, stage_id, channel_id, cost_minor)",
}


def add_covering_index(engine: Engine) -> None:
    """Create :data:`COVERING_INDEX` and refresh the statistics (visibility map included)."""
    name = engine.dialect.name
    seconds = timed(lambda: _create_covering_index(engine))
    print(f"  covering index ({name}): {seconds:.1f} s", flush=True)


def _create_covering_index(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text(COVERING_INDEX[engine.dialect.name]))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE channel_event"
                                if engine.dialect.name == "postgresql" else "ANALYZE"))


BARE = ("SELECT a.arm_id, count(*), sum(e.cost_minor) FROM assignment a "
        "JOIN channel_event e ON e.customer_id = a.customer_id "
        "WHERE a.campaign_id = :campaign GROUP BY a.arm_id ORDER BY a.arm_id")


def measure(url: str, schema: str | None, campaign_id: int,
            settings: dict[str, str]) -> Measurement:
    """Run in a fresh process: bare and the report (warm-up), then bare, the report, bare
    again (timed); parts; peak RSS.

    The report is :func:`analytics.report.build_report` with the ``value_tier`` breakdown,
    exactly what ``GET .../report`` and ``channelshift report`` produce. Its parts (the
    one aggregation pass with the adoption timeline's counts, the spend timeline) are timed again
    afterwards to show where the time goes; they are not part of the ratio.
    """
    from analytics.queries import arm_statistics_and_adoption, report_view
    from analytics.report import Report, build_report, spend_timeline

    baseline = peak_rss_mib()
    engine = build_engine(url, schema=schema)
    if engine.dialect.name == "postgresql" and settings:
        @event.listens_for(engine, "connect")
        def configure_session(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                for name, value in settings.items():
                    cursor.execute("SELECT set_config(%s, %s, false)", (name, value))
            dbapi_connection.commit()

    def whole_report() -> Report:
        # As the API, the UI and `channelshift report` run it: in a read-only view.
        with report_view(engine) as view:
            return build_report(view, campaign_id, segment=SEGMENT)

    def bare() -> list[tuple[Any, ...]]:
        # A transaction of its own: on SQLite one holds the write lock until it ends.
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(BARE),
                                                             {"campaign": campaign_id})]

    bare()
    whole_report()
    bare_rows: list[tuple[Any, ...]] = []
    before = timed(lambda: bare_rows.extend(bare()))
    reports: list[Any] = []
    waits: list[float] = []

    def writer() -> None:
        time.sleep(1)
        started = time.perf_counter()
        with engine.begin() as connection:  # on SQLite BEGIN IMMEDIATE: the write lock
            waits.append(time.perf_counter() - started)
            connection.exec_driver_sql("SELECT 1")

    thread = threading.Thread(target=writer)
    thread.start()
    whole = timed(lambda: reports.append(whole_report()))
    thread.join()
    after = timed(bare)
    now = reports[0].generated_at
    with report_view(engine) as view:
        parts = {
            f"arm_statistics_and_adoption(segment={SEGMENT!r})": timed(
                lambda: arm_statistics_and_adoption(view, campaign_id, segment=SEGMENT)),
            "spend_timeline": timed(lambda: spend_timeline(view, campaign_id, now=now)),
        }
    engine.dispose()
    report = reports[0]
    adoption = next((r.comparison.diff for r in report.results if r.metric == "adoption"),
                    None)
    return Measurement(bare_before_seconds=before, bare_after_seconds=after,
                       report_seconds=whole, parts=parts, baseline_mib=baseline,
                       peak_mib=peak_rss_mib(), bare_rows=bare_rows,
                       exposed=sum(arm.n for arm in report.arms), adoption_diff=adoption,
                       comparisons=len(report.results) + len(report.segments),
                       writer_wait_seconds=waits[0])


def measure_in_child(url: str, schema: str | None, campaign_id: int,
                     settings: dict[str, str]) -> Measurement:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(measure, (url, schema, campaign_id, settings))


def explain(engine: Engine, campaign_id: int) -> None:
    """Print the plan of the report's aggregation query (per arm and ``SEGMENT`` value,
    with the adoption timeline's daily counts).

    The statement and its parameters are captured from a real run of
    ``arm_statistics_and_adoption``
    (so this costs one extra report query); PostgreSQL then shows EXPLAIN ANALYZE with
    actual times, SQLite its EXPLAIN QUERY PLAN.
    """
    from analytics.queries import arm_statistics_and_adoption

    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                _executemany: bool) -> None:
        captured.append((statement, parameters))

    with engine.connect() as connection:
        event.listen(connection, "before_cursor_execute", capture)
        try:
            arm_statistics_and_adoption(connection, campaign_id, segment=SEGMENT)
        finally:
            event.remove(connection, "before_cursor_execute", capture)
        statement, parameters = captured[-1]
        # TIMING OFF: per-row clock readings would double the time of a 10M-row plan.
        prefix = ("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) "
                  if connection.dialect.name == "postgresql"
                  else "EXPLAIN QUERY PLAN ")
        for row in connection.exec_driver_sql(prefix + statement, parameters):
            print("   ", " | ".join(str(value) for value in row))


def report(name: str, m: Measurement, customers: int) -> float:
    """Print one database's figures; return the report's ratio to the bare aggregate."""
    if m.exposed != customers:
        raise SystemExit(f"the report counts {m.exposed} exposed customers, not {customers}")
    print(f"  {'bare aggregate (before, after)':40} {m.bare_before_seconds:8.2f} s "
          f"{m.bare_after_seconds:6.2f} s  rows={m.bare_rows}")
    print(f"  {f'build_report(segment={SEGMENT!r})':40} {m.report_seconds:8.2f} s  "
          f"ratio {m.ratio:.2f}")
    for label, seconds in m.parts.items():
        print(f"    {label:38} {seconds:8.2f} s  (timed again after the report)")
    lift = "undefined" if m.adoption_diff is None else f"{m.adoption_diff:+.4f}"
    print(f"  {m.comparisons} comparisons; adoption lift {lift}")
    print(f"  a writer starting 1 s into the report waited {m.writer_wait_seconds * 1000:.1f} ms "
          "for its transaction")
    print(f"  peak RSS {m.peak_mib:.0f} MiB (baseline after imports {m.baseline_mib:.0f} MiB)")
    print(f"  {name}: ratio={m.ratio:.2f} peak_mib={m.peak_mib:.0f}", flush=True)
    return m.ratio


# ---------------------------------------------------------------------------- runs


def run_postgresql(*, customers: int, events: int, show_plan: bool,
                   settings: dict[str, str], covering_index: bool) -> tuple[float, float]:
    url = os.environ.get("CHANNELSHIFT_BENCH_DATABASE_URL") or DEFAULT_URL
    schema = f"cs_bench_{secrets.token_hex(4)}"
    admin = build_engine(url)
    with admin.begin() as connection:
        create_benchmark_schema(connection, schema)
    engine = build_engine(url, schema=schema)
    try:
        migrate.upgrade(engine)
        world = configure(engine)
        started = time.perf_counter()
        with postgres_bulk_load(engine) as connection:
            build(connection, world, customers=customers, events=events)
        print(f"  load total (indexes, foreign keys, VACUUM ANALYZE included): "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        if covering_index:
            add_covering_index(engine)
        if show_plan:
            explain(engine, world.campaign_id)
        measurement = measure_in_child(url, schema, world.campaign_id, settings)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
    return report("postgresql", measurement, customers), measurement.peak_mib


def run_sqlite(*, customers: int, events: int, show_plan: bool,
               settings: dict[str, str], covering_index: bool) -> tuple[float, float]:
    folder = Path(tempfile.mkdtemp(prefix="cs-bench-report-"))
    path = folder / "report.sqlite3"
    url = f"sqlite:///{path.as_posix()}"
    try:
        engine = build_engine(url)
        migrate.upgrade(engine)
        world = configure(engine)
        engine.dispose()
        started = time.perf_counter()
        with sqlite_bulk_load(path) as connection:
            build(connection, world, customers=customers, events=events)
        print(f"  load total (indexes and ANALYZE included): "
              f"{time.perf_counter() - started:.1f} s; file "
              f"{path.stat().st_size / 2**30:.2f} GiB", flush=True)
        if covering_index or show_plan:
            engine = build_engine(url)
            if covering_index:
                add_covering_index(engine)
            if show_plan:
                explain(engine, world.campaign_id)
            engine.dispose()
        measurement = measure_in_child(url, None, world.campaign_id, {})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return report("sqlite", measurement, customers), measurement.peak_mib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--databases", default="postgresql,sqlite",
                        help="comma-separated: postgresql, sqlite")
    parser.add_argument("--explain", action="store_true",
                        help="print the plan of the per-arm statistics query")
    parser.add_argument("--covering-index", action="store_true",
                        help="add a covering index on channel_event after the load (not in "
                             "the schema; measures what it would change)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a PostgreSQL setting for the measuring session, e.g. "
                             "work_mem=256MB or jit=off (repeatable); default: the server's")
    args = parser.parse_args(argv)
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    settings = dict(item.split("=", 1) for item in args.set if "=" in item)
    if len(settings) != len(args.set):
        parser.error("--set takes NAME=VALUE")
    runners = {"postgresql": run_postgresql, "sqlite": run_sqlite}
    unknown = [name for name in databases if name not in runners]
    if unknown or not databases:
        parser.error(f"unknown database(s) {unknown}; use postgresql and/or sqlite")
    if args.customers < 10 or args.events < args.customers:
        parser.error("need at least 10 customers and at least one event per customer")
    print(f"customers={args.customers:,} events={args.events:,} "
          f"load_average={os.getloadavg()[0]:.2f} cpus={os.cpu_count()} "
          f"postgresql_settings={settings or 'server defaults'} "
          f"covering_index={args.covering_index}", flush=True)
    ratios, peaks = [], []
    for name in databases:
        print(f"{name}:", flush=True)
        ratio, peak = runners[name](customers=args.customers, events=args.events,
                                    show_plan=args.explain, settings=settings,
                                    covering_index=args.covering_index)
        ratios.append(ratio)
        peaks.append(peak)
    print(f"load_average={os.getloadavg()[0]:.2f}; acceptance: ratio <= 3: "
          f"{max(ratios) <= 3}; peak < 1024 MiB: {max(peaks) < 1024}")
    print(f"ratio={max(ratios):.2f} peak_mib={max(peaks):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
