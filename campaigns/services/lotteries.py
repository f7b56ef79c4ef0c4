"""Prize draws that anyone can re-run and verify.

Algorithm ``weighted-mt19937-v1``: the tickets are the lottery's entries in id order, each
weighted by its number of entries and aggregated per customer. With
``random.Random(int(seed, 16))`` (Mersenne Twister, identical in every CPython), each prize
in configuration order is awarded ``remaining inventory`` times; each award picks a
customer with probability proportional to their entries among those who have not won in
this draw (without replacement). The seed and a SHA-256 digest of the ticket list are
recorded, so re-running the algorithm on the same entries gives the same winners.

Prize stock is charged with ``UPDATE ... SET used = used + k WHERE used + k <= total``:
two concurrent draws can never award more prizes than the inventory holds.

A lottery whose configuration announces ``draw_at`` is drawn on that date: never before it
(:class:`DrawNotDue`), from the entries made up to it (its draws record it as
``drawn_at``, however late they run), and by the server itself when it comes
(:func:`due_draws`, :func:`run_announced_draw`: once, whoever else tries at the same time).
A lottery without a date is drawn by hand, when the marketer decides.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from campaigns.errors import Conflict, FieldError, NotFound, ValidationFailed
from campaigns.incentives.lottery import INCENTIVE_TYPE as LOTTERY
from campaigns.models import (
    Arm,
    Campaign,
    CampaignOrigin,
    CampaignStatus,
    Customer,
    Incentive,
    IncentiveStock,
    LotteryDraw,
    LotteryEntry,
    LotteryWinner,
)
from campaigns.services.audit import record_audit
from campaigns.services.inputs import get_row

ALGORITHM = "weighted-mt19937-v1"


@dataclass(frozen=True)
class Award:
    customer_id: int
    prize_key: str
    value_minor: int


#: A campaign in one of these has had its chance to collect entries; its due draw is run.
DRAWN_AFTER = (CampaignStatus.RUNNING.value, CampaignStatus.PAUSED.value,
               CampaignStatus.ENDED.value)


class DrawNotDue(Conflict):
    def __init__(self, draw_at: datetime):
        when = draw_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        super().__init__(f"the prize draw is announced for {when}; it cannot be drawn before "
                         "then", [FieldError(("draw_at",), f"the draw runs on {when}",
                                             "draw_not_due")], code="draw_not_due")
        self.draw_at = draw_at


@dataclass(frozen=True)
class DueDraw:
    campaign_id: int
    campaign_name: str
    draw_at: datetime


def _lottery_incentive(session: Session, campaign: Campaign) -> Incentive:
    incentive = session.exec(
        select(Incentive).join(Arm, col(Arm.incentive_id) == Incentive.id)
        .where(Arm.campaign_id == campaign.id, Incentive.type == LOTTERY.key)).first()
    if incentive is None:
        raise Conflict(f"campaign {campaign.id} has no prize-draw arm", code="not_a_lottery")
    return incentive


def draw_date(incentive: Incentive) -> datetime | None:
    """The date the lottery announces for its draw, if it announces one."""
    return LOTTERY.validate(incentive.config).draw_at


def draw_due(draw_at: datetime | None, now: datetime) -> bool:
    """Whether a lottery announcing ``draw_at`` may be drawn at ``now`` (undated: always)."""
    return draw_at is None or now >= draw_at


def announced_draw(session: Session, campaign: Campaign) -> datetime | None:
    """The announced draw date of the campaign's lottery (None: no lottery, or no date)."""
    try:
        return draw_date(_lottery_incentive(session, campaign))
    except Conflict:
        return None


def _drawn_since(session: Session, *, campaign_id: int, incentive_id: int,
                 draw_at: datetime) -> bool:
    return session.exec(select(LotteryDraw.id).where(
        LotteryDraw.campaign_id == campaign_id, LotteryDraw.incentive_id == incentive_id,
        col(LotteryDraw.drawn_at) >= draw_at).limit(1)).first() is not None


def due_draws(session: Session, *, now: datetime) -> list[DueDraw]:
    """Lotteries whose announced date has come, not drawn since, with prizes left (no lock)."""
    rows = session.exec(
        select(Campaign.id, Campaign.name, Incentive.id, Incentive.config)
        .join(Arm, col(Arm.campaign_id) == Campaign.id)
        .join(Incentive, col(Incentive.id) == Arm.incentive_id)
        .where(Incentive.type == LOTTERY.key, Campaign.origin == CampaignOrigin.LIVE.value,
               col(Campaign.status).in_(DRAWN_AFTER))
        .where(select(func.sum(IncentiveStock.total - IncentiveStock.used))
               .where(IncentiveStock.incentive_id == Incentive.id)
               .scalar_subquery() > 0)
        .order_by(col(Campaign.id))).all()
    due = []
    for campaign_id, name, incentive_id, config in rows:
        assert campaign_id is not None and incentive_id is not None
        draw_at = LOTTERY.validate(config).draw_at
        if draw_at is not None and draw_at <= now and not _drawn_since(
                session, campaign_id=campaign_id, incentive_id=incentive_id, draw_at=draw_at):
            due.append(DueDraw(campaign_id, name, draw_at))
    return due


