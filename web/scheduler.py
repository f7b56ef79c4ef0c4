"""The lifecycle scheduler: time-driven jobs that every server process runs by itself.

One :class:`Scheduler` per process (started and stopped by the app's lifespan) runs
several periodic jobs, each at its own interval (``CHANNELSHIFT_*_INTERVAL_SECONDS``,
+-10% jitter so the processes spread out), in a worker thread so the event loop keeps
serving requests:

- ``schedules``: start scheduled campaigns whose start time has come, end those whose end
  time has passed (:func:`advance_schedules`);
- ``draws``: run prize draws whose announced date has come (:func:`run_due_draws`);
- ``budget``: pause campaigns whose remaining budget cannot pay one more redemption
  (:func:`web.guardrails.check_budgets`);
- ``guardrails``: pause campaigns whose guardrail metrics show harm
  (:func:`web.guardrails.check_guardrails`, reads statistics, so every quarter hour).

Every process and host runs them at once, and cron may run ``channelshift lifecycle tick``
(:func:`tick`, the first three jobs once) besides: each change is made in a transaction of
its own that locks what it changes and looks again under the lock, so it happens once
(the campaign row for a schedule or a pause, the prize rows for a draw). A campaign row is
waited for, not skipped (``SKIP LOCKED``): the lock is also what every redemption of the
campaign takes for a moment, and skipping it would let a busy campaign's end wait for a
later tick. Every change is audited with the actor ``system:scheduler``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from campaigns.db import read_only_session, session_scope
from campaigns.models import CampaignStatus
from campaigns.services.campaigns import advance_schedule, due_schedule_changes
from campaigns.services.lotteries import due_draws, run_announced_draw
from campaigns.settings import Settings
from campaigns.types import utcnow
from web.guardrails import GuardrailOutcome, check_budgets, check_guardrails

logger = logging.getLogger("channelshift.scheduler")

#: Who the audit trail says made the scheduler's changes (in the server and from cron).
ACTOR = "system:scheduler"

__all__ = ["ACTOR", "Job", "LifecycleAction", "Outcome", "Scheduler", "advance_schedules",
           "lifecycle_scheduler", "run_due_draws", "tick"]


class Outcome(StrEnum):
    DONE = "done"
    WOULD = "would"  # a dry run found it due
    SKIPPED = "skipped"  # someone else did it, or it changed, between the look and the lock
    FAILED = "failed"  # raised; logged, the other campaigns were still handled


@dataclass(frozen=True)
class LifecycleAction:
    """What a lifecycle job did (or would do) to one campaign, and why."""

    verb: str  # start, end, return to draft, draw, pause
    campaign_id: int
    campaign_name: str
    outcome: Outcome
    reason: str


_VERBS = {CampaignStatus.RUNNING: "start", CampaignStatus.ENDED: "end",
          CampaignStatus.DRAFT: "return to draft"}


@dataclass(frozen=True)
class _Due:
    """A change a job found due, before it is made under its lock."""

    verb: str
    campaign_id: int
    campaign_name: str
    why: str  # what a dry run says


def _carry_out(engine: Engine, due: Sequence[_Due], *, dry_run: bool,
               act: Callable[[Session, _Due], tuple[str, str] | None]
               ) -> list[LifecycleAction]:
    """Make each due change in its own transaction: ``act`` makes it under its lock and
    returns (verb, what was done), or None when another scheduler made it first. One change
    that fails is logged and reported; the others are still made."""
    actions = []
    for item in due:
        if dry_run:
            actions.append(LifecycleAction(item.verb, item.campaign_id, item.campaign_name,
                                           Outcome.WOULD, item.why))
            continue
        try:
            with session_scope(engine) as session:
                done = act(session, item)
        except Exception as error:
            logger.exception("scheduler: could not %s campaign %s '%s'", item.verb,
                             item.campaign_id, item.campaign_name)
            actions.append(LifecycleAction(item.verb, item.campaign_id, item.campaign_name,
                                           Outcome.FAILED, f"it failed: {error}"))
            continue
        if done is None:
            actions.append(LifecycleAction(item.verb, item.campaign_id, item.campaign_name,
                                           Outcome.SKIPPED, "another scheduler did it first"))
            continue
        verb, what = done
        logger.info("scheduler: campaign %s '%s': %s: %s", item.campaign_id,
                    item.campaign_name, verb, what)
        actions.append(LifecycleAction(verb, item.campaign_id, item.campaign_name,
                                       Outcome.DONE, what))
    return actions


def advance_schedules(engine: Engine, *, now: datetime | None = None, actor: str = ACTOR,
                      dry_run: bool = False) -> list[LifecycleAction]:
    """Start and end the campaigns whose time has come, each in its own transaction."""
    now = now or utcnow()
    with read_only_session(engine) as session:
        due = [_Due(_VERBS[change.target], change.campaign_id, change.campaign_name,
                    change.reason) for change in due_schedule_changes(session, now=now)]

    def act(session: Session, item: _Due) -> tuple[str, str] | None:
        done = advance_schedule(session, campaign_id=item.campaign_id, now=now, actor=actor)
        return None if done is None else (_VERBS[done.target], done.reason)

    return _carry_out(engine, due, dry_run=dry_run, act=act)


def run_due_draws(engine: Engine, *, now: datetime | None = None, actor: str = ACTOR,
                  dry_run: bool = False) -> list[LifecycleAction]:
    """Run the prize draws whose announced date has come, each in its own transaction."""
    now = now or utcnow()
    with read_only_session(engine) as session:
        due = [_Due("draw", draw.campaign_id, draw.campaign_name,
                    f"announced for {draw.draw_at.isoformat()}")
               for draw in due_draws(session, now=now)]

    def act(session: Session, item: _Due) -> tuple[str, str] | None:
        made = run_announced_draw(session, campaign_id=item.campaign_id, actor=actor, now=now)
        return None if made is None else ("draw", _draw_summary(session, made.id))

    return _carry_out(engine, due, dry_run=dry_run, act=act)


def _draw_summary(session: Session, draw_id: int | None) -> str:
    from sqlmodel import func, select

    from campaigns.models import LotteryDraw, LotteryWinner

    draw = session.get(LotteryDraw, draw_id)
    assert draw is not None
    winners = session.exec(select(func.count()).select_from(LotteryWinner)
                           .where(LotteryWinner.draw_id == draw_id)).one()
    return (f"draw {draw_id}, {winners} winner{'s' * (winners != 1)}, seed {draw.seed}, "
            f"entries up to {draw.drawn_at.isoformat()}")


_BUDGET_OUTCOMES = {GuardrailOutcome.PAUSED: Outcome.DONE,
                    GuardrailOutcome.WOULD_PAUSE: Outcome.WOULD,
                    GuardrailOutcome.SKIPPED: Outcome.SKIPPED,
                    GuardrailOutcome.FAILED: Outcome.FAILED}


def pause_spent_budgets(engine: Engine, *, now: datetime | None = None, actor: str = ACTOR,
                        dry_run: bool = False) -> list[LifecycleAction]:
    """:func:`web.guardrails.check_budgets`, its campaigns kept running left out."""
    return [LifecycleAction("pause", action.campaign_id, action.campaign_name,
                            _BUDGET_OUTCOMES[action.outcome], action.reason)
            for action in check_budgets(engine, now=now, actor=actor, dry_run=dry_run)
            if action.outcome is not GuardrailOutcome.KEPT]


def tick(engine: Engine, *, now: datetime | None = None, actor: str = ACTOR,
         dry_run: bool = False) -> list[LifecycleAction]:
    """The lifecycle jobs once, in order (schedules, draws, budgets): what cron runs."""
    now = now or utcnow()
    return [*advance_schedules(engine, now=now, actor=actor, dry_run=dry_run),
            *run_due_draws(engine, now=now, actor=actor, dry_run=dry_run),
            *pause_spent_budgets(engine, now=now, actor=actor, dry_run=dry_run)]


# ------------------------------------------------------------------------- the timer


@dataclass(frozen=True)
class Job:
    """A periodic job: ``run(engine)`` every ``interval_seconds`` (0: never)."""

    name: str
    interval_seconds: float
    run: Callable[[Engine], Sequence[Any]]

    def __post_init__(self) -> None:
        if self.interval_seconds < 0:
            raise ValueError(f"interval_seconds of job '{self.name}' must not be negative "
                             f"(got {self.interval_seconds})")


class Scheduler:
    """Runs each job every ``interval_seconds`` (+-``jitter``) inside the server.

    Each enabled job has a loop of its own on the event loop (the first run one interval
    after the start); a run happens in a worker thread. An exception is logged and the
    next run happens as planned. A job whose interval is 0 does not run.
    """

    def __init__(self, engine: Engine, jobs: Sequence[Job], *, jitter: float = 0.1,
                 rng: random.Random | None = None):
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be a fraction in [0, 1) (got {jitter})")
        self.engine = engine
        self.jobs = {job.name: job for job in jobs}
        self.jitter = jitter
        self.runs: Counter[str] = Counter()
        self._rng = rng or random.Random()  # noqa: S311 - spreading timers, not secrets
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def enabled(self) -> list[str]:
        """The names of the jobs that run."""
        return [name for name, job in self.jobs.items() if job.interval_seconds > 0]

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def next_delay(self, job: Job) -> float:
        """Seconds until the job's next run: its interval, give or take ``jitter`` of it."""
        return job.interval_seconds * (1 + self._rng.uniform(-self.jitter, self.jitter))

    def start(self) -> None:
        """Start the loops of the enabled jobs on the running event loop."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._loop(self.jobs[name]), name=f"scheduler-{name}")
                       for name in self.enabled]

    async def stop(self) -> None:
        """Stop the loops; a run already in its thread finishes on its own."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task

    async def _loop(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self.next_delay(job))
            await self.run_once(job.name)

    async def run_once(self, name: str) -> Sequence[Any] | None:
        """One run of a job in a worker thread; None when it raised (logged, never
        propagated)."""
        job = self.jobs[name]
        try:
            actions = await asyncio.to_thread(job.run, self.engine)
        except Exception:
            logger.exception("scheduler job '%s' failed; it runs again in about %.0f s",
                             name, job.interval_seconds)
            return None
        finally:
            self.runs[name] += 1
        outcomes = Counter(str(action.outcome) for action in actions
                           if isinstance(getattr(action, "outcome", None), StrEnum))
        if outcomes:
            logger.info("scheduler job '%s': %s", name,
                        ", ".join(f"{count} {outcome}" for outcome, count in outcomes.items()))
        return actions


def lifecycle_scheduler(engine: Engine, settings: Settings) -> Scheduler:
    """The server's scheduler with the jobs and intervals of ``settings`` (none when
    ``settings.scheduler`` is off)."""
    jobs = [
        Job("schedules", settings.schedule_interval_seconds, advance_schedules),
        Job("draws", settings.draw_interval_seconds, run_due_draws),
        Job("budget", settings.budget_interval_seconds, pause_spent_budgets),
        Job("guardrails", settings.guardrail_interval_seconds,
            partial(check_guardrails, actor="system:guardrails")),
    ] if settings.scheduler else []
    return Scheduler(engine, jobs)
