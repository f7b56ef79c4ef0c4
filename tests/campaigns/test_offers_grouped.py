"""The offers route's grouped statements on PostgreSQL: several requests' customers, first
exposures and coupon codes in one statement each, every request getting back its own rows.

The server groups concurrent requests (campaigns.asyncdb.Grouped); here the statements
are called with several items at once, in the test's transaction, so each mix the server
can send (new and known customers, the same customer twice, customers without exposures)
is checked row by row.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

import pytest
from psycopg import ClientCursor
from psycopg.errors import UniqueViolation
from sqlmodel import Session, col, select

from campaigns.asyncdb import SessionConnection
from campaigns.models import Arm, Assignment, Campaign, CouponCode, Customer
from campaigns.services.campaigns import campaign_arms
from campaigns.services.catalog import CampaignConfig, load_snapshot
from campaigns.services.coupons import generate_coupon_batch
from campaigns.services.customers import CustomerAttributes
from campaigns.services.offers import IssuedCode
from campaigns.services.offers_postgresql import (
    _EXPOSE,
    _ISSUE_CODES,
    _STANDING,
    CodeClaim,
    CodeOffer,
    DirectSteps,
    FirstExposures,
    NewCustomer,
    _exposure_params,
    customer_offers,
    expose_all,
    get_or_create_customers,
    issue_codes,
)
from campaigns.types import utcnow
from tests.builders import (
    control_arm,
    coupon_arm,
    customer_id_in_arm,
    make_customer,
    make_running_campaign,
    percent_arm,
)
from web.deps import ASYNC_POOL_SETTINGS

pytestmark = pytest.mark.postgres_only


def attributes(**values: object) -> CustomerAttributes:
    return CustomerAttributes.model_validate(values)


def arm_ids(session: Session, campaign: Campaign) -> list[int]:
    return [arm.id for arm in campaign_arms(session, campaign) if arm.id is not None]


class TestCustomers:
    def test_each_request_gets_its_own_customer(self, session: Session) -> None:
        known = make_customer(session, external_id="K1", value_tier="platinum", region="east")
        batch = [
            NewCustomer("N1", attributes(value_tier="gold", tenure_months=14)),
            NewCustomer("K1", attributes(value_tier="bronze")),  # known: ignored
            NewCustomer("N2", attributes(region="north", is_new=True,
                                         attributes={"club": "yes"})),
            NewCustomer("N1", attributes(value_tier="silver")),  # the first one wins
        ]
        rows = asyncio.run(get_or_create_customers(SessionConnection(session), batch))
        ids = [customer_id for customer_id, _ in rows]
        assert ids[1] == known.id and ids[0] == ids[3] and len(set(ids)) == 3
        assert [values["value_tier"] for _, values in rows] == ["gold", "platinum", None, "gold"]
        assert rows[0][1]["tenure_months"] == 14
        assert rows[2][1] == {
            "segment": None, "value_tier": None, "loyalty_tier": None,
            "preferred_channel": None, "region": "north", "age_band": None,
            "tenure_months": 0, "points": 0, "lifetime_value": 0, "is_new": True,
            "attributes": {"club": "yes"}}
        stored = {customer.external_id: customer for customer in session.exec(
            select(Customer).where(col(Customer.external_id).in_(["N1", "N2", "K1"])))}
        assert set(stored) == {"N1", "N2", "K1"}
        assert (stored["N1"].value_tier, stored["K1"].value_tier) == ("gold", "platinum")
        assert stored["N2"].attributes == {"club": "yes"}


class TestExposures:
    def test_each_request_gets_its_own_standing(self, session: Session) -> None:
        first = make_running_campaign(session, name="First", arms=[control_arm(),
                                                                   percent_arm()])
        second = make_running_campaign(session, name="Second", arms=[control_arm(),
                                                                     percent_arm()])
        a, b, c = (make_customer(session, external_id=name) for name in ("A", "B", "C"))
        assert first.id and second.id and a.id and b.id and c.id
        first_arms, second_arms = arm_ids(session, first), arm_ids(session, second)
        now = utcnow()
        earlier = now - timedelta(days=2)
        session.add(Assignment(campaign_id=first.id, customer_id=c.id, arm_id=first_arms[1],
                               allocation_period=0, first_exposed_at=earlier,
                               redemption_count=2))
        session.flush()
        batch = [
            FirstExposures(a.id, [(first.id, first_arms[0], 0), (second.id, second_arms[1], 0)],
                           None, now),
            FirstExposures(b.id, [], None, now),  # nothing to expose
            FirstExposures(c.id, [(first.id, first_arms[0], 0)], None, now),  # already there
            FirstExposures(a.id, [(first.id, first_arms[1], 0)], None,
                           now + timedelta(seconds=1)),  # A again: its first request wins
        ]
        standing = asyncio.run(expose_all(SessionConnection(session), batch))
        assert {campaign: exposure.arm_id for campaign, exposure in standing[0].items()} == {
            first.id: first_arms[0], second.id: second_arms[1]}
        assert standing[1] == {}
        assert standing[2][first.id].arm_id == first_arms[1]  # the arm it already had
        assert standing[2][first.id].redemption_count == 2
        assert standing[3] == {first.id: standing[0][first.id]}
        rows = session.exec(select(Assignment.customer_id, Assignment.campaign_id,
                                   Assignment.arm_id, Assignment.first_exposed_at)).all()
        assert sorted(rows) == sorted([(a.id, first.id, first_arms[0], now),
                                       (a.id, second.id, second_arms[1], now),
                                       (c.id, first.id, first_arms[1], earlier)])

    def test_a_batch_without_exposures_sends_nothing(self, session: Session) -> None:
        class NoDatabase:
            autocommit = True

            async def execute(self, *args: object, **kwargs: object) -> None:
                raise AssertionError("no statement expected")

        batch = [FirstExposures(1, [], None, utcnow())] * 2
        assert asyncio.run(expose_all(NoDatabase(), batch)) == [{}, {}]  # type: ignore[arg-type]


class TestCodes:
    @staticmethod
    def coupon_campaign(session: Session, name: str) -> tuple[Campaign, Arm, CampaignConfig]:
        campaign = make_running_campaign(session, name=name, arms=[
            control_arm(), coupon_arm(f"{name} coupon", expires_days=10)])
        arm = next(arm for arm in campaign_arms(session, campaign) if not arm.is_control)
        config = load_snapshot(session, epoch=0).campaign(campaign.id or 0)
        assert config is not None
        return campaign, arm, config

    @staticmethod
    def claim(config: CampaignConfig, customer: Customer) -> CodeClaim:
        arm = next(arm for arm in config.arms if not arm.is_control)
        assert customer.id is not None
        return CodeClaim(config, arm, customer.id, utcnow())

    def test_each_claim_gets_its_own_code(self, session: Session) -> None:
        pooled, pooled_arm, pooled_config = self.coupon_campaign(session, "Pooled")
        _, _, fresh_config = self.coupon_campaign(session, "Fresh")
        generate_coupon_batch(session, campaign=pooled, arm=pooled_arm, count=2, actor="test")
        batch_codes = sorted(session.exec(select(CouponCode.id, CouponCode.code)).all())
        a, b, c = (make_customer(session, external_id=name) for name in ("A", "B", "C"))
        claims = [self.claim(pooled_config, a), self.claim(fresh_config, a),
                  self.claim(pooled_config, b), self.claim(pooled_config, c),
                  self.claim(pooled_config, a)]  # A again: the same code
        issued = asyncio.run(issue_codes(SessionConnection(session), claims))
        codes = [code.code for code in issued]
        assert codes[0] == codes[4] and len(set(codes)) == 4
        # The batch's two codes went, in order, to the first two customers that needed one.
        assert codes[0] == batch_codes[0][1] and codes[2] == batch_codes[1][1]
        assert codes[3].startswith("WEB") and codes[3] not in {code for _, code in batch_codes}
        assert all(code.max_uses == 1 and code.uses == 0 for code in issued)
        # Each claim's own time: the same customer's code keeps its first claim's.
        assert [code.expires_at for code in issued] == [
            claim.now + timedelta(days=10) for claim in claims[:4]] + [
            claims[0].now + timedelta(days=10)]
        stored = {(row.campaign_id, row.customer_id): row.code
                  for row in session.exec(select(CouponCode))}
        assert stored == {(pooled.id, a.id): codes[0], (fresh_config.id, a.id): codes[1],
                          (pooled.id, b.id): codes[2], (pooled.id, c.id): codes[3]}

    def test_a_customer_with_a_code_keeps_it(self, session: Session) -> None:
        """A concurrent request issued the customer's code first: the grouped statement
        fails on the unique index, leaves nothing behind, and each claim is then issued
        on its own, the customer getting the code it already has."""
        campaign, arm, config = self.coupon_campaign(session, "Raced")
        generate_coupon_batch(session, campaign=campaign, arm=arm, count=3, actor="test")
        a, b = make_customer(session, external_id="A"), make_customer(session, external_id="B")
        first = asyncio.run(issue_codes(SessionConnection(session), [self.claim(config, a)]))
        again = asyncio.run(issue_codes(SessionConnection(session),
                                        [self.claim(config, a), self.claim(config, b)]))
        assert again[0] == first[0]
        assert again[1].code != first[0].code
        rows = session.exec(select(CouponCode.customer_id).where(
            CouponCode.campaign_id == campaign.id)).all()
        assert sorted(rows, key=lambda value: value or 0) == sorted(
            [a.id, b.id, None], key=lambda value: value or 0)


class Counting:
    """A database that counts the statements sent through it and can make the first
    exposure statement fail as a race would."""

    def __init__(self, database: SessionConnection, *, race_once: bool = False) -> None:
        self.database = database
        self.autocommit = database.autocommit
        self.sent: list[str] = []
        self.race_once = race_once

    async def execute(self, query: str, params: dict[str, object], *,
                      prepare: bool | None = None) -> object:
        self.sent.append(query)
        if self.race_once and query == _EXPOSE:
            self.race_once = False
            raise UniqueViolation("duplicate key value violates unique constraint")
        return await self.database.execute(query, params, prepare=prepare)

    def transaction(self) -> object:
        return self.database.transaction()


class TestCodesWithExposures:
    """The codes of offers first shown are claimed by the exposure statement itself."""

    @staticmethod
    def offer(config: CampaignConfig, arm_id: int, *, budget_minor: int | None = None,
              code: str = "WEBNEW0000") -> CodeOffer:
        arm = config.arm(arm_id)
        assert arm is not None and arm.incentive_id is not None
        return CodeOffer(arm.incentive_id, code, utcnow() + timedelta(days=10), budget_minor,
                         arm.unit_cost_minor)

    def test_first_exposures_get_batch_codes_in_order_then_new_ones(self, session: Session
                                                                     ) -> None:
        campaign, arm, config = TestCodes.coupon_campaign(session, "Pooled")
        assert campaign.id and arm.id
        generate_coupon_batch(session, campaign=campaign, arm=arm, count=2, actor="test")
        batch = [code for _, code in sorted(session.exec(select(CouponCode.id,
                                                                CouponCode.code)).all())]
        a, b, c, d = (make_customer(session, external_id=name) for name in "ABCD")
        assert a.id and b.id and c.id and d.id
        control = next(arm.id for arm in config.arms if arm.is_control)
        now = utcnow()
        # D was exposed before without a code (a request that failed before its claim):
        # its code is left to the code statement.
        session.add(Assignment(campaign_id=campaign.id, customer_id=d.id, arm_id=arm.id,
                               allocation_period=0, first_exposed_at=now,
                               redemption_count=0))
        session.flush()
        exposures = [FirstExposures(customer.id, [(campaign.id, arm.id, 0)], None, now,
                                    {campaign.id: self.offer(config, arm.id,
                                                             code=f"WEBNEW{customer.id}")})
                     for customer in (c, a, d) if customer.id]
        exposures.append(FirstExposures(b.id, [(campaign.id, control, 0)], None, now))
        database = Counting(SessionConnection(session))
        standing = asyncio.run(expose_all(database, exposures))
        assert len(database.sent) == 1
        codes = [result[campaign.id].code for result in standing]
        # The batch's codes go to the first customers by id, then new codes are made.
        assert codes[1] is not None and codes[1].code == batch[0]  # A
        assert codes[0] is not None and codes[0].code == batch[1]  # C
        assert codes[2] is None and codes[3] is None  # D exposed before, B in control
        # A batch code takes the expiry of the claim that took it.
        assert codes[1].expires_at == exposures[1].codes[campaign.id].expires_at
        assert codes[0].expires_at == exposures[0].codes[campaign.id].expires_at
        exposures = [FirstExposures(
            customer.id, [(campaign.id, arm.id, 0)], None, now,
            {campaign.id: self.offer(config, arm.id, code=f"WEBNEW{customer.id}")})
            for customer in (make_customer(session, external_id="E"),) if customer.id]
        (fresh,) = asyncio.run(expose_all(SessionConnection(session), exposures))
        assert fresh[campaign.id].code == IssuedCode(
            f"WEBNEW{exposures[0].customer_id}", exposures[0].codes[campaign.id].expires_at,
            0, 1)

    def test_no_code_for_an_offer_the_budget_cannot_pay(self, session: Session) -> None:
        campaign, arm, config = TestCodes.coupon_campaign(session, "Spent")
        customer = make_customer(session, external_id="A")
        assert campaign.id and arm.id and customer.id
        campaign.spent_minor = 9_000
        session.add(campaign)
        session.flush()
        unit = config.arm(arm.id).unit_cost_minor  # type: ignore[union-attr]
        exposures = [FirstExposures(customer.id, [(campaign.id, arm.id, 0)], None, utcnow(),
                                    {campaign.id: self.offer(
                                        config, arm.id, budget_minor=9_000 + unit - 1)})]
        (standing,) = asyncio.run(expose_all(SessionConnection(session), exposures))
        assert standing[campaign.id].code is None
        assert standing[campaign.id].spent_minor == 9_000
        assert session.exec(select(CouponCode)).all() == []

    def test_a_first_visit_is_two_statements_and_shows_its_code(self, session: Session
                                                                ) -> None:
        campaign = make_running_campaign(session, name="Coupon", arms=[
            control_arm(), coupon_arm("coupon", expires_days=10)])
        external_id = customer_id_in_arm(session, campaign, "coupon")
        snapshot = load_snapshot(session, epoch=0)
        database = Counting(SessionConnection(session))
        offers = asyncio.run(customer_offers(
            DirectSteps(database), snapshot=snapshot, external_id=external_id,  # type: ignore[arg-type]
            attributes=attributes(), channel_key=None, stage_key=None, now=utcnow()))
        assert len(database.sent) == 2
        assert [offer.code for offer in offers] == [session.exec(
            select(CouponCode.code).where(CouponCode.campaign_id == campaign.id)).one()]

    def test_a_claim_that_fails_on_a_race_is_left_to_the_code_statement(
            self, session: Session) -> None:
        campaign = make_running_campaign(session, name="Coupon", arms=[
            control_arm(), coupon_arm("coupon", expires_days=10)])
        external_id = customer_id_in_arm(session, campaign, "coupon")
        snapshot = load_snapshot(session, epoch=0)
        database = Counting(SessionConnection(session), race_once=True)
        offers = asyncio.run(customer_offers(
            DirectSteps(database), snapshot=snapshot, external_id=external_id,  # type: ignore[arg-type]
            attributes=attributes(), channel_key=None, stage_key=None, now=utcnow()))
        # customer, exposure (failed), exposure again without claims, then the code
        assert len(database.sent) == 4
        assert database.sent[1] == database.sent[2] == _EXPOSE
        assert [offer.code for offer in offers] == [session.exec(
            select(CouponCode.code).where(CouponCode.campaign_id == campaign.id)).one()]
        assert len(session.exec(select(Assignment)).all()) == 1


class TestPlans:
    """The server keeps each statement's generic plan (web.deps.ASYNC_POOL_SETTINGS), made
    once for a batch of unknown size. Whatever the tables held when it was made, existing
    rows must be found by their keys: a plan that reads assignment or coupon_code whole is
    paid by every statement, and grows with the tables."""

    @staticmethod
    def generic_plan(session: Session, statement: str, params: dict[str, object]) -> str:
        names: list[str] = []

        def placeholder(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        prepared = re.sub(r"%\((\w+)\)s", placeholder, statement)
        connection = session.connection()
        for name, value in ASYNC_POOL_SETTINGS.items():  # as the server's connections plan
            connection.exec_driver_sql(f"SET LOCAL {name} = {value}")
        connection.exec_driver_sql(f"PREPARE offers_plan AS {prepared}")
        try:
            # Values inlined by the client: EXECUTE's own parameters would have no type.
            cursor = ClientCursor(connection.connection.driver_connection)  # type: ignore[arg-type]
            arguments = ", ".join(["%s"] * len(names))
            cursor.execute(f"EXPLAIN EXECUTE offers_plan({arguments})",
                           [params[name] for name in names])
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            connection.exec_driver_sql("DEALLOCATE offers_plan")

    @pytest.mark.parametrize("filled", [False, True], ids=["empty tables", "5,000 rows"])
    def test_existing_rows_are_looked_up_by_key(self, session: Session, filled: bool) -> None:
        campaign = make_running_campaign(session, name="Planned", arms=[control_arm(),
                                                                        percent_arm()])
        arm = arm_ids(session, campaign)[0]
        if filled:
            # Enough rows that reading a table whole is cheaper than 100 index lookups.
            session.connection().exec_driver_sql(
                "INSERT INTO customer (external_id, tenure_months, points, "
                "lifetime_value_minor, is_new, attributes, created_at) "
                "SELECT 'P' || n, 0, 0, 0, false, '{}', now() FROM generate_series(1, 5000) n")
            session.connection().exec_driver_sql(
                "INSERT INTO assignment (campaign_id, customer_id, arm_id, allocation_period, "
                "first_exposed_at, redemption_count) "
                f"SELECT {campaign.id}, id, {arm}, 1, now(), 0 FROM customer "
                "WHERE external_id LIKE 'P%%'")
            session.connection().exec_driver_sql("ANALYZE assignment, coupon_code, customer")
        exposures = [FirstExposures(1, [(campaign.id or 0, arm, 1)], None, utcnow())]
        plan = self.generic_plan(session, _EXPOSE, _exposure_params(exposures))
        assert "Seq Scan on assignment" not in plan, plan
        assert "Seq Scan on coupon_code" not in plan, plan
        standing = self.generic_plan(session, _STANDING, _exposure_params(exposures))
        assert "Seq Scan on assignment" not in standing, standing
        assert "Seq Scan on coupon_code" not in standing, standing
        for text in (plan, standing):
            lines = text.splitlines()
            campaign_scans = [i for i, line in enumerate(lines) if " on campaign " in line]
            assert campaign_scans, text
            # each campaign's spend read by its id, not the table hashed whole
            assert all("Index Cond: (id = " in lines[i + 1] for i in campaign_scans), text
        claims = json.dumps([{"k": 0, "campaign_id": campaign.id, "incentive_id": 1,
                              "customer_id": 1, "code": "X", "issued_at": None,
                              "expires_at": None}])
        codes = self.generic_plan(session, _ISSUE_CODES, {"claims": claims})
        assert "Seq Scan on coupon_code" not in codes, codes
