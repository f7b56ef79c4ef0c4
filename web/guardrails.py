"""Guardrails in action: pause a running campaign whose budget is spent or that does harm.

:mod:`analytics.guardrails` only reads; this module writes. Two jobs of the lifecycle
scheduler (:mod:`web.scheduler`, run by every server process) call it: the budget check
(:func:`check_budgets`, every half minute: a budget is spent when what is left cannot pay
one more redemption of any arm, each costed by its incentive type) and the guardrail check
(:func:`check_guardrails`, every quarter hour: the budget, then the statistics). Cron runs
them as ``channelshift lifecycle tick`` and ``channelshift guardrails check``, so several
checks may run at the same time.

Each campaign is handled on its own: the statistics are read first, outside any lock (a
row lock held during an aggregate query would stall redemptions, which update the same
campaign row), then a short transaction locks the campaign row, confirms that it is
still running and unchanged, and pauses it through the lifecycle's ``transition``, which
writes ``pause_reason`` and the audit entry. A second checker arriving at the same
moment waits on that lock and then finds the campaign paused, so a campaign is paused
once however many checkers run. One campaign failing is logged and the others are still
checked.

A marketer who resumes a paused campaign without changing anything will see it paused
again at the next check while the harm persists; to run on regardless, they take the
metric out of the campaign's guardrails (editable while live) or raise the budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select
from sqlmodel import Session

from analytics.queries import report_view
from campaigns.db import read_only_session, session_scope
from campaigns.errors import InvalidTransition
from campaigns.models import Campaign, CampaignOrigin, CampaignStatus
from campaigns.services.campaigns import BudgetShortfall, budget_shortfall, transition
from campaigns.types import utcnow

if TYPE_CHECKING:
    # analytics pulls in scipy and statsmodels (a second of import time); the server
    # loads them at its first check, in the scheduler's thread, not while starting up.
    from analytics.guardrails import GuardrailResult

logger = logging.getLogger("channelshift.guardrails")

__all__ = [
    "GuardrailAction",
    "GuardrailOutcome",
    "check_budgets",
    "check_guardrails",
]


class GuardrailOutcome(StrEnum):
    PAUSED = "paused"
    WOULD_PAUSE = "would_pause"  # a dry run found a reason to pause
    KEPT = "kept"  # checked: nothing to pause for
    SKIPPED = "skipped"  # someone else changed the campaign between the check and the pause
    FAILED = "failed"  # the check raised; logged, the other campaigns were still checked


@dataclass(frozen=True)
class GuardrailAction:
    """What the check did with one running campaign, and why."""

    campaign_id: int
    campaign_name: str
    outcome: GuardrailOutcome
    reason: str
    findings: tuple[GuardrailResult, ...] = ()


@dataclass(frozen=True)
class _Candidate:
    """A running campaign as the check first saw it."""

    id: int
    name: str
    currency: str
    budget_minor: int | None
    spent_minor: int
    config_version: int


@dataclass(frozen=True)
class _Verdict:
    reason: str | None  # None: nothing to pause for
    findings: tuple[GuardrailResult, ...] = ()
    budget: bool = False


Decide = Callable[[Engine, "_Candidate"], "_Verdict"]


def check_guardrails(
    engine: Engine, *, now: datetime | None = None, actor: str = "guardrails",
    dry_run: bool = False, alpha: float = 0.05, tuning_n: float | None = None,
) -> list[GuardrailAction]:
    """Check every running live campaign; pause those whose budget is spent or that do harm.

    Returns one action per campaign checked (``kept`` included). With ``dry_run`` nothing
    is written and campaigns that would be paused are reported as ``would_pause``.
    ``alpha`` and ``tuning_n`` are passed to :func:`analytics.guardrails.evaluate_guardrails`.
    Each pause is its own transaction; a campaign whose check fails is logged and
    reported as ``failed`` without stopping the others.
    """
    def decide(engine: Engine, candidate: _Candidate) -> _Verdict:
        return _decide(engine, candidate, alpha=alpha, tuning_n=tuning_n)

    return _check(engine, decide, now=now, actor=actor, dry_run=dry_run,
                  kept="budget left and no guardrail harmed")


def check_budgets(engine: Engine, *, now: datetime | None = None, actor: str = "budget",
                  dry_run: bool = False) -> list[GuardrailAction]:
    """Pause every running live campaign whose remaining budget cannot pay one more
    redemption of any of its arms (the rule offers use to leave an arm out); reads no
    statistics, so it can run every few seconds. Returns one action per campaign with a
    budget, as :func:`check_guardrails` does."""
    return _check(engine, _budget_verdict, now=now, actor=actor, dry_run=dry_run,
                  kept="budget left for one more redemption", budgeted_only=True)


def _check(engine: Engine, decide: Decide, *, now: datetime | None, actor: str,
           dry_run: bool, kept: str, budgeted_only: bool = False) -> list[GuardrailAction]:
    now = now or utcnow()
    actions = []
    for candidate in _running_campaigns(engine):
        if budgeted_only and candidate.budget_minor is None:
            continue
        try:
            action = _check_campaign(engine, candidate, decide(engine, candidate), now=now,
                                     actor=actor, dry_run=dry_run, kept=kept)
        except Exception as error:  # one broken campaign must not stop the others
            logger.exception("guardrail check of campaign %s '%s' failed",
                             candidate.id, candidate.name)
            action = GuardrailAction(candidate.id, candidate.name, GuardrailOutcome.FAILED,
                                     f"the check failed: {error}")
        actions.append(action)
    return actions


def _running_campaigns(engine: Engine) -> list[_Candidate]:
    table = Campaign.__table__  # type: ignore[attr-defined]
    with read_only_session(engine) as session:
        rows = session.execute(
            select(table.c.id, table.c.name, table.c.currency, table.c.budget_minor,
                   table.c.spent_minor, table.c.config_version)
            .where(table.c.status == CampaignStatus.RUNNING.value,
                   table.c.origin == CampaignOrigin.LIVE.value)
            .order_by(table.c.id)).all()
    return [_Candidate(id=row.id, name=row.name, currency=row.currency,
                       budget_minor=row.budget_minor, spent_minor=row.spent_minor,
                       config_version=row.config_version) for row in rows]


def _check_campaign(
    engine: Engine, candidate: _Candidate, verdict: _Verdict, *, now: datetime, actor: str,
    dry_run: bool, kept: str,
) -> GuardrailAction:
    if verdict.reason is None:
        return GuardrailAction(candidate.id, candidate.name, GuardrailOutcome.KEPT, kept,
                               verdict.findings)
    if dry_run:
        return GuardrailAction(candidate.id, candidate.name, GuardrailOutcome.WOULD_PAUSE,
                               verdict.reason, verdict.findings)
    return _pause(engine, candidate, verdict, now=now, actor=actor)


def _budget_reason(currency: str, shortfall: BudgetShortfall) -> str:
    from analytics.guardrails import format_money

    spent = (f"Budget spent: {format_money(shortfall.spent_minor, currency)} of "
             f"{format_money(shortfall.budget_minor, currency)}")
    if shortfall.remaining_minor > 0:
        spent += (f"; the {format_money(shortfall.remaining_minor, currency)} left cannot pay "
                  f"one more redemption (arm '{shortfall.cheapest_arm}' costs "
                  f"{format_money(shortfall.cheapest_cost_minor, currency)})")
    return spent + ". Raise the budget to resume."


def _budget_verdict(engine: Engine, candidate: _Candidate) -> _Verdict:
    """Paused for its budget when what is left cannot pay one more redemption; reads only."""
    if candidate.budget_minor is None:
        return _Verdict(None)
    with read_only_session(engine) as session:
        campaign = session.get(Campaign, candidate.id)
        shortfall = budget_shortfall(session, campaign) if campaign is not None else None
    if shortfall is None:
        return _Verdict(None)
    return _Verdict(_budget_reason(candidate.currency, shortfall), budget=True)


def _decide(engine: Engine, candidate: _Candidate, *, alpha: float,
            tuning_n: float | None) -> _Verdict:
    """Why the campaign should be paused, if it should; reads only.

    The budget comes first: it needs no statistics, and a spent budget already stops every
    offer.
    """
    from analytics.guardrails import describe_harm, evaluate_guardrails

    budget = _budget_verdict(engine, candidate)
    if budget.reason is not None:
        return budget
    # A read-only view: on SQLite a plain connection would hold the write lock, and keep
    # every offer and redemption waiting, for as long as the statistics take.
    with report_view(engine) as connection:
        findings = tuple(evaluate_guardrails(connection, candidate.id, alpha=alpha,
                                             tuning_n=tuning_n))
    harmed = [result for result in findings if result.harm_detected]
    if not harmed:
        return _Verdict(None, findings)
    return _Verdict("Guardrail harmed: " + "; ".join(
        describe_harm(result, currency=candidate.currency) for result in harmed) + ".", findings)


def _locked_campaign(session: Session, campaign_id: int) -> Campaign | None:
    """The campaign row, locked until the transaction ends.

    PostgreSQL: SELECT ... FOR UPDATE, so a concurrent checker waits here and then reads
    the status this one committed. SQLite: every transaction begins IMMEDIATE (see
    ``campaigns.db``), which already serialises writers, and FOR UPDATE is not rendered.
    """
    return session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)


def _pause(engine: Engine, candidate: _Candidate, verdict: _Verdict, *, now: datetime,
           actor: str) -> GuardrailAction:
    def skipped(why: str) -> GuardrailAction:
        logger.info("guardrails: campaign %s '%s' not paused: %s", candidate.id, candidate.name,
                    why)
        return GuardrailAction(candidate.id, candidate.name, GuardrailOutcome.SKIPPED, why,
                               verdict.findings)

    with session_scope(engine) as session:
        campaign = _locked_campaign(session, candidate.id)
        if campaign is None:
            return skipped("the campaign was deleted during the check")
        if campaign.status != CampaignStatus.RUNNING.value:
            return skipped(f"the campaign is already {campaign.status}")
        if campaign.config_version != candidate.config_version:
            return skipped("the campaign was changed during the check; it is checked again "
                           "on the next run")
        reason = verdict.reason
        assert reason is not None, "only a verdict with a reason pauses"
        if verdict.budget:
            shortfall = budget_shortfall(session, campaign)
            if shortfall is None:
                return skipped("the budget is no longer spent")
            reason = _budget_reason(campaign.currency, shortfall)
        try:
            transition(session, campaign=campaign, target=CampaignStatus.PAUSED, actor=actor,
                       reason=reason, now=now)
        except InvalidTransition as error:
            return skipped(error.message)
    logger.warning("guardrails paused campaign %s '%s': %s", candidate.id, candidate.name,
                   reason)
    return GuardrailAction(candidate.id, candidate.name, GuardrailOutcome.PAUSED,
                           reason, verdict.findings)
