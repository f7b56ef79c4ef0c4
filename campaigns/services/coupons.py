"""Batches of unique single-use coupon codes, generated ahead of issuing.

A batch coupon's codes are generated in bulk into ``coupon_code`` with ``customer_id``
NULL ("not yet issued"); the storefront later claims one per customer (see
:func:`campaigns.services.offers.issue_code`), which is when ``issued_at`` and
``expires_at`` are set.

Uniqueness is the database's job: ``coupon_code.code`` is UNIQUE across every campaign.
Codes are drawn with :func:`campaigns.incentives.generate_codes` (unique within a draw)
and written so that a code already in the table is skipped, never duplicated; whatever
collisions cost is topped up with fresh codes until exactly ``count`` new rows exist.

On PostgreSQL each chunk is streamed with ``COPY`` straight into ``coupon_code`` inside a
savepoint: with 40+ bits per code a collision is rare, so the fast path nearly always
succeeds. A chunk that does hit a unique violation is rolled back to its savepoint and
written again through a staging table with ``INSERT ... ON CONFLICT (code) DO NOTHING``.
Elsewhere (SQLite) chunks go through :func:`campaigns.db.insert_ignore`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from campaigns.db import insert_ignore
from campaigns.errors import Conflict, FieldError, NotFound, ValidationFailed
from campaigns.incentives import generate_codes, get_incentive_type
from campaigns.incentives.coupon import CouponConfig
from campaigns.models import (
    Arm,
    Assignment,
    Campaign,
    CampaignStatus,
    CouponCode,
    Customer,
    Incentive,
)
from campaigns.services.audit import record_audit
from campaigns.types import utcnow

#: Largest batch one call may generate.
MAX_BATCH = 1_000_000
#: Rows per COPY statement (one savepoint each) on PostgreSQL.
COPY_CHUNK = 100_000
#: Codes drawn at a time while a COPY is open, so drawing overlaps the server's work.
DRAW_CHUNK = 10_000
#: Rows per INSERT ... ON CONFLICT DO NOTHING elsewhere.
INSERT_CHUNK = 20_000
#: Rounds of topping up allowed beyond the chunks a batch needs before giving up.
EXTRA_ROUNDS = 20

_COPY_INTO_CODES = ("COPY coupon_code (code, incentive_id, campaign_id, max_uses, uses, "
                    "created_at) FROM STDIN")
_INSERT_FROM_STAGING = (
    "INSERT INTO coupon_code (code, incentive_id, campaign_id, max_uses, uses, created_at) "
    "SELECT code, %s, %s, 1, 0, %s FROM coupon_code_staging ON CONFLICT (code) DO NOTHING"
)


def arm_in_campaign(session: Session, *, campaign: Campaign, arm_id: int) -> Arm:
    """The arm ``arm_id`` of ``campaign``; :class:`NotFound` if the campaign has no such arm."""
    arm = session.exec(select(Arm).where(Arm.id == arm_id,
                                         col(Arm.campaign_id) == campaign.id)).first()
    if arm is None:
        raise NotFound(f"campaign {campaign.id} has no arm {arm_id}",
                       [FieldError(("arm_id",), f"unknown arm {arm_id}", "not_found")],
                       code="arm_not_found")
    return arm


def batch_coupon_config(session: Session, *, campaign: Campaign, arm: Arm) -> CouponConfig:
    """The validated batch-coupon config of ``arm``'s incentive.

    Raises :class:`Conflict` naming what is wrong when the arm does not hand out
    generated codes: a control arm, another incentive type, or a shared-code coupon.
    """
    if arm.campaign_id != campaign.id:
        raise NotFound(f"arm {arm.id} is not an arm of campaign {campaign.id}",
                       code="arm_not_found")
    if arm.incentive_id is None:
        raise Conflict(f"arm '{arm.name}' is the control arm; it gets no coupon codes",
                       [FieldError(("arm_id",), "the control arm has no incentive",
                                   "not_batch_coupon")], code="not_batch_coupon")
    incentive = session.get(Incentive, arm.incentive_id)
    assert incentive is not None
    if incentive.type != "coupon":
        raise Conflict(
            f"arm '{arm.name}' offers a {incentive.type} incentive; only batch coupons have "
            "generated codes",
            [FieldError(("arm_id",), f"the arm's incentive is a {incentive.type}, not a coupon",
                        "not_batch_coupon")], code="not_batch_coupon")
    config: CouponConfig = get_incentive_type("coupon").validate(incentive.config)
    if config.mode != "batch":
        raise Conflict(
            f"arm '{arm.name}' uses the shared code {config.code}; generate codes only for "
            "coupons in batch mode",
            [FieldError(("arm_id",), "the arm's coupon is in shared mode, not batch mode",
                        "not_batch_coupon")], code="not_batch_coupon")
    return config


def count_codes(session: Session, *, campaign: Campaign, incentive_id: int) -> int:
    """Codes (issued or not) of one incentive in one campaign."""
    return session.exec(
        select(func.count()).select_from(CouponCode).where(
            CouponCode.campaign_id == campaign.id, CouponCode.incentive_id == incentive_id)
    ).one()


def generate_coupon_batch(
    session: Session, *, campaign: Campaign, arm: Arm, count: int, actor: str
) -> int:
    """Add exactly ``count`` new unique, unissued codes for ``arm``'s batch coupon.

    Returns the number of codes the arm's incentive now has in the campaign. Raises
    :class:`ValidationFailed` for a count outside 1..1,000,000 (every batch coupon has at
    least 2**40 possible codes, so the count always fits), :class:`Conflict` for an ended
    campaign, an arm without a batch coupon, or a code space so full that fresh codes keep
    colliding. Only flushes; everything is undone if the caller's transaction rolls back.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BATCH:
        raise ValidationFailed("the coupon batch is not valid", [FieldError(
            ("count",), f"count must be a whole number between 1 and {MAX_BATCH:,}",
            "range")])
    if campaign.status == CampaignStatus.ENDED.value:
        raise Conflict("an ended campaign gets no new coupon codes", code="campaign_ended")
    config = batch_coupon_config(session, campaign=campaign, arm=arm)
    assert campaign.id is not None and arm.incentive_id is not None
    # Batch mode fills these in (see CouponConfig).
    assert config.prefix is not None and config.length and config.charset
    writer = _CodeWriter(session, campaign_id=campaign.id, incentive_id=arm.incentive_id,
                         prefix=config.prefix, length=config.length, charset=config.charset,
                         created_at=utcnow())
    writer.write(count)
    total = count_codes(session, campaign=campaign, incentive_id=arm.incentive_id)
    # Not a configuration change: codes are not part of the cached campaign configuration.
    record_audit(session, actor=actor, action="coupon_batch.generate", entity_type="campaign",
                 entity_id=campaign.id,
                 details={"arm": arm.name, "arm_id": arm.id, "incentive_id": arm.incentive_id,
                          "generated": count, "total_codes": total,
                          "collisions_replaced": writer.collisions},
                 config_change=False)
    return total


