"""Audience counts in SQL: exactly the customers Rule.evaluate accepts, on SQLite and PostgreSQL.

The compiled condition is checked customer by customer against the Python evaluator over a
population built to hit the awkward cases (missing values, custom attributes of every JSON
type, decimals against integer columns, negations), and the counts against hand-written SQL.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from campaigns.errors import InvalidRule
from campaigns.models import ChannelEvent, Conversion, Customer, Stage
from campaigns.rules import parse_rule
from campaigns.services.audience import (
    count_customers,
    count_matching,
    live_campaigns,
    overlap_count,
    rule_condition,
    stage_adoption,
    typical_order_minor,
)
from campaigns.services.campaigns import transition
from campaigns.services.channels import channel_by_key
from campaigns.services.customers import customer_attributes
from tests.builders import make_campaign, make_channel, make_goal

CU = Customer.__table__  # type: ignore[attr-defined]

CUSTOM_VALUES = [None, "gold", "7", 7, 7.5, 0.3, True, False, [1, 2], {"a": 1}, 12, -3, "yes"]

RULES = [
    "value_tier == gold",
    "value_tier != gold",
    "not (value_tier == gold)",
    "value_tier in [bronze, silver]",
    "value_tier not in [bronze, silver]",
    "not (region == north) and segment != consumer",
    "tenure_months >= 12 or is_new == true",
    "tenure_months > 7.5",
    "tenure_months < 7.5",
    "tenure_months <= 7",
    "tenure_months == 7.0",
    "tenure_months == 7.5",
    "tenure_months != 7.5",
    "tenure_months in [1, 2.5, 3.0]",
    "points >= 100 and lifetime_value < 50000",
    "is_new == false",
    "preferred_channel == web or (region == south and not (age_band in [a18_24]))",
    "attr.score == 7",
    "attr.score != 7",
    "attr.score == '7'",
    "attr.score > 6.9",
    "attr.score <= 0.3",
    "attr.score == 0.3",
    "attr.score == true",
    "attr.score != false",
    "attr.score in [gold, 7, true]",
    "attr.score not in [gold, 7, true]",
    "not (attr.score == gold)",
    "attr.score >= -3 and attr.score < 12",
    "attr.missing == 1 or not (attr.missing == 1)",
]
EVERYONE = frozenset({"tenure_months != 7.5", "attr.missing == 1 or not (attr.missing == 1)"})


@pytest.fixture
def population(session: Session) -> list[Customer]:
    """Customers covering every kind of value, NULLs and absent custom keys included."""
    rng = random.Random(20260301)
    make_channel(session, key="web")
    make_channel(session, key="call_centre")
    customers = []
    for index in range(260):
        attributes = {}
        score = CUSTOM_VALUES[index % len(CUSTOM_VALUES)]
        if index % 17 != 5:  # some customers have no "score" key at all
            attributes["score"] = score
        customers.append(Customer(
            external_id=f"A{index}",
            segment=rng.choice([None, "consumer", "small_business"]),
            value_tier=rng.choice([None, "bronze", "silver", "gold", "platinum"]),
            preferred_channel=rng.choice([None, "web", "call_centre"]),
            region=rng.choice([None, "north", "south"]),
            age_band=rng.choice([None, "a18_24", "a25_34"]),
            tenure_months=rng.randrange(0, 20), points=rng.randrange(0, 300),
            lifetime_value_minor=rng.randrange(0, 100_000), is_new=rng.random() < 0.3,
            attributes=attributes))
    session.add_all(customers)
    session.flush()
    return customers


def _matching_ids(session: Session, rule_text: str) -> set[int]:
    rule = parse_rule(rule_text)
    dialect = session.get_bind().dialect.name
    rows = session.execute(select(CU.c.id).where(rule_condition(rule, dialect=dialect)))
    return {row[0] for row in rows}


class TestSqlMatchesTheEvaluator:
    @pytest.mark.parametrize("rule_text", RULES)
    def test_same_customers(self, session, population, rule_text) -> None:
        rule = parse_rule(rule_text)
        expected = {c.id for c in population if rule.evaluate(customer_attributes(c))}
        assert _matching_ids(session, rule_text) == expected
        # every rule here selects some and leaves some, or it proves little, except the
        # ones whose answer is the point: no integer equals 7.5, and a rule or its negation
        if rule_text in EVERYONE:
            assert len(expected) == len(population)
        elif rule_text == "tenure_months == 7.5":
            assert expected == set()
        else:
            assert 0 < len(expected) < len(population), rule_text

    def test_negation_is_the_complement(self, session, population) -> None:
        """SQL's NULL would drop a missing value from both sides; the rule keeps it in one."""
        inside = _matching_ids(session, "attr.score == gold")
        outside = _matching_ids(session, "not (attr.score == gold)")
        assert inside.isdisjoint(outside)
        assert inside | outside == {c.id for c in population}


