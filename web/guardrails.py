"""Guardrails in action: pause a running campaign whose budget is spent or that does harm.

:mod:`analytics.guardrails` only reads; this module writes. It is run on a schedule by
every server process (:class:`GuardrailScheduler`, started in the app's lifespan) and by
``channelshift guardrails check`` for cron, so several checks may run at the same time.

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

import asyncio
import logging
import random
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select
from sqlmodel import Session

from analytics.queries import report_view
from campaigns.db import session_scope
from campaigns.errors import InvalidTransition
from campaigns.models import Campaign, CampaignOrigin, CampaignStatus
from campaigns.services.campaigns import transition
from campaigns.types import utcnow

if TYPE_CHECKING:
    # analytics pulls in scipy and statsmodels (a second of import time); the server
    # loads them at its first check, in the scheduler's thread, not while starting up.
    from analytics.guardrails import GuardrailResult

logger = logging.getLogger("channelshift.guardrails")

__all__ = [
    "GuardrailAction",
    "GuardrailOutcome",
    "GuardrailScheduler",
    "check_guardrails",
]


class GuardrailOutcome(StrEnum):
    PAUSED = "paused"
    WOULD_PAUSE = "would_pause"  # a dry run found a reason to pause
    KEPT = "kept"  # checked: budget left, no guardrail harmed
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
    now = now or utcnow()
    actions = []
    for candidate in _running_campaigns(engine):
        try:
            action = _check_campaign(engine, candidate, now=now, actor=actor, dry_run=dry_run,
                                     alpha=alpha, tuning_n=tuning_n)
        except Exception as error:  # one broken campaign must not stop the others
            logger.exception("guardrail check of campaign %s '%s' failed",
                             candidate.id, candidate.name)
            action = GuardrailAction(candidate.id, candidate.name, GuardrailOutcome.FAILED,
                                     f"the check failed: {error}")
        actions.append(action)
    return actions


def _running_campaigns(engine: Engine) -> list[_Candidate]:
    table = Campaign.__table__  # type: ignore[attr-defined]
    with engine.connect() as connection:
        rows = connection.execute(
            select(table.c.id, table.c.name, table.c.currency, table.c.budget_minor,
                   table.c.spent_minor, table.c.config_version)
            .where(table.c.status == CampaignStatus.RUNNING.value,
                   table.c.origin == CampaignOrigin.LIVE.value)
            .order_by(table.c.id)).all()
    return [_Candidate(id=row.id, name=row.name, currency=row.currency,
                       budget_minor=row.budget_minor, spent_minor=row.spent_minor,
                       config_version=row.config_version) for row in rows]


def _check_campaign(
    engine: Engine, candidate: _Candidate, *, now: datetime, actor: str, dry_run: bool,
    alpha: float, tuning_n: float | None,
) -> GuardrailAction:
    verdict = _decide(engine, candidate, alpha=alpha, tuning_n=tuning_n)
    if verdict.reason is None:
        return GuardrailAction(candidate.id, candidate.name, GuardrailOutcome.KEPT,
                               "budget left and no guardrail harmed", verdict.findings)
    if dry_run:
        return GuardrailAction(candidate.id, candidate.name, GuardrailOutcome.WOULD_PAUSE,
                               verdict.reason, verdict.findings)
    return _pause(engine, candidate, verdict, now=now, actor=actor)


def _budget_spent(budget_minor: int, spent_minor: int) -> bool:
    return spent_minor >= budget_minor


def _budget_reason(candidate: _Candidate, *, budget_minor: int, spent_minor: int) -> str:
    from analytics.guardrails import format_money

    return (f"Budget spent: {format_money(spent_minor, candidate.currency)} of "
            f"{format_money(budget_minor, candidate.currency)}. Raise the budget to resume.")


def _decide(engine: Engine, candidate: _Candidate, *, alpha: float,
            tuning_n: float | None) -> _Verdict:
    """Why the campaign should be paused, if it should; reads only.

    The budget comes first: it needs no statistics, and an exhausted budget already
    stops every offer.
    """
    from analytics.guardrails import describe_harm, evaluate_guardrails

    if candidate.budget_minor is not None and _budget_spent(candidate.budget_minor,
                                                            candidate.spent_minor):
        return _Verdict(_budget_reason(candidate, budget_minor=candidate.budget_minor,
                                       spent_minor=candidate.spent_minor), budget=True)
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
            if campaign.budget_minor is None or not _budget_spent(campaign.budget_minor,
                                                                  campaign.spent_minor):
                return skipped("the budget is no longer spent")
            reason = _budget_reason(candidate, budget_minor=campaign.budget_minor,
                                    spent_minor=campaign.spent_minor)
        try:
            transition(session, campaign=campaign, target=CampaignStatus.PAUSED, actor=actor,
                       reason=reason, now=now)
        except InvalidTransition as error:
            return skipped(error.message)
    logger.warning("guardrails paused campaign %s '%s': %s", candidate.id, candidate.name,
                   reason)
    return GuardrailAction(candidate.id, candidate.name, GuardrailOutcome.PAUSED,
                           reason, verdict.findings)


# ------------------------------------------------------------------------- scheduler

GuardrailCheck = Callable[[Engine], list[GuardrailAction]]


class GuardrailScheduler:
    """Runs the guardrail check every ``interval_seconds`` (+-``jitter``) inside the server.

    Every worker process runs one; the jitter spreads them out, and the check itself is
    safe to run concurrently. The check runs in a thread so the event loop keeps serving
    requests. An exception is logged and the next run happens as planned. An interval of
    0 disables the scheduler (``start`` does nothing).
    """

    def __init__(self, engine: Engine, *, interval_seconds: float, jitter: float = 0.1,
                 check: GuardrailCheck | None = None, rng: random.Random | None = None):
        if interval_seconds < 0:
            raise ValueError(f"interval_seconds must not be negative (got {interval_seconds})")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be a fraction in [0, 1) (got {jitter})")
        self.engine = engine
        self.interval_seconds = interval_seconds
        self.jitter = jitter
        self.check: GuardrailCheck = check or partial(check_guardrails, actor="system:guardrails")
        self.runs = 0
        self._rng = rng or random.Random()  # noqa: S311 - spreading timers, not secrets
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.interval_seconds > 0

    def next_delay(self) -> float:
        """Seconds until the next run: the interval, give or take ``jitter`` of it."""
        return self.interval_seconds * (1 + self._rng.uniform(-self.jitter, self.jitter))

    def start(self) -> None:
        """Start the loop on the running event loop (the first check after one interval)."""
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                                name="guardrail-scheduler")

    async def stop(self) -> None:
        """Stop the loop; a check already running in its thread finishes on its own."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.next_delay())
            await self.run_once()

    async def run_once(self) -> list[GuardrailAction] | None:
        """One check in a worker thread; None when it raised (logged, never propagated)."""
        try:
            actions = await asyncio.to_thread(self.check, self.engine)
        except Exception:
            logger.exception("guardrail check failed; the next one runs in about %.0f s",
                             self.interval_seconds)
            return None
        finally:
            self.runs += 1
        paused = [a for a in actions if a.outcome is GuardrailOutcome.PAUSED]
        failed = [a for a in actions if a.outcome is GuardrailOutcome.FAILED]
        logger.info("guardrail check: %d running campaigns, %d paused, %d failed",
                    len(actions), len(paused), len(failed))
        return actions
