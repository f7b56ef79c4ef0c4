"""A large campaign's statistics summed over customer ranges on several connections.

PostgreSQL only: the ranges' connections import the caller's snapshot, so the data must be
committed, in a schema of its own (dropped at the end) rather than the run's rolled-back
test transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, func, insert, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from analytics.queries import arm_statistics_and_adoption
from campaigns.models import Assignment, ChannelEvent
from seeds.demo import seed_demo_world
from tests.scratch import scratch_database

pytestmark = pytest.mark.postgres_only

NOW = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.fixture(scope="module")
def committed(database: tuple[str, str | None], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Engine, int]]:
    url, _ = database
    # The postgres_only marker deselects this module on SQLite (make test-sqlite).
    assert url.startswith("postgresql"), "ranges on several connections need PostgreSQL"
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
    seen: list[str] = []

    def capture(_conn: object, _cursor: object, statement: str, _parameters: object,
                _context: object, _many: bool) -> None:
        if statement.startswith("SET TRANSACTION SNAPSHOT"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    return seen


class TestRanges:
    def test_same_figures_as_one_statement(self, committed: tuple[Engine, int],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
        engine, campaign_id = committed
        snapshots = count_range_statements(engine)
        with engine.connect() as connection:
            whole = statistics(connection, campaign_id, ranges=False, monkeypatch=monkeypatch)
            assert snapshots == []
            split = statistics(connection, campaign_id, ranges=True, monkeypatch=monkeypatch)
        assert len(snapshots) == 3  # three connections, each on the caller's snapshot
        assert split == whole
        with engine.connect() as connection:
            exposed = connection.execute(
                select(func.count()).where(
                    Assignment.__table__.c.campaign_id == campaign_id)  # type: ignore[attr-defined]
            ).scalar_one()
        assert sum(row["n"] for row in whole[0]) == exposed > 100
        assert sum(row["adoption_sum"] for row in whole[0]) > 0

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
                    assignment = other.execute(
                        select(Assignment.__table__).where(  # type: ignore[attr-defined]
                            Assignment.__table__.c.campaign_id == campaign_id)  # type: ignore[attr-defined]
                        .limit(1)).one()
                    event_row = other.execute(
                        select(ChannelEvent.__table__).limit(1)).one()  # type: ignore[attr-defined]
                    other.execute(insert(ChannelEvent.__table__).values(  # type: ignore[attr-defined]
                        client_event_id=f"late-{secrets.token_hex(4)}",
                        customer_id=assignment.customer_id, channel_id=event_row.channel_id,
                        stage_id=event_row.stage_id, kind="interaction",
                        occurred_at=assignment.first_exposed_at + timedelta(hours=1),
                        cost_minor=10**6))
                split = statistics(caller, campaign_id, ranges=True, monkeypatch=monkeypatch)
            assert split == before
            after = statistics(caller, campaign_id, ranges=True, monkeypatch=monkeypatch)
        cost = sum(row["cost_to_serve_sum"] for row in after[0])
        assert cost == sum(row["cost_to_serve_sum"] for row in before[0]) + 10**6
