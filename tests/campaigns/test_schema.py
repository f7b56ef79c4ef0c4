"""The schema itself: migrations, money types, and the invariants the database enforces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Float, Numeric, inspect, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlmodel import Session, col, select

from campaigns import migrate
from campaigns.db import build_engine, check_schema_current, current_revision
from campaigns.errors import SchemaOutOfDate
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    ChannelEvent,
    CouponCode,
    Incentive,
    PointsLedger,
    metadata,
)
from tests.builders import make_campaign, make_channel, make_customer, make_goal
from tests.scratch import empty_schema

MONEY_SUFFIXES = ("_minor",)


class TestMoneyColumns:
    def test_no_float_outside_imported_measurements(self) -> None:
        # Imported experiments carry an analyst's measurements (rates, counts, revenue in
        # the source's units); nothing ChannelShift charges or counts is a float.
        floats = [f"{table.name}.{column.name}" for table in metadata.tables.values()
                  for column in table.columns if isinstance(column.type, Float)]
        assert sorted(floats) == ["experiment_unit.score", "experiment_value.pre_value",
                                  "experiment_value.value"]

    def test_money_columns_are_integers(self) -> None:
        money = [(table.name, column) for table in metadata.tables.values()
                 for column in table.columns if column.name.endswith(MONEY_SUFFIXES)]
        assert len(money) >= 10
        for table, column in money:
            assert column.type.python_type is int, f"{table}.{column.name} is {column.type}"
            assert not isinstance(column.type, Numeric | Float)


class TestMigrations:
    def test_chain_is_linear_with_one_head(self) -> None:
        script = ScriptDirectory.from_config(migrate.alembic_config())
        assert len(script.get_heads()) == 1
        revisions = list(script.walk_revisions())
        assert len(revisions) >= 1
        for revision in revisions:
            assert isinstance(revision.down_revision, str | None), "merge revisions not allowed"

    def test_schema_matches_models(self, engine) -> None:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), metadata)
        assert diff == []

    def test_upgrade_twice_is_a_no_op(self, engine) -> None:
        before = current_revision(engine)
        tables_before = set(inspect(engine).get_table_names())
        migrate.upgrade(engine)
        assert current_revision(engine) == before == migrate.head_revision()
        assert set(inspect(engine).get_table_names()) == tables_before

    def test_rebuilding_a_parent_table_keeps_its_children(self, tmp_path) -> None:
        # 0005 rebuilds `campaign` on SQLite (copy, drop, rename); with foreign keys on,
        # the drop would cascade into arms. Data written under 0004 must survive.
        database = build_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
        migrate.upgrade(database, "0004")
        with database.begin() as connection:
            for statement in (
                "INSERT INTO stage (id, key, name, position) VALUES (1, 'after_sale', 'A', 1)",
                "INSERT INTO channel (id, key, name, kind, active, created_at) VALUES "
                "(1, 'web', 'Web', 'web', 1, '2026-01-01 00:00:00.000000')",
                "INSERT INTO migration_goal (id, name, description, stage_id, target_channel_id,"
                " metric, window_days, target_uplift, created_at) VALUES (1, 'g', '', 1, 1,"
                " 'adoption', 30, 0.05, '2026-01-01 00:00:00.000000')",
                "INSERT INTO campaign (id, name, description, goal_id, status, spent_minor,"
                " currency, stacking, priority, salt, allocation_period, control_opt_out,"
                " config_version, created_at, updated_at) VALUES (1, 'c', '', 1, 'draft', 0,"
                " 'EUR', 'exclusive', 0, 's', 1, 0, 1, '2026-01-01 00:00:00.000000',"
                " '2026-01-01 00:00:00.000000')",
                "INSERT INTO arm (id, campaign_id, name, weight, is_control, position)"
                " VALUES (1, 1, 'control', 100, 1, 0)",
            ):
                connection.exec_driver_sql(statement)
        migrate.upgrade(database)
        with database.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM arm").scalar() == 1
            row = connection.exec_driver_sql(
                "SELECT origin, guardrails FROM campaign").one()
            assert row.origin == "live"
            assert "complaints" in row.guardrails
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        with pytest.raises(IntegrityError), database.begin() as connection:
            connection.exec_driver_sql(
                "UPDATE campaign SET goal_id = NULL WHERE id = 1")

    def test_assignment_keys_go_and_come_back_with_the_data(self, database, tmp_path) -> None:
        # 0007 drops assignment's campaign, arm and channel keys for triggers (a rebuild of
        # the table on SQLite); its downgrade puts them back. Both keep the rows.
        url = database[0]
        if url.startswith("sqlite"):
            url = f"sqlite:///{(tmp_path / 'keys.sqlite3').as_posix()}"
        with empty_schema(url, prefix="cs_keys") as schema:
            engine = build_engine(url, schema=schema)
            try:
                migrate.upgrade(engine)
                with Session(engine) as session:
                    campaign_id = TestAssignmentParents._assign(session, "C1", "C2")[0].id
                    session.commit()

                def parents() -> list[str]:
                    return sorted(key["referred_table"]
                                  for key in inspect(engine).get_foreign_keys("assignment"))

                def assignments() -> int:
                    with engine.connect() as connection:
                        return connection.exec_driver_sql(
                            "SELECT count(*) FROM assignment").scalar_one()

                assert parents() == ["customer"]
                migrate.downgrade(engine, "0006")
                assert parents() == ["arm", "campaign", "channel", "customer"]
                assert assignments() == 2
                migrate.upgrade(engine)
                assert parents() == ["customer"]
                assert assignments() == 2
                with engine.begin() as connection:
                    connection.execute(text("DELETE FROM campaign WHERE id = :id"),
                                       {"id": campaign_id})
                assert assignments() == 0
            finally:
                engine.dispose()

    def test_empty_database_is_refused(self, tmp_path) -> None:
        empty = build_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
        with pytest.raises(SchemaOutOfDate, match="channelshift db upgrade"):
            check_schema_current(empty)
        migrate.upgrade(empty)
        check_schema_current(empty)
        migrate.downgrade(empty, "base")
        assert current_revision(empty) is None
        assert "campaign" not in inspect(empty).get_table_names()


class TestTimes:
    def test_naive_datetime_is_refused(self, session: Session) -> None:
        customer = make_customer(session)
        channel = make_channel(session, key="web")
        goal = make_goal(session)
        session.add(ChannelEvent(client_event_id="e1", customer_id=customer.id,
                                 channel_id=channel.id, stage_id=goal.stage_id,
                                 occurred_at=datetime(2026, 1, 1)))
        with pytest.raises(StatementError, match="naive datetime"):
            session.flush()

    def test_times_come_back_aware_utc(self, session: Session) -> None:
        customer = make_customer(session)
        channel = make_channel(session, key="web")
        goal = make_goal(session)
        paris = timezone(timedelta(hours=2))
        event = ChannelEvent(client_event_id="e2", customer_id=customer.id, channel_id=channel.id,
                             stage_id=goal.stage_id,
                             occurred_at=datetime(2026, 6, 1, 12, 0, tzinfo=paris))
        session.add(event)
        session.flush()
        session.expire_all()
        loaded = session.get(ChannelEvent, event.id)
        assert loaded.occurred_at == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
        assert loaded.occurred_at.utcoffset() == timedelta(0)


class TestDatabaseInvariants:
    """Each invariant holds even for a writer that bypasses the services."""

    def test_budget_cannot_be_overspent(self, session: Session) -> None:
        campaign = make_campaign(session, budget_minor=1_000)
        with pytest.raises(IntegrityError), session.begin_nested():
            session.execute(update(Campaign).where(Campaign.id == campaign.id)
                            .values(spent_minor=1_001))
        session.execute(update(Campaign).where(Campaign.id == campaign.id)
                        .values(spent_minor=1_000))

    def test_single_use_code_cannot_be_used_twice(self, session: Session) -> None:
        incentive = Incentive(name="c", type="coupon", config={})
        session.add(incentive)
        session.flush()
        code = CouponCode(code="ABCD2345EF", incentive_id=incentive.id, max_uses=1, uses=1)
        session.add(code)
        session.flush()
        with pytest.raises(IntegrityError), session.begin_nested():
            session.execute(update(CouponCode).where(CouponCode.id == code.id)
                            .values(uses=CouponCode.uses + 1))

    def test_code_is_unique(self, session: Session) -> None:
        incentive = Incentive(name="c", type="coupon", config={})
        session.add(incentive)
        session.flush()
        session.add(CouponCode(code="SAME", incentive_id=incentive.id))
        session.flush()
        session.add(CouponCode(code="SAME", incentive_id=incentive.id))
        with pytest.raises(IntegrityError):
            session.flush()

    def test_one_control_arm_per_campaign(self, session: Session) -> None:
        campaign = make_campaign(session)
        session.add(Arm(campaign_id=campaign.id, name="second control", weight=1,
                        is_control=True))
        with pytest.raises(IntegrityError):
            session.flush()

    def test_control_arm_has_no_incentive(self, session: Session) -> None:
        campaign = make_campaign(session)
        incentive = Incentive(name="x", type="percent_discount", config={"percent_bp": 100})
        session.add(incentive)
        session.flush()
        session.add(Arm(campaign_id=campaign.id, name="odd", weight=1, is_control=True,
                        incentive_id=incentive.id))
        with pytest.raises(IntegrityError):
            session.flush()

    def test_points_ledger_is_append_only(self, session: Session) -> None:
        customer = make_customer(session)
        entry = PointsLedger(customer_id=customer.id, delta=100, reason="welcome",
                             source_ref="welcome:C1")
        session.add(entry)
        session.flush()
        with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
            session.execute(text("UPDATE points_ledger SET delta = 5"))
        with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
            session.execute(text("DELETE FROM points_ledger"))
        session.add(PointsLedger(customer_id=customer.id, delta=-40, reason="correction",
                                 source_ref="fix:1"))
        session.flush()

    def test_foreign_keys_are_enforced(self, session: Session) -> None:
        session.add(Arm(campaign_id=999_999, name="orphan", weight=1, is_control=True))
        with pytest.raises(IntegrityError):
            session.flush()


class TestAssignmentParents:
    """An assignment names its campaign, arm and exposure channel without foreign keys
    (migration 0007): deleting one of them, even by hand, still does what the keys did."""

    @staticmethod
    def _assign(session: Session, *customers: str, name: str = "Spring push"
                ) -> tuple[Campaign, list[Arm], int]:
        campaign = make_campaign(session, name=name)
        arms = list(session.exec(select(Arm).where(Arm.campaign_id == campaign.id)
                                 .order_by(col(Arm.id))))
        channel = make_channel(session, key="kiosk")
        for i, external_id in enumerate(customers):
            session.add(Assignment(campaign_id=campaign.id, arm_id=arms[i % 2].id,
                                   customer_id=make_customer(session, external_id=external_id).id,
                                   exposure_channel_id=channel.id))
        session.flush()
        assert channel.id is not None
        return campaign, arms, channel.id

    @staticmethod
    def _rows(session: Session) -> list[tuple[int, int, int | None]]:
        return [tuple(row) for row in session.execute(text(
            "SELECT campaign_id, arm_id, exposure_channel_id FROM assignment ORDER BY id"))]

    def test_deleting_a_campaign_deletes_its_assignments(self, session: Session) -> None:
        campaign, _, _ = self._assign(session, "C1", "C2")
        other, other_arms, channel_id = self._assign(session, "C3", name="Summer push")
        session.execute(text("DELETE FROM campaign WHERE id = :id"), {"id": campaign.id})
        assert self._rows(session) == [(other.id, other_arms[0].id, channel_id)]

    def test_deleting_an_arm_deletes_its_assignments(self, session: Session) -> None:
        campaign, arms, channel_id = self._assign(session, "C1", "C2", "C3")
        session.execute(text("DELETE FROM arm WHERE id = :id"), {"id": arms[1].id})
        assert self._rows(session) == [(campaign.id, arms[0].id, channel_id)] * 2

    def test_deleting_a_channel_clears_the_exposure_channel(self, session: Session) -> None:
        campaign, arms, channel_id = self._assign(session, "C1", "C2")
        session.execute(text("DELETE FROM channel WHERE id = :id"), {"id": channel_id})
        assert self._rows(session) == [(campaign.id, arms[0].id, None),
                                       (campaign.id, arms[1].id, None)]
