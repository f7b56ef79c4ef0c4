"""A large campaign's statistics summed over customer ranges on several connections.

The ranges' connections read what the caller reads (PostgreSQL: they import its snapshot;
SQLite: they read while it holds the write lock), so the data must be committed, in a
scratch database (dropped at the end) rather than the run's rolled-back test transaction.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, func, insert, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from analytics.queries import _pinned_readers, arm_statistics_and_adoption, report_view
from campaigns.db import SQLITE_READ_ONLY
from campaigns.models import Assignment, ChannelEvent
from seeds.demo import seed_demo_world
from tests.scratch import scratch_database

NOW = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.fixture(scope="module")
def committed(database: tuple[str, str | None], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Engine, int]]:
    with scratch_database(database, tmp_path_factory.mktemp("ranges"),
                          prefix="cs_ranges") as scratch:
        engine = scratch.engine
        with Session(engine) as session:
            summary = seed_demo_world(session, seed=11, customers=1_200, now=NOW)
            session.commit()
        yield engine, summary.ended_campaign_id


def statistics(connection: Connection, campaign_id: int, *, ranges: bool,
               monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict], dict, dict]:
    import analytics.queries as queries

    monkeypatch.setattr(queries, "PARTITION_MIN_EXPOSURES", 1 if ranges else 10**12)
    monkeypatch.setattr(queries, "report_parallelism", lambda _connection: 3)
    rows, daily = arm_statistics_and_adoption(connection, campaign_id, segment="value_tier")
    return rows, daily.exposed, daily.adopted


def count_range_statements(engine: Engine) -> list[str]:
    """The statements that begin a range connection's transaction, as they run."""
    seen: list[str] = []
    begins = ("SET TRANSACTION SNAPSHOT" if engine.dialect.name == "postgresql"
              else "BEGIN DEFERRED")

    def capture(_conn: object, _cursor: object, statement: str, _parameters: object,
                _context: object, _many: bool) -> None:
        if statement.startswith(begins):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    return seen


def add_late_event(connection: Connection, campaign_id: int) -> None:
    """An interaction costing 10**6 an hour into one exposure's window."""
    assignment = connection.execute(
        select(Assignment.__table__).where(  # type: ignore[attr-defined]
            Assignment.__table__.c.campaign_id == campaign_id)  # type: ignore[attr-defined]
        .limit(1)).one()
    event_row = connection.execute(
        select(ChannelEvent.__table__).limit(1)).one()  # type: ignore[attr-defined]
    connection.execute(insert(ChannelEvent.__table__).values(  # type: ignore[attr-defined]
        client_event_id=f"late-{secrets.token_hex(4)}",
        customer_id=assignment.customer_id, channel_id=event_row.channel_id,
        stage_id=event_row.stage_id, kind="interaction",
        occurred_at=assignment.first_exposed_at + timedelta(hours=1), cost_minor=10**6))


