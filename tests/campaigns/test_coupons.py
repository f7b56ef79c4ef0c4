"""Coupon code batches: exact counts, uniqueness, collisions topped up, and the exports."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import Session, col, select

from campaigns.errors import Conflict, NotFound, ValidationFailed
from campaigns.incentives import DEFAULT_CHARSET, LOOKALIKES, generate_codes
from campaigns.models import (
    Arm,
    Assignment,
    AuditLog,
    Campaign,
    CampaignStatus,
    CouponCode,
    Customer,
)
from campaigns.services import coupons
from campaigns.services.campaigns import campaign_arms, transition
from campaigns.services.coupons import (
    arm_in_campaign,
    audience_rows,
    coupon_code_rows,
    generate_coupon_batch,
)
from campaigns.services.epoch import read_config_epoch
from campaigns.types import utcnow
from tests.builders import ACTOR, control_arm, make_campaign, make_customer, percent_arm

PREFIX = "WEB-"


def coupon_arm(name: str = "web coupon", *, weight: int = 50, mode: str = "batch",
               **config: Any) -> dict[str, Any]:
    config = {"prefix": PREFIX, **config} if mode == "batch" else {"code": "SAVE10", **config}
    return {"name": name, "weight": weight, "incentive": {
        "name": f"{name} incentive", "type": "coupon",
        "config": {"mode": mode, "benefit": {"kind": "percent", "percent_bp": 1000},
                   **config}}}


def coupon_campaign(session: Session, *, name: str = "Coupons", **overrides: Any
                    ) -> tuple[Campaign, Arm]:
    campaign = make_campaign(session, name=name, arms=[control_arm(), coupon_arm()],
                             **overrides)
    return campaign, campaign_arms(session, campaign)[1]


def codes_of(session: Session, campaign: Campaign) -> list[CouponCode]:
    return list(session.exec(select(CouponCode).where(CouponCode.campaign_id == campaign.id)
                             .order_by(col(CouponCode.id))).all())


def scripted_draws(monkeypatch: pytest.MonkeyPatch, *scripted: list[str]) -> list[int]:
    """Make the service's draws return ``scripted`` lists first, then real codes.

    Returns the sizes asked for, so a test can see how the service topped up.
    """
    queue = list(scripted)
    asked: list[int] = []

    def draw(n: int, **kwargs: Any) -> list[str]:
        asked.append(n)
        if queue:
            return queue.pop(0)[:n]
        return generate_codes(n, **kwargs)

    monkeypatch.setattr(coupons, "generate_codes", draw)
    return asked


class TestGenerateCouponBatch:
    def test_twenty_thousand_unique_unissued_codes(self, session: Session) -> None:
        campaign, arm = coupon_campaign(session)
        total = generate_coupon_batch(session, campaign=campaign, arm=arm, count=20_000,
                                      actor=ACTOR)
        assert total == 20_000
        rows = codes_of(session, campaign)
        codes = [row.code for row in rows]
        assert len(codes) == len(set(codes)) == 20_000
        for code in codes:
            assert code.startswith(PREFIX) and len(code) == len(PREFIX) + 10
            random_part = code[len(PREFIX):]
            assert set(random_part) <= set(DEFAULT_CHARSET)
            assert not set(random_part) & LOOKALIKES
        row = rows[0]
        assert (row.incentive_id, row.customer_id, row.max_uses, row.uses) == (
            arm.incentive_id, None, 1, 0)
        assert row.issued_at is None and row.expires_at is None

    def test_a_second_batch_adds_to_the_total(self, session: Session) -> None:
        campaign, arm = coupon_campaign(session)
        generate_coupon_batch(session, campaign=campaign, arm=arm, count=300, actor=ACTOR)
        total = generate_coupon_batch(session, campaign=campaign, arm=arm, count=200,
                                      actor=ACTOR)
        assert total == 500
        assert len({row.code for row in codes_of(session, campaign)}) == 500

    def test_configured_length_and_charset_are_used(self, session: Session) -> None:
        charset = "ABCDEFGHJKMNPQRS"  # 16 characters: 4 bits each
        campaign = make_campaign(session, arms=[control_arm(), coupon_arm(
            prefix="", length=12, charset=charset)])
        arm = campaign_arms(session, campaign)[1]
        generate_coupon_batch(session, campaign=campaign, arm=arm, count=500, actor=ACTOR)
        for row in codes_of(session, campaign):
            assert len(row.code) == 12 and set(row.code) <= set(charset)

    def test_collisions_with_existing_codes_are_topped_up(
        self, session: Session, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        other, other_arm = coupon_campaign(session, name="Other")
        generate_coupon_batch(session, campaign=other, arm=other_arm, count=50, actor=ACTOR)
        taken = [row.code for row in codes_of(session, other)]
        campaign, arm = coupon_campaign(session)
        # The first draw repeats 30 codes another campaign already has.
        fresh = generate_codes(70, prefix=PREFIX, length=10)
        asked = scripted_draws(monkeypatch, taken[:30] + fresh)

        total = generate_coupon_batch(session, campaign=campaign, arm=arm, count=100,
                                      actor=ACTOR)

        assert total == 100
        codes = {row.code for row in codes_of(session, campaign)}
        assert len(codes) == 100 and not codes & set(taken) and set(fresh) <= codes
        assert {row.code for row in codes_of(session, other)} == set(taken)
        assert sum(asked) >= 130  # 100 drawn, 30 more to replace the collisions
        audit = session.exec(select(AuditLog).where(
            AuditLog.action == "coupon_batch.generate", AuditLog.entity_id == campaign.id)).one()
        assert audit.details["collisions_replaced"] == 30

    def test_duplicates_between_draws_of_one_chunk_are_topped_up(
        self, session: Session, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        campaign, arm = coupon_campaign(session)
        monkeypatch.setattr(coupons, "DRAW_CHUNK", 10)
        first = generate_codes(10, prefix=PREFIX, length=10)
        scripted_draws(monkeypatch, first, first[:5] + generate_codes(5, prefix=PREFIX,
                                                                       length=10))
        total = generate_coupon_batch(session, campaign=campaign, arm=arm, count=40,
                                      actor=ACTOR)
        codes = [row.code for row in codes_of(session, campaign)]
        assert total == len(codes) == len(set(codes)) == 40

    def test_many_chunks_give_the_exact_count(
        self, session: Session, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(coupons, "COPY_CHUNK", 70)
        monkeypatch.setattr(coupons, "INSERT_CHUNK", 70)
        monkeypatch.setattr(coupons, "DRAW_CHUNK", 25)
        campaign, arm = coupon_campaign(session)
        assert generate_coupon_batch(session, campaign=campaign, arm=arm, count=1_001,
                                     actor=ACTOR) == 1_001

    def test_a_code_space_that_keeps_colliding_gives_up(
        self, session: Session, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        other, other_arm = coupon_campaign(session, name="Other")
        generate_coupon_batch(session, campaign=other, arm=other_arm, count=10, actor=ACTOR)
        taken = [row.code for row in codes_of(session, other)]
        campaign, arm = coupon_campaign(session)
        monkeypatch.setattr(coupons, "generate_codes", lambda n, **kwargs: taken[:n])
        with pytest.raises(Conflict) as caught:
            generate_coupon_batch(session, campaign=campaign, arm=arm, count=5, actor=ACTOR)
        assert caught.value.code == "code_space_exhausted"
        assert "0 of 5" in caught.value.message

    @pytest.mark.parametrize("count", [0, -1, 1_000_001, True])
    def test_count_out_of_range(self, session: Session, count: int) -> None:
        campaign, arm = coupon_campaign(session)
        with pytest.raises(ValidationFailed) as caught:
            generate_coupon_batch(session, campaign=campaign, arm=arm, count=count, actor=ACTOR)
        assert [e.loc for e in caught.value.errors] == [("count",)]
        assert codes_of(session, campaign) == []

    def test_shared_coupon_has_no_batches(self, session: Session) -> None:
        campaign = make_campaign(session, arms=[control_arm(), coupon_arm(mode="shared")])
        arm = campaign_arms(session, campaign)[1]
        with pytest.raises(Conflict, match="shared code SAVE10") as caught:
            generate_coupon_batch(session, campaign=campaign, arm=arm, count=5, actor=ACTOR)
        assert caught.value.code == "not_batch_coupon"

    def test_other_incentive_types_have_no_batches(self, session: Session) -> None:
        campaign = make_campaign(session)  # control + percent discount
        arm = campaign_arms(session, campaign)[1]
        with pytest.raises(Conflict, match="percent_discount") as caught:
            generate_coupon_batch(session, campaign=campaign, arm=arm, count=5, actor=ACTOR)
        assert caught.value.code == "not_batch_coupon"

    def test_control_arm_has_no_batches(self, session: Session) -> None:
        campaign, _ = coupon_campaign(session)
        control = campaign_arms(session, campaign)[0]
        with pytest.raises(Conflict, match="control arm"):
            generate_coupon_batch(session, campaign=campaign, arm=control, count=5, actor=ACTOR)

    def test_ended_campaign_gets_no_codes(self, session: Session) -> None:
        campaign, arm = coupon_campaign(session)
        transition(session, campaign=campaign, target=CampaignStatus.SCHEDULED, actor=ACTOR)
        transition(session, campaign=campaign, target=CampaignStatus.ENDED, actor=ACTOR)
        with pytest.raises(Conflict) as caught:
            generate_coupon_batch(session, campaign=campaign, arm=arm, count=5, actor=ACTOR)
        assert caught.value.code == "campaign_ended"

    def test_arm_of_another_campaign(self, session: Session) -> None:
        campaign, _ = coupon_campaign(session)
        _, other_arm = coupon_campaign(session, name="Other")
        assert other_arm.id is not None
        with pytest.raises(NotFound):
            arm_in_campaign(session, campaign=campaign, arm_id=other_arm.id)
        with pytest.raises(NotFound):
            generate_coupon_batch(session, campaign=campaign, arm=other_arm, count=5,
                                  actor=ACTOR)

    def test_audited_without_the_codes_and_without_a_config_reload(
        self, session: Session
    ) -> None:
        campaign, arm = coupon_campaign(session)
        epoch = read_config_epoch(session)
        generate_coupon_batch(session, campaign=campaign, arm=arm, count=25, actor="api_key:1:x")
        entry = session.exec(select(AuditLog).where(
            AuditLog.action == "coupon_batch.generate")).one()
        assert (entry.actor, entry.entity_type, entry.entity_id) == (
            "api_key:1:x", "campaign", campaign.id)
        assert entry.details == {"arm": "web coupon", "arm_id": arm.id,
                                 "incentive_id": arm.incentive_id, "generated": 25,
                                 "total_codes": 25, "collisions_replaced": 0}
        assert read_config_epoch(session) == epoch


def assign(session: Session, *, campaign: Campaign, arm: Arm, customer: Customer,
           code: CouponCode | None = None) -> Assignment:
    """Expose ``customer`` to ``arm`` and, when given, issue ``code`` to them."""
    assert campaign.id is not None and arm.id is not None and customer.id is not None
    assignment = Assignment(campaign_id=campaign.id, customer_id=customer.id, arm_id=arm.id)
    session.add(assignment)
    if code is not None:
        code.customer_id = customer.id
        code.issued_at = utcnow()
        session.add(code)
    session.flush()
    return assignment


Exposed = tuple[Campaign, list[Customer]]


@pytest.fixture
def exposed(session: Session) -> Iterator[Exposed]:
    """A campaign with 7 exposed customers: 4 in the coupon arm (with codes), 3 in control."""
    campaign, arm = coupon_campaign(session)
    control = campaign_arms(session, campaign)[0]
    generate_coupon_batch(session, campaign=campaign, arm=arm, count=10, actor=ACTOR)
    codes = codes_of(session, campaign)
    customers = [make_customer(session, external_id=f"C{n:03d}") for n in range(7)]
    for n, customer in enumerate(customers):
        if n < 4:
            assign(session, campaign=campaign, arm=arm, customer=customer, code=codes[n])
        else:
            assign(session, campaign=campaign, arm=control, customer=customer)
    yield campaign, customers


class TestExports:
    def test_code_rows_stream_in_batches(self, session: Session, exposed: Exposed) -> None:
        campaign, _ = exposed
        rows = list(coupon_code_rows(session, campaign=campaign, batch_size=3))
        assert len(rows) == 10
        issued = [row for row in rows if row.customer_external_id]
        assert [row.customer_external_id for row in issued] == ["C000", "C001", "C002", "C003"]
        assert all(row.issued_at is not None and row.arm == "web coupon" for row in rows[:4])
        assert all(row.arm == "web coupon" and row.issued_at is None for row in rows[4:])
        assert [row.code for row in rows] == [c.code for c in codes_of(session, campaign)]

    def test_audience_rows_are_exactly_the_assigned_customers(
        self, session: Session, exposed: Exposed
    ) -> None:
        campaign, customers = exposed
        make_customer(session, external_id="never-exposed")
        other = make_campaign(session, name="Other", arms=[control_arm(), percent_arm()])
        assign(session, campaign=other, arm=campaign_arms(session, other)[0],
               customer=make_customer(session, external_id="elsewhere"))
        rows = list(audience_rows(session, campaign=campaign, batch_size=2))
        assert [row.external_id for row in rows] == [c.external_id for c in customers]
        assert [row.is_control for row in rows] == [False] * 4 + [True] * 3
        codes = {row.code for row in codes_of(session, campaign) if row.customer_id}
        assert {row.code for row in rows[:4]} == codes
        assert [row.code for row in rows[4:]] == [None] * 3

    def test_no_rows_for_a_campaign_without_codes(self, session: Session) -> None:
        campaign, _ = coupon_campaign(session)
        assert list(coupon_code_rows(session, campaign=campaign)) == []
        assert list(audience_rows(session, campaign=campaign)) == []