class TestCounts:
    def test_against_hand_written_sql(self, session, population) -> None:
        direct = session.execute(text(
            "SELECT count(*) FROM customer WHERE value_tier IN ('bronze', 'silver') "
            "AND tenure_months >= 8 AND preferred_channel IS NOT NULL "
            "AND preferred_channel <> 'web'")).scalar_one()
        assert direct > 0
        assert count_matching(session, "value_tier in [bronze, silver] and tenure_months >= 8 "
                              "and preferred_channel != web") == direct

    def test_blank_rule_counts_everyone(self, session, population) -> None:
        assert count_matching(session, "  ") == len(population) == count_customers(session)

    def test_within_the_goals_rule(self, session, population) -> None:
        goal_rule = parse_rule("is_new == true")
        direct = session.execute(text(
            "SELECT count(*) FROM customer WHERE is_new AND tenure_months < 5"
            if session.get_bind().dialect.name == "postgresql" else
            "SELECT count(*) FROM customer WHERE is_new = 1 AND tenure_months < 5")).scalar_one()
        assert count_matching(session, "tenure_months < 5", within=[goal_rule]) == direct

    def test_overlap_of_two_audiences(self, session, population) -> None:
        ours = [parse_rule("tenure_months >= 10")]
        theirs = [parse_rule("tenure_months < 15"), parse_rule("value_tier == gold")]
        direct = session.execute(text(
            "SELECT count(*) FROM customer WHERE tenure_months BETWEEN 10 AND 14 "
            "AND value_tier = 'gold'")).scalar_one()
        assert overlap_count(session, ours, theirs) == direct > 0

    @pytest.mark.parametrize(("rule_text", "fragment"), [
        ("tenure_months >> 3", "unknown operator '>>' at position 14"),
        ("value_tier == diamond", "value 'diamond' at position 14 is not allowed"),
        ("preferred_channel == fax", "is not allowed for 'preferred_channel'"),
        ("tenure == 3", "unknown attribute 'tenure' at position 0"),
    ])
    def test_a_bad_rule_carries_its_own_message(self, session, population, rule_text,
                                                fragment) -> None:
        with pytest.raises(InvalidRule) as caught:
            count_matching(session, rule_text, field="eligibility_rule")
        [error] = caught.value.errors
        assert error.loc == ("eligibility_rule",)
        assert fragment in error.msg


class TestPlanningQueries:
    def test_stage_adoption_counts_customers_not_events(self, session) -> None:
        goal = make_goal(session)
        web, call = channel_by_key(session, "web"), channel_by_key(session, "call_centre")
        stage = session.exec(select(Stage).where(Stage.key == "after_sale")).one()
        pre = session.exec(select(Stage).where(Stage.key == "pre_sale")).one()
        now = datetime(2030, 6, 1, tzinfo=UTC)
        customers = [Customer(external_id=f"S{i}", value_tier="gold" if i < 6 else "bronze")
                     for i in range(10)]
        session.add_all(customers)
        session.flush()
        events = [  # (customer, channel, stage, days ago)
            (0, web, stage, 1), (0, web, stage, 2), (1, call, stage, 3), (1, web, stage, 29),
            (2, call, stage, 5), (3, web, pre, 5), (4, web, stage, 31), (6, web, stage, 1),
            (7, call, stage, 2)]
        for n, (who, channel, at, days) in enumerate(events):
            session.add(ChannelEvent(client_event_id=f"e{n}", customer_id=customers[who].id,
                                     channel_id=channel.id, stage_id=at.id,
                                     occurred_at=now - timedelta(days=days)))
        session.flush()
        since = now - timedelta(days=30)
        everyone = stage_adoption(session, rules=[], stage_id=stage.id, channel_id=web.id,
                                  since=since, until=now)
        # active at the stage in 30 days: 0, 1, 2, 6, 7; on the web: 0, 1, 6
        assert (everyone.active, everyone.adopted) == (5, 3)
        gold = stage_adoption(session, rules=[parse_rule("value_tier == gold")],
                              stage_id=stage.id, channel_id=web.id, since=since, until=now)
        assert (gold.active, gold.adopted, gold.rate) == (3, 2, pytest.approx(2 / 3))
        assert goal.target_channel_id == web.id

    def test_typical_order_is_exact_and_rounds_half_up(self, session) -> None:
        customers = [Customer(external_id=f"O{i}", is_new=i == 0) for i in range(2)]
        session.add_all(customers)
        session.flush()
        now = datetime(2030, 6, 1, tzinfo=UTC)
        for n, (who, revenue, days) in enumerate([(0, 1000, 1), (0, 1001, 2), (1, 9999, 3),
                                                  (0, 5000, 40)]):
            session.add(Conversion(client_event_id=f"o{n}", customer_id=customers[who].id,
                                   occurred_at=now - timedelta(days=days), revenue_minor=revenue))
        session.flush()
        new = [parse_rule("is_new == true")]
        since = now - timedelta(days=30)
        assert typical_order_minor(session, rules=new, since=since, until=now) == 1001  # 1000.5
        assert typical_order_minor(session, rules=[], since=since, until=now) == 4000
        nobody = [parse_rule("tenure_months > 1000")]
        assert typical_order_minor(session, rules=nobody, since=since, until=now) is None

    def test_live_campaigns_overlap_the_schedule(self, session) -> None:
        base = datetime(2031, 1, 1, tzinfo=UTC)
        january = make_campaign(session, name="January", starts_at=base,
                                ends_at=base + timedelta(days=31))
        transition(session, campaign=january, target="scheduled", actor="test",
                   now=base - timedelta(days=1))
        march = make_campaign(session, name="March", starts_at=base + timedelta(days=59),
                              ends_at=base + timedelta(days=90))
        transition(session, campaign=march, target="scheduled", actor="test",
                   now=base - timedelta(days=1))
        make_campaign(session, name="A draft", starts_at=base, ends_at=base + timedelta(days=90))

        def names(start: datetime, end: datetime) -> list[str]:
            return sorted(live.campaign.name
                          for live in live_campaigns(session, starts_at=start, ends_at=end))

        assert names(base + timedelta(days=20), base + timedelta(days=40)) == ["January"]
        assert names(base + timedelta(days=31), base + timedelta(days=59)) == []
        assert names(base, base + timedelta(days=100)) == ["January", "March"]