class TestRanges:
    def test_same_figures_as_one_statement(self, committed: tuple[Engine, int],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
        engine, campaign_id = committed
        snapshots = count_range_statements(engine)
        with engine.connect() as connection:
            whole = statistics(connection, campaign_id, ranges=False, monkeypatch=monkeypatch)
            assert snapshots == []
            split = statistics(connection, campaign_id, ranges=True, monkeypatch=monkeypatch)
        assert len(snapshots) == 3  # three connections, each reading what the caller reads
        assert split == whole
        with engine.connect() as connection:
            exposed = connection.execute(
                select(func.count()).where(
                    Assignment.__table__.c.campaign_id == campaign_id)  # type: ignore[attr-defined]
            ).scalar_one()
        assert sum(row["n"] for row in whole[0]) == exposed > 100
        assert sum(row["adoption_sum"] for row in whole[0]) > 0

    @pytest.mark.postgres_only  # SQLite: nothing commits while the caller reads (next test)
    def test_ranges_read_the_callers_snapshot(self, committed: tuple[Engine, int],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
        """Exposures and events committed after the caller's snapshot are not counted,
        though the ranges' connections open after that commit."""
        engine, campaign_id = committed
        with engine.connect() as caller:
            caller = caller.execution_options(isolation_level="REPEATABLE READ")
            with caller.begin():
                before = statistics(caller, campaign_id, ranges=False, monkeypatch=monkeypatch)
                with engine.begin() as other:
                    add_late_event(other, campaign_id)
                split = statistics(caller, campaign_id, ranges=True, monkeypatch=monkeypatch)
            assert split == before
            after = statistics(caller, campaign_id, ranges=True, monkeypatch=monkeypatch)
        cost = sum(row["cost_to_serve_sum"] for row in after[0])
        assert cost == sum(row["cost_to_serve_sum"] for row in before[0]) + 10**6

    def test_sqlite_writers_wait_for_the_ranges(self, committed: tuple[Engine, int],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        """SQLite: a writer that tries to commit while the ranges run waits for the
        caller's transaction to end, so the ranges count none of its events."""
        engine, campaign_id = committed
        if engine.dialect.name != "sqlite":
            pytest.skip("PostgreSQL's writers do not wait: the previous test")
        written = threading.Event()

        def write_late_event() -> None:
            with engine.begin() as other:
                add_late_event(other, campaign_id)
            written.set()

        writer = threading.Thread(target=write_late_event)
        with engine.connect() as caller:
            before = statistics(caller, campaign_id, ranges=False, monkeypatch=monkeypatch)
            writer.start()
            # Time enough for the writer to commit, were the caller not holding the lock.
            time.sleep(0.5)
            assert not written.is_set()
            split = statistics(caller, campaign_id, ranges=True, monkeypatch=monkeypatch)
            assert split == before
        writer.join(timeout=30)
        assert written.is_set()
        with engine.connect() as caller:
            after = statistics(caller, campaign_id, ranges=True, monkeypatch=monkeypatch)
        cost = sum(row["cost_to_serve_sum"] for row in after[0])
        assert cost == sum(row["cost_to_serve_sum"] for row in before[0]) + 10**6

    def test_sqlite_reader_without_the_lock_runs_one_statement(
            self, committed: tuple[Engine, int], monkeypatch: pytest.MonkeyPatch) -> None:
        """SQLite: a caller in a read-only transaction does not keep writers out, so new
        connections could read a later commit than it does: no ranges."""
        engine, campaign_id = committed
        if engine.dialect.name != "sqlite":
            pytest.skip("SQLite's read-only transactions")
        begins = count_range_statements(engine)
        with engine.connect() as caller:
            caller = caller.execution_options(**SQLITE_READ_ONLY)
            split = statistics(caller, campaign_id, ranges=True, monkeypatch=monkeypatch)
            assert begins == ["BEGIN DEFERRED"]  # the caller's own
            whole = statistics(caller, campaign_id, ranges=False, monkeypatch=monkeypatch)
        assert split == whole


class TestReportView:
    """The read-only view the report routes and commands read in."""

    def test_writers_go_on_while_the_ranges_read_the_views_state(
            self, committed: tuple[Engine, int], monkeypatch: pytest.MonkeyPatch) -> None:
        """An event committed while a view is open commits at once (on SQLite too, where
        a report used to hold the write lock), and neither the view's own statements nor
        its ranges count it; the next view does."""
        import analytics.queries as queries

        engine, campaign_id = committed
        monkeypatch.setattr(queries, "report_parallelism", lambda _connection: 3)
        written = threading.Event()

        def write_late_event() -> None:
            with engine.begin() as other:
                add_late_event(other, campaign_id)
            written.set()

        with report_view(engine) as view:
            if engine.dialect.name == "sqlite":
                # Opened with the view, under a momentary write lock: same state.
                assert len(_pinned_readers(view)) == 3
            before = statistics(view, campaign_id, ranges=False, monkeypatch=monkeypatch)
            writer = threading.Thread(target=write_late_event)
            writer.start()
            writer.join(timeout=10)
            assert written.is_set(), "the writer waited for the report's view"
            split = statistics(view, campaign_id, ranges=True, monkeypatch=monkeypatch)
            assert split == before
            again = statistics(view, campaign_id, ranges=False, monkeypatch=monkeypatch)
            assert again == before
        with report_view(engine) as view:
            after = statistics(view, campaign_id, ranges=True, monkeypatch=monkeypatch)
        cost = sum(row["cost_to_serve_sum"] for row in after[0])
        assert cost == sum(row["cost_to_serve_sum"] for row in before[0]) + 10**6

    def test_one_connection_when_the_process_has_one_core(
            self, committed: tuple[Engine, int], monkeypatch: pytest.MonkeyPatch) -> None:
        import analytics.queries as queries

        engine, campaign_id = committed
        monkeypatch.setattr(queries, "report_parallelism", lambda _connection: 1)
        with report_view(engine) as view:
            assert _pinned_readers(view) == []
            rows, _, _ = statistics(view, campaign_id, ranges=False, monkeypatch=monkeypatch)
        assert sum(row["n"] for row in rows) > 100
