"""Migration 0009 on data written before it: entries held are counted, shared coupons get
their code row, and a downgrade keeps the data."""

from __future__ import annotations

import json

from sqlalchemy import inspect, text

from campaigns import migrate
from campaigns.db import build_engine
from tests.scratch import empty_schema

_BEFORE = (
    "INSERT INTO stage (id, key, name, position) VALUES (1, 'after_sale', 'A', 1)",
    "INSERT INTO channel (id, key, name, kind, active, created_at) VALUES "
    "(1, 'web', 'Web', 'web', true, '2026-01-01 00:00:00+00')",
    "INSERT INTO migration_goal (id, name, description, stage_id, target_channel_id, metric,"
    " window_days, target_uplift, created_at) VALUES (1, 'g', '', 1, 1, 'adoption', 30, 0.05,"
    " '2026-01-01 00:00:00+00')",
    "INSERT INTO campaign (id, name, description, goal_id, status, spent_minor, currency,"
    " stacking, priority, salt, allocation_period, control_opt_out, config_version, origin,"
    " guardrails, created_at, updated_at) VALUES (1, 'c', '', 1, 'running', 0, 'EUR',"
    " 'exclusive', 0, 's', 1, true, 1, 'live', '[]', '2026-01-01 00:00:00+00',"
    " '2026-01-01 00:00:00+00')",
    "INSERT INTO customer (id, external_id, points, tenure_months, lifetime_value_minor,"
    " is_new, attributes, created_at) VALUES"
    " (1, 'C1', 0, 0, 0, false, '{}', '2026-01-01 00:00:00+00'),"
    " (2, 'C2', 0, 0, 0, false, '{}', '2026-01-01 00:00:00+00')",
    "INSERT INTO assignment (id, campaign_id, customer_id, arm_id, allocation_period,"
    " first_exposed_at, redemption_count) VALUES (1, 1, 1, 1, 1, '2026-01-01 00:00:00+00', 0),"
    " (2, 1, 2, 1, 1, '2026-01-01 00:00:00+00', 0)",
    "INSERT INTO lottery_entry (campaign_id, incentive_id, customer_id, entries, source_ref,"
    " created_at) VALUES (1, 1, 1, 2, 'event:a', '2026-01-01 00:00:00+00'),"
    " (1, 1, 1, 3, 'event:b', '2026-01-01 00:00:00+00')",
)


def _incentive(id_: int, config: dict) -> str:
    return ("INSERT INTO incentive (id, name, type, config, created_at) VALUES "
            f"({id_}, 'i{id_}', 'coupon', '{json.dumps(config)}', '2026-01-01 00:00:00+00')")


class TestMigration0009:
    def test_counts_entries_adds_shared_codes_and_downgrades(self, database, tmp_path) -> None:
        url = database[0]
        if url.startswith("sqlite"):
            url = f"sqlite:///{(tmp_path / 'm0009.sqlite3').as_posix()}"
        benefit = {"kind": "fixed", "amount_minor": 100}
        with empty_schema(url, prefix="cs_m0009") as schema:
            engine = build_engine(url, schema=schema)
            try:
                migrate.upgrade(engine, "0008")
                with engine.begin() as connection:
                    connection.exec_driver_sql(_incentive(1, {"mode": "shared", "code": "SAVE5",
                                                              "max_redemptions": 3,
                                                              "benefit": benefit}))
                    connection.exec_driver_sql(_incentive(2, {"mode": "batch", "prefix": "B",
                                                              "benefit": benefit}))
                    for statement in _BEFORE:
                        connection.exec_driver_sql(statement)
                migrate.upgrade(engine)
                with engine.connect() as connection:
                    held = connection.execute(text(
                        "SELECT customer_id, lottery_entries FROM assignment ORDER BY id")).all()
                    codes = connection.execute(text(
                        "SELECT code, incentive_id, campaign_id, max_uses, uses "
                        "FROM coupon_code")).all()
                assert [tuple(row) for row in held] == [(1, 5), (2, 0)]
                assert [tuple(row) for row in codes] == [("SAVE5", 1, None, 3, 0)]
                migrate.downgrade(engine, "0008")
                columns = {c["name"] for c in inspect(engine).get_columns("assignment")}
                assert "lottery_entries" not in columns
                assert "coupon_code_use" not in inspect(engine).get_table_names()
                with engine.connect() as connection:
                    assert connection.execute(text(
                        "SELECT count(*) FROM lottery_entry")).scalar_one() == 2
                migrate.upgrade(engine)
                with engine.connect() as connection:
                    assert connection.execute(text(
                        "SELECT count(*) FROM coupon_code")).scalar_one() == 1
            finally:
                engine.dispose()