class _CodeWriter:
    """Writes fresh codes until the wanted number of new rows exists."""

    def __init__(self, session: Session, *, campaign_id: int, incentive_id: int, prefix: str,
                 length: int, charset: str, created_at: datetime) -> None:
        self.session = session
        self.campaign_id = campaign_id
        self.incentive_id = incentive_id
        self.prefix = prefix
        self.length = length
        self.charset = charset
        self.created_at = created_at
        self.collisions = 0
        self.postgres = session.get_bind().dialect.name == "postgresql"

    def write(self, count: int) -> None:
        chunk_size = COPY_CHUNK if self.postgres else INSERT_CHUNK
        rounds_left = -(-count // chunk_size) + EXTRA_ROUNDS
        remaining = count
        while remaining > 0:
            if rounds_left == 0:
                raise Conflict(
                    f"could only generate {count - remaining:,} of {count:,} unique codes: "
                    "the code space of this coupon is nearly used up; use a longer length or "
                    "another prefix", code="code_space_exhausted")
            rounds_left -= 1
            wanted = min(remaining, chunk_size)
            inserted = self._copy(wanted) if self.postgres else self._insert(wanted)
            self.collisions += wanted - inserted
            remaining -= inserted

    def _draw(self, n: int) -> list[str]:
        return generate_codes(n, prefix=self.prefix, length=self.length, charset=self.charset)

    # --- SQLite and other backends -------------------------------------------------------

    def _insert(self, wanted: int) -> int:
        codes = self._draw(wanted)
        return self._insert_ignore(codes)

    def _insert_ignore(self, codes: list[str]) -> int:
        rows = [{"code": code, "incentive_id": self.incentive_id,
                 "campaign_id": self.campaign_id, "customer_id": None, "max_uses": 1,
                 "uses": 0, "issued_at": None, "expires_at": None,
                 "created_at": self.created_at} for code in codes]
        return insert_ignore(self.session, CouponCode, rows, conflict_columns=["code"])

    # --- PostgreSQL -----------------------------------------------------------------------

    def _lines(self, codes: list[str]) -> str:
        # Codes are only A-Z, 0-9 and '-' (prefix and charset are validated), so the COPY
        # text format needs no escaping.
        suffix = (f"\t{self.incentive_id}\t{self.campaign_id}\t1\t0\t"
                  f"{self.created_at.isoformat()}\n")
        return "".join(code + suffix for code in codes)

    def _copy(self, wanted: int) -> int:
        """COPY ``wanted`` fresh codes in one savepoint; on a collision, insert them skipping it."""
        from psycopg.errors import UniqueViolation

        drawn: list[str] = []
        try:
            with self.session.begin_nested():
                cursor = self._driver_connection().cursor()
                with cursor, cursor.copy(_COPY_INTO_CODES) as copy:
                    for codes in self._draws(wanted):
                        drawn.extend(codes)
                        copy.write(self._lines(codes))
            return len(drawn)
        except UniqueViolation:
            # Rolled back to the savepoint: nothing of this chunk was written. Draw what the
            # COPY did not get to, then let the unique index skip the colliding codes.
            drawn.extend(self._draw(wanted - len(drawn)) if len(drawn) < wanted else [])
            return self._insert_skipping_existing(drawn)

    def _draws(self, wanted: int) -> Iterator[list[str]]:
        left = wanted
        while left > 0:
            n = min(left, DRAW_CHUNK)
            left -= n
            yield self._draw(n)

    def _insert_skipping_existing(self, codes: list[str]) -> int:
        cursor = self._driver_connection().cursor()
        with cursor:
            cursor.execute("CREATE TEMP TABLE IF NOT EXISTS coupon_code_staging "
                           "(code varchar(64) NOT NULL) ON COMMIT DROP")
            cursor.execute("TRUNCATE coupon_code_staging")
            with cursor.copy("COPY coupon_code_staging (code) FROM STDIN") as copy:
                copy.write("".join(code + "\n" for code in codes))
            cursor.execute(_INSERT_FROM_STAGING,
                           (self.incentive_id, self.campaign_id, self.created_at))
            return int(cursor.rowcount)

    def _driver_connection(self) -> Any:
        return self.session.connection().connection.driver_connection



# --- exports ----------------------------------------------------------------------------


class CodeRow(NamedTuple):
    code: str
    arm: str
    customer_external_id: str | None
    issued_at: datetime | None
    uses: int


class AudienceRow(NamedTuple):
    external_id: str
    arm: str
    is_control: bool
    first_exposed_at: datetime
    code: str | None


#: Rows fetched from the database at a time by the exports.
EXPORT_BATCH = 2_000


def coupon_code_rows(session: Session, *, campaign: Campaign,
                     batch_size: int = EXPORT_BATCH) -> Iterator[CodeRow]:
    """Every code of ``campaign`` in generation order, read ``batch_size`` rows at a time.

    An issued code names the arm its customer is assigned to; an unissued one the arm(s)
    whose incentive it belongs to. Rows are streamed (a server-side cursor on PostgreSQL),
    so a million codes never sit in memory at once.
    """
    arms_by_incentive: dict[int, list[str]] = {}
    for name, incentive_id in session.exec(
        select(Arm.name, Arm.incentive_id).where(Arm.campaign_id == campaign.id)
        .order_by(col(Arm.position), col(Arm.id))
    ):
        if incentive_id is not None:
            arms_by_incentive.setdefault(incentive_id, []).append(name)
    statement = (
        sa_select(col(CouponCode.code), col(CouponCode.incentive_id), col(Customer.external_id),
                  col(CouponCode.issued_at), col(CouponCode.uses), col(Arm.name))
        .select_from(CouponCode)
        .outerjoin(Customer, col(Customer.id) == CouponCode.customer_id)
        .outerjoin(Assignment, (col(Assignment.campaign_id) == CouponCode.campaign_id)
                   & (col(Assignment.customer_id) == CouponCode.customer_id))
        .outerjoin(Arm, col(Arm.id) == Assignment.arm_id)
        .where(col(CouponCode.campaign_id) == campaign.id)
        .order_by(col(CouponCode.id))
        .execution_options(yield_per=batch_size)
    )
    result = session.execute(statement)
    try:
        for code, incentive_id, external_id, issued_at, uses, assigned_arm in result:
            arm = assigned_arm or " + ".join(arms_by_incentive.get(incentive_id, []))
            yield CodeRow(code, arm, external_id, issued_at, uses)
    finally:
        result.close()


def audience_rows(session: Session, *, campaign: Campaign,
                  batch_size: int = EXPORT_BATCH) -> Iterator[AudienceRow]:
    """Every customer assigned in ``campaign`` (in exposure order) with arm and issued code.

    For handing the audience to e-mail and SMS tools; streamed like :func:`coupon_code_rows`.
    """
    statement = (
        sa_select(col(Customer.external_id), col(Arm.name), col(Arm.is_control),
                  col(Assignment.first_exposed_at), col(CouponCode.code))
        .select_from(Assignment)
        .join(Customer, col(Customer.id) == Assignment.customer_id)
        .join(Arm, col(Arm.id) == Assignment.arm_id)
        # At most one issued code per customer and campaign (unique index), so no fan-out.
        .outerjoin(CouponCode, (col(CouponCode.campaign_id) == Assignment.campaign_id)
                   & (col(CouponCode.customer_id) == Assignment.customer_id))
        .where(col(Assignment.campaign_id) == campaign.id)
        .order_by(col(Assignment.id))
        .execution_options(yield_per=batch_size)
    )
    result = session.execute(statement)
    try:
        for row in result:
            yield AudienceRow(*row)
    finally:
        result.close()