def tickets(session: Session, *, campaign_id: int, incentive_id: int,
            up_to: datetime | None = None) -> list[tuple[int, int]]:
    """(customer id, entries) per customer, in order of first entry."""
    query = select(LotteryEntry.customer_id, LotteryEntry.entries).where(
        LotteryEntry.campaign_id == campaign_id, LotteryEntry.incentive_id == incentive_id)
    if up_to is not None:
        # Entries live at the draw's time: one rolled back later still counted then.
        query = query.where(col(LotteryEntry.created_at) <= up_to,
                            col(LotteryEntry.rolled_back_at).is_(None)
                            | (col(LotteryEntry.rolled_back_at) > up_to))
    else:
        query = query.where(col(LotteryEntry.rolled_back_at).is_(None))
    totals: dict[int, int] = {}
    for customer_id, entries in session.exec(query.order_by(col(LotteryEntry.id))).all():
        totals[customer_id] = totals.get(customer_id, 0) + entries
    return list(totals.items())


def digest(ticket_list: list[tuple[int, int]]) -> str:
    text = ";".join(f"{customer}:{entries}" for customer, entries in ticket_list)
    return hashlib.sha256(text.encode()).hexdigest()


def draw_winners(ticket_list: list[tuple[int, int]], prizes: list[tuple[str, int, int]],
                 seed: str) -> list[Award]:
    """The pure algorithm: ``prizes`` are (key, value_minor, count) in configuration order."""
    rng = random.Random(int(seed, 16))  # noqa: S311 - reproducibility is the point here
    pool = list(ticket_list)
    awards: list[Award] = []
    for key, value_minor, count in prizes:
        for _ in range(count):
            if not pool:
                return awards
            total = sum(entries for _, entries in pool)
            point = rng.randrange(total)
            for index, (customer, entries) in enumerate(pool):
                if point < entries:
                    awards.append(Award(customer_id=customer, prize_key=key,
                                        value_minor=value_minor))
                    del pool[index]
                    break
                point -= entries
    return awards


def run_draw(session: Session, *, campaign_id: int, actor: str, seed: str | None = None,
             now: datetime) -> LotteryDraw:
    """Draw winners now (:class:`DrawNotDue` before the lottery's announced date)."""
    draw = _draw(session, campaign_id=campaign_id, actor=actor, seed=seed, now=now,
                 once=False)
    assert draw is not None, "only a draw run once may find nothing to do"
    return draw


def run_announced_draw(session: Session, *, campaign_id: int, actor: str, now: datetime
                       ) -> LotteryDraw | None:
    """The draw the lottery announced, with a seed from the operating system's CSPRNG;
    None when someone drew it first (the check runs under the prize rows' lock, which every
    draw of the lottery takes, so it is drawn once however many schedulers try)."""
    return _draw(session, campaign_id=campaign_id, actor=actor, seed=None, now=now, once=True)


