"""The SQL sufficient statistics against an independent computation on the raw rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from analytics.queries import MEAN_METRICS, arm_statistics, goal_window
from campaigns.models import (
    Arm,
    Assignment,
    ChannelCost,
    ChannelEvent,
    Conversion,
    LotteryDraw,
    LotteryWinner,
    Redemption,
)
from seeds.demo import seed_demo_world

NOW = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.fixture
def demo(session: Session):
    summary = seed_demo_world(session, seed=7, customers=1_500, now=NOW)
    session.flush()
    return summary


def frame(session: Session, model, columns: list[str]) -> pd.DataFrame:
    rows = session.exec(select(*(getattr(model, c) for c in columns))).all()
    return pd.DataFrame(rows, columns=columns)


def independent(session: Session, campaign_id: int, *,
                pre_days: int | None = None) -> pd.DataFrame:
    """Per-customer metrics computed in pandas from every raw row (the slow, obvious way);
    the pre-period is ``pre_days`` long (default: the goal's window)."""
    window = goal_window(session.connection(), campaign_id)
    days = timedelta(days=window.window_days)
    pre_period = timedelta(days=pre_days) if pre_days is not None else days
    assignments = frame(session, Assignment, ["id", "campaign_id", "customer_id", "arm_id",
                                              "first_exposed_at"])
    assignments = assignments[assignments.campaign_id == campaign_id]
    events = frame(session, ChannelEvent, ["customer_id", "channel_id", "stage_id", "kind",
                                           "occurred_at", "cost_minor"])
    # An event without a cost is charged its channel's configured cost at its stage.
    costs = frame(session, ChannelCost, ["channel_id", "stage_id", "cost_minor"])
    events = events.merge(costs.rename(columns={"cost_minor": "configured_cost"}),
                          on=["channel_id", "stage_id"], how="left")
    events["cost_minor"] = events.cost_minor.fillna(events.configured_cost)
    conversions = frame(session, Conversion, ["customer_id", "occurred_at", "revenue_minor"])
    redemptions = frame(session, Redemption, ["campaign_id", "customer_id", "cost_minor",
                                              "status"])
    redemptions = redemptions[(redemptions.campaign_id == campaign_id)
                              & (redemptions.status == "applied")]
    # Prizes won in the campaign's draws are incentive cost too.
    draws = frame(session, LotteryDraw, ["id", "campaign_id"])
    winners = frame(session, LotteryWinner, ["draw_id", "customer_id", "value_minor"])
    winners = winners[winners.draw_id.isin(draws[draws.campaign_id == campaign_id].id)]
    out = []
    for a in assignments.itertuples():
        start, end, pre = a.first_exposed_at, a.first_exposed_at + days, \
            a.first_exposed_at - pre_period
        ev = events[events.customer_id == a.customer_id]
        win = ev[(ev.occurred_at >= start) & (ev.occurred_at < end)]
        before = ev[(ev.occurred_at >= pre) & (ev.occurred_at < start)]
        stage = win[(win.stage_id == window.stage_id) & (win.kind == "interaction")]
        stage_pre = before[(before.stage_id == window.stage_id)
                           & (before.kind == "interaction")]
        conv = conversions[(conversions.customer_id == a.customer_id)
                           & (conversions.occurred_at >= start) & (conversions.occurred_at < end)]
        target_n = int((stage.channel_id == window.target_channel_id).sum())
        out.append({
            "arm_id": a.arm_id,
            "adoption": int(target_n > 0),
            "target_n": target_n, "stage_n": len(stage),
            "source_interactions": int(stage.channel_id.isin(window.source_channel_ids).sum()),
            "cost_to_serve": int(win[win.kind == "interaction"].cost_minor.fillna(0).sum()),
            "conversion": int(len(conv) > 0), "revenue": int(conv.revenue_minor.sum()),
            "incentive_cost": int(redemptions[redemptions.customer_id
                                              == a.customer_id].cost_minor.sum())
            + int(winners[winners.customer_id == a.customer_id].value_minor.sum()),
            "complaints": int((win.kind == "complaint").sum()),
            "churn": int((win.kind == "churn").any()),
            "adoption_pre": int((stage_pre.channel_id == window.target_channel_id).any()),
            "cost_to_serve_pre": int(before[before.kind == "interaction"].cost_minor
                                     .fillna(0).sum()),
        })
    return pd.DataFrame(out)


class TestArmStatistics:
    def test_matches_raw_rows(self, session: Session, demo) -> None:
        campaign_id = demo.ended_campaign_id
        # Some senders leave the cost out: those events cost what the channel costs.
        session.execute(update(ChannelEvent).where(col(ChannelEvent.id) % 3 == 0)
                        .values(cost_minor=None))
        stats = {row["arm_id"]: row for row in arm_statistics(session.connection(),
                                                              campaign_id)}
        raw = independent(session, campaign_id)
        assert set(stats) == set(raw.arm_id)
        assert sum(row["n"] for row in stats.values()) == len(raw)
        for arm_id, group in raw.groupby("arm_id"):
            row = stats[arm_id]
            assert row["n"] == len(group)
            for metric in MEAN_METRICS:
                assert row[f"{metric}_sum"] == group[metric].sum(), metric
                assert row[f"{metric}_sum_sq"] == (group[metric] ** 2).sum(), metric
            assert row["target_n_sum"] == group.target_n.sum()
            assert row["stage_n_sum"] == group.stage_n.sum()
            assert row["target_stage_cross"] == (group.target_n * group.stage_n).sum()
            assert row["adoption_pre_sum"] == group.adoption_pre.sum()
            assert row["adoption_cross"] == (group.adoption * group.adoption_pre).sum()
        # the data are not trivially empty: something happened in every column that matters
        assert raw.adoption.sum() > 50 and raw.cost_to_serve.sum() > 0
        assert raw.incentive_cost.sum() > 0 and raw.adoption_pre.sum() > 0

    def test_segments_partition_the_arms(self, session: Session, demo) -> None:
        connection = session.connection()
        whole = {r["arm_id"]: r for r in arm_statistics(connection, demo.ended_campaign_id)}
        parts = arm_statistics(connection, demo.ended_campaign_id, segment="value_tier")
        assert {p["segment_value"] for p in parts} <= {"bronze", "silver", "gold"}
        for arm_id, row in whole.items():
            mine = [p for p in parts if p["arm_id"] == arm_id]
            assert sum(p["n"] for p in mine) == row["n"]
            assert sum(p["adoption_sum"] for p in mine) == row["adoption_sum"]

    def test_unknown_segment(self, session: Session, demo) -> None:
        with pytest.raises(ValueError, match="unknown segment column 'shoe_size'"):
            arm_statistics(session.connection(), demo.ended_campaign_id, segment="shoe_size")

    def test_arm_names_and_control(self, session: Session, demo) -> None:
        rows = arm_statistics(session.connection(), demo.ended_campaign_id)
        arms = session.exec(select(Arm).where(Arm.campaign_id == demo.ended_campaign_id)
                            .order_by(Arm.position)).all()
        assert [(r["arm"], r["is_control"]) for r in rows] == [(a.name, a.is_control)
                                                               for a in arms]