def _draw(session: Session, *, campaign_id: int, actor: str, seed: str | None, now: datetime,
          once: bool) -> LotteryDraw | None:
    campaign = get_row(session, Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} does not exist", code="campaign_not_found")
    if seed is not None and (not 8 <= len(seed) <= 128
                             or any(ch not in "0123456789abcdef" for ch in seed.lower())):
        raise ValidationFailed("the seed is not valid", [FieldError(
            ("seed",), "give 8-128 hexadecimal characters, or leave it out")])
    seed = (seed or secrets.token_hex(16)).lower()
    incentive = _lottery_incentive(session, campaign)
    assert incentive.id is not None
    draw_at = draw_date(incentive)
    if not draw_due(draw_at, now):
        assert draw_at is not None
        raise DrawNotDue(draw_at)
    # Lock the prize rows first, always in the same order: concurrent draws of one lottery
    # then run one after the other (the later one sees what the earlier one awarded)
    # instead of locking prizes in different orders and deadlocking.
    stock = {row.item_key: row for row in session.exec(
        select(IncentiveStock).where(IncentiveStock.incentive_id == incentive.id)
        .order_by(col(IncentiveStock.item_key)).with_for_update()
        .execution_options(populate_existing=True))}
    if once and draw_at is not None and _drawn_since(
            session, campaign_id=campaign_id, incentive_id=incentive.id, draw_at=draw_at):
        return None
    prizes = [(p["key"], int(p["value_minor"]),
               stock[p["key"]].total - stock[p["key"]].used if p["key"] in stock else 0)
              for p in incentive.config["prizes"]]
    if sum(count for _, _, count in prizes) == 0:
        raise Conflict("every prize has already been awarded", code="prizes_exhausted")
    # A dated lottery draws from the entries made up to its date, and says so.
    drawn_at = draw_at if draw_at is not None else now
    ticket_list = tickets(session, campaign_id=campaign_id, incentive_id=incentive.id,
                          up_to=drawn_at)
    awards = draw_winners(ticket_list, prizes, seed)
    draw = LotteryDraw(campaign_id=campaign_id, incentive_id=incentive.id, seed=seed,
                       algorithm=ALGORITHM, entries_digest=digest(ticket_list), drawn_by=actor,
                       drawn_at=drawn_at)
    session.add(draw)
    session.flush()
    assert draw.id is not None
    for key in sorted({a.prize_key for a in awards}):
        count = sum(1 for a in awards if a.prize_key == key)
        charged = session.execute(
            update(IncentiveStock).where(col(IncentiveStock.incentive_id) == incentive.id,
                                         col(IncentiveStock.item_key) == key,
                                         col(IncentiveStock.used) + count
                                         <= col(IncentiveStock.total))
            .values(used=IncentiveStock.used + count))
        if charged.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict("another draw awarded these prizes at the same time; draw again",
                           code="prizes_exhausted")
    for award in awards:
        session.add(LotteryWinner(draw_id=draw.id, customer_id=award.customer_id,
                                  prize_key=award.prize_key, value_minor=award.value_minor))
    session.flush()
    record_audit(session, actor=actor, action="lottery.draw", entity_type="campaign",
                 entity_id=campaign_id, details={"draw_id": draw.id, "seed": seed,
                                                 "winners": len(awards),
                                                 "tickets": len(ticket_list)},
                 config_change=False)
    return draw


def draw_result(session: Session, *, campaign_id: int, draw_id: int) -> dict[str, object]:
    draw = get_row(session, LotteryDraw, draw_id)
    if draw is None or draw.campaign_id != campaign_id:
        raise NotFound(f"draw {draw_id} of campaign {campaign_id} does not exist",
                       code="draw_not_found")
    winners = session.exec(
        select(Customer.external_id, LotteryWinner.prize_key, LotteryWinner.value_minor)
        .join(Customer, col(Customer.id) == LotteryWinner.customer_id)
        .where(LotteryWinner.draw_id == draw_id).order_by(col(LotteryWinner.id))).all()
    return {
        "draw_id": draw.id, "campaign_id": campaign_id, "seed": draw.seed,
        "algorithm": draw.algorithm, "entries_digest": draw.entries_digest,
        "drawn_at": draw.drawn_at.isoformat(), "drawn_by": draw.drawn_by,
        "winners": [{"customer_id": c, "prize": p, "value_minor": v} for c, p, v in winners],
    }


def verify_draw(session: Session, *, campaign_id: int, draw_id: int) -> dict[str, object]:
    """Re-run the recorded draw from its seed and compare with the stored winners."""
    draw = get_row(session, LotteryDraw, draw_id)
    if draw is None or draw.campaign_id != campaign_id:
        raise NotFound(f"draw {draw_id} of campaign {campaign_id} does not exist",
                       code="draw_not_found")
    assert draw.id is not None
    incentive = session.get(Incentive, draw.incentive_id)
    assert incentive is not None
    stored = [(w.customer_id, w.prize_key) for w in session.exec(
        select(LotteryWinner).where(LotteryWinner.draw_id == draw.id)
        .order_by(col(LotteryWinner.id)))]
    earlier = session.exec(select(LotteryWinner.prize_key).join(
        LotteryDraw, col(LotteryDraw.id) == LotteryWinner.draw_id).where(
        LotteryDraw.campaign_id == campaign_id, col(LotteryDraw.id) < draw.id)).all()
    ticket_list = tickets(session, campaign_id=campaign_id, incentive_id=incentive.id or 0,
                          up_to=draw.drawn_at)
    prizes = [(p["key"], int(p["value_minor"]),
               int(p["inventory"]) - sum(1 for k in earlier if k == p["key"]))
              for p in incentive.config["prizes"]]
    rerun = [(a.customer_id, a.prize_key) for a in draw_winners(ticket_list, prizes, draw.seed)]
    return {"draw_id": draw.id, "verified": rerun == stored and digest(ticket_list)
            == draw.entries_digest, "entries_digest": digest(ticket_list),
            "winners": len(stored)}
