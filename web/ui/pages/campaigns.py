"""Campaigns: the list by status, and the campaign page with everything a marketer acts on.

The campaign page shows the goal, the schedule, the arms with their incentives and
weights, the budget, why the campaign is paused, the lifecycle buttons its status allows
(each behind a confirmation), the audit trail, coupon batches for batch-coupon arms and
the prize draws of a lottery arm. Every change goes through the services in
``campaigns.services`` (which validate, audit and bump the configuration epoch); this
module only reads tables to show them.

The wizard that creates campaigns lives at ``/campaigns/new`` (another module). The routes
here match a campaign id of digits only (:class:`CampaignRoute`), so ``/campaigns/new`` can
never be mistaken for a campaign whatever order the routers are included in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import func
from sqlmodel import Session, col, select
from starlette.routing import compile_path

from campaigns.errors import ChannelShiftError, FieldError, InvalidTransition
from campaigns.incentives import get_incentive_type
from campaigns.models import (
    Arm,
    AuditLog,
    Campaign,
    CampaignOrigin,
    CampaignStatus,
    Channel,
    CouponCode,
    Customer,
    GuardrailMetric,
    Incentive,
    LotteryDraw,
    LotteryWinner,
    MigrationGoal,
    Stage,
)
from campaigns.services.campaigns import (
    ALLOWED_TRANSITIONS,
    LIVE_EDITABLE,
    campaign_arms,
    exposure_count,
    readiness_problems,
    transition,
    update_campaign,
)
from campaigns.services.coupons import (
    MAX_BATCH,
    arm_in_campaign,
    coupon_code_rows,
    generate_coupon_batch,
)
from campaigns.services.goals import source_channels
from campaigns.services.lotteries import (
    ALGORITHM,
    announced_draw,
    draw_due,
    run_draw,
    verify_draw,
)
from campaigns.types import utcnow
from campaigns.wording import plural
from web.api.management.common import StreamSessionDep, csv_response, streamed
from web.deps import SessionDep
from web.ui.auth import SignedIn, SignedInUser, flash
from web.ui.forms import FormFields, FormState, attempt, format_money, parse_int, parse_money
from web.ui.pages import page_router
from web.ui.pages.dashboard import STATUS_ORDER, CampaignCard, campaign_cards
from web.ui.permissions import Permission
from web.ui.problems import PageNotFound
from web.ui.rendering import UiRoute, render, see_other

S = CampaignStatus

#: The path of a campaign's pages; ``campaign_id`` matches digits only (see CampaignRoute).
CAMPAIGN = "/campaigns/{campaign_id}"


class CampaignRoute(UiRoute):
    """A UI route whose ``{campaign_id}`` matches digits only.

    ``/campaigns/new`` and the wizard's steps below it then never reach a campaign page,
    whichever router is included first. Only the matching pattern changes: the path, its
    parameter names and FastAPI's validation (an int of at least 1) stay as declared.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.path_regex = compile_path(path.replace("{campaign_id}", "{campaign_id:int}"))[0]


def campaign_router() -> APIRouter:
    """A page router (guarded, HTML problem pages) whose routes are CampaignRoutes."""
    router = page_router()
    router.route_class = CampaignRoute
    return router


router = campaign_router()
CampaignId = Annotated[int, Path(ge=1)]

#: Audit entries the campaign page shows (newest first); older ones are counted.
AUDIT_LIMIT = 100
#: Winners listed per draw on the draws page.
WINNERS_SHOWN = 200
#: The CSV columns of the coupon-code download (as the management API names them).
CODES_HEADER = ("code", "arm", "customer_id", "issued_at", "uses")

#: How a datetime-local input writes a time (no zone: the user's zone is implied).
LOCAL_INPUT_FORMAT = "%Y-%m-%dT%H:%M"


# --- lifecycle actions ------------------------------------------------------------------


@dataclass(frozen=True)
class LifecycleAction:
    """One lifecycle button: what it is called, what it asks and what it does."""

    target: CampaignStatus
    label: str
    question: str
    consequence: str
    danger: bool = False
    asks_reason: bool = False


_END_CONSEQUENCE = ("Offers stop for good and the end time becomes now. An ended campaign "
                    "cannot be restarted; its report stays.")

ACTIONS: Mapping[tuple[CampaignStatus, CampaignStatus], LifecycleAction] = {
    (S.DRAFT, S.SCHEDULED): LifecycleAction(
        S.SCHEDULED, "Schedule", "Schedule this campaign?",
        "Every readiness check runs now. The campaign starts by itself at its start time; "
        "until then you can move it back to draft."),
    (S.SCHEDULED, S.RUNNING): LifecycleAction(
        S.RUNNING, "Start now", "Start this campaign now?",
        "Customers are assigned to arms and offered the incentives from now on, and the "
        "start time becomes now. Assignments are kept for good."),
    (S.SCHEDULED, S.DRAFT): LifecycleAction(
        S.DRAFT, "Back to draft", "Move this campaign back to draft?",
        "It will not start at its start time; you can change it and schedule it again."),
    (S.SCHEDULED, S.ENDED): LifecycleAction(
        S.ENDED, "Cancel", "Cancel this campaign?",
        "It will never run. An ended campaign cannot be restarted.", danger=True),
    (S.RUNNING, S.PAUSED): LifecycleAction(
        S.PAUSED, "Pause", "Pause this campaign?",
        "No offers are made while it is paused; customers already exposed keep their arm. "
        "You can resume it.", asks_reason=True),
    (S.RUNNING, S.ENDED): LifecycleAction(
        S.ENDED, "End", "End this campaign now?", _END_CONSEQUENCE, danger=True),
    (S.PAUSED, S.RUNNING): LifecycleAction(
        S.RUNNING, "Resume", "Resume this campaign?",
        "Offers are made again from now on. A guardrail that paused it will pause it "
        "again while the harm persists."),
    (S.PAUSED, S.ENDED): LifecycleAction(
        S.ENDED, "End", "End this campaign now?", _END_CONSEQUENCE, danger=True),
}

#: Button order on the page: forward first, the irreversible end last.
_TARGET_ORDER = (S.SCHEDULED, S.RUNNING, S.PAUSED, S.DRAFT, S.ENDED)


def lifecycle_actions(status: CampaignStatus | str) -> list[LifecycleAction]:
    """The buttons a campaign in ``status`` offers: exactly what ALLOWED_TRANSITIONS allows."""
    current = CampaignStatus(status)
    allowed = ALLOWED_TRANSITIONS[current]
    return [ACTIONS[(current, target)] for target in _TARGET_ORDER if target in allowed]


def _action(status: str, target: str) -> LifecycleAction | None:
    try:
        return ACTIONS.get((CampaignStatus(status), CampaignStatus(target)))
    except ValueError:
        return None


# --- reading a campaign -------------------------------------------------------------------


@dataclass(frozen=True)
class GoalView:
    name: str
    stage: str
    sources: list[str]
    target: str
    metric: str
    window_days: int
    target_uplift: float


@dataclass(frozen=True)
class ArmView:
    id: int
    name: str
    weight: int
    is_control: bool
    incentive_name: str | None
    incentive_type: str | None
    offer: str | None
    #: batch coupons: codes generated so far and how many were issued to customers
    batch_coupon: bool = False
    codes: int = 0
    issued: int = 0
    lottery: bool = False


@dataclass(frozen=True)
class PauseInfo:
    reason: str | None
    actor: str | None
    at: datetime | None

    @property
    def automatic(self) -> bool:
        """Paused by a system check (guardrails, budget) rather than by a person."""
        return self.actor is not None and not self.actor.startswith("user:")


def load_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise PageNotFound(f"There is no campaign {campaign_id}.")
    return campaign


def goal_view(session: Session, campaign: Campaign) -> GoalView | None:
    if campaign.goal_id is None:
        return None
    goal = session.get(MigrationGoal, campaign.goal_id)
    if goal is None:
        return None
    stage = session.get(Stage, goal.stage_id)
    target = session.get(Channel, goal.target_channel_id)
    return GoalView(name=goal.name, stage=stage.name if stage else "?",
                    sources=[channel.name for channel in source_channels(session, goal)],
                    target=target.name if target else "?", metric=goal.metric,
                    window_days=goal.window_days, target_uplift=float(goal.target_uplift))


def _offer_text(incentive: Incentive, *, currency: str) -> str | None:
    """The offer as a storefront describes it; None if the stored config no longer validates."""
    try:
        kind = get_incentive_type(incentive.type)
        offer = kind.describe(kind.validate(incentive.config), currency=currency)
    except (ChannelShiftError, KeyError, ValueError):
        return None
    return f"{offer.title}: {offer.description}" if offer.description else offer.title


def _code_counts(session: Session, campaign: Campaign) -> dict[int, tuple[int, int]]:
    """(codes, issued codes) per incentive of the campaign, in one grouped query."""
    rows = session.exec(
        select(CouponCode.incentive_id, func.count(), func.count(col(CouponCode.customer_id)))
        .where(CouponCode.campaign_id == campaign.id)
        .group_by(col(CouponCode.incentive_id))).all()
    return {incentive_id: (int(total), int(issued)) for incentive_id, total, issued in rows}


def _is_batch_coupon(incentive: Incentive) -> bool:
    return incentive.type == "coupon" and incentive.config.get("mode") == "batch"


def arm_views(session: Session, campaign: Campaign) -> list[ArmView]:
    arms = campaign_arms(session, campaign)
    incentive_ids = [arm.incentive_id for arm in arms if arm.incentive_id is not None]
    incentives = {incentive.id: incentive for incentive in session.exec(
        select(Incentive).where(col(Incentive.id).in_(incentive_ids))).all()}
    codes = _code_counts(session, campaign)
    views = []
    for arm in arms:
        assert arm.id is not None
        incentive = incentives.get(arm.incentive_id) if arm.incentive_id else None
        generated, issued = codes.get(arm.incentive_id or 0, (0, 0))
        views.append(ArmView(
            id=arm.id, name=arm.name, weight=arm.weight, is_control=arm.is_control,
            incentive_name=incentive.name if incentive else None,
            incentive_type=incentive.type if incentive else None,
            offer=_offer_text(incentive, currency=campaign.currency) if incentive else None,
            batch_coupon=bool(incentive and _is_batch_coupon(incentive)),
            codes=generated, issued=issued,
            lottery=bool(incentive and incentive.type == "lottery")))
    return views


def audit_trail(session: Session, campaign_id: int, *, limit: int = AUDIT_LIMIT
                ) -> tuple[list[AuditLog], int]:
    """The campaign's audit entries, newest first (at most ``limit``), and how many exist."""
    where = (AuditLog.entity_type == "campaign", AuditLog.entity_id == campaign_id)
    entries = session.exec(select(AuditLog).where(*where)
                           .order_by(col(AuditLog.at).desc(), col(AuditLog.id).desc())
                           .limit(limit)).all()
    total = session.exec(select(func.count()).select_from(AuditLog).where(*where)).one()
    return list(entries), int(total)


def pause_info(session: Session, campaign: Campaign) -> PauseInfo | None:
    """Why and by whom a paused campaign was paused (the guardrail check writes the reason)."""
    if campaign.status != S.PAUSED.value:
        return None
    entry = session.exec(select(AuditLog).where(
        AuditLog.entity_type == "campaign", AuditLog.entity_id == campaign.id,
        AuditLog.action == f"campaign.{S.PAUSED.value}")
        .order_by(col(AuditLog.at).desc(), col(AuditLog.id).desc())).first()
    return PauseInfo(reason=campaign.pause_reason, actor=entry.actor if entry else None,
                     at=entry.at if entry else None)


def audit_summary(entry: AuditLog) -> str:
    """One line on what an audit entry changed, in words rather than JSON."""
    details: dict[str, Any] = entry.details or {}
    action = entry.action
    if action.startswith("campaign.") and "from" in details and "to" in details:
        reason = f" ({details['reason']})" if details.get("reason") else ""
        return f"{details['from']} → {details['to']}{reason}"
    if action == "campaign.update":
        changed = ", ".join(sorted((details.get("changes") or {}).keys()))
        return f"changed {changed}" if changed else "saved without changes"
    if action == "campaign.weights":
        after = details.get("after") or {}
        return "weights " + ", ".join(f"{arm} {weight}%" for arm, weight in after.items())
    if action == "coupon_batch.generate":
        return (f"{plural(details.get('generated', 0), 'code')} for '{details.get('arm')}' "
                f"({details.get('total_codes', 0):,} in all)")
    if action == "lottery.draw":
        return (f"draw {details.get('draw_id')}: {plural(details.get('winners', 0), 'winner')}, "
                f"seed {details.get('seed')}")
    if action == "campaign.create":
        return f"created '{details.get('name', '')}'"
    return ", ".join(f"{key}: {value}" for key, value in details.items()
                     if isinstance(value, str | int | float))[:200]


# --- time zones ---------------------------------------------------------------------------


def user_zone(user: SignedInUser) -> tzinfo:
    try:
        return ZoneInfo(user.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_input(value: datetime | None, zone: tzinfo) -> str:
    """A UTC time as a datetime-local input's value in the user's zone."""
    return "" if value is None else value.astimezone(zone).strftime(LOCAL_INPUT_FORMAT)


def parse_local(text: str, *, name: str, form: FormState, zone: tzinfo) -> datetime | None:
    """A datetime-local value typed in the user's zone, as an aware time (None if blank)."""
    text = text.strip()
    if not text:
        return None
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        form.add(name, f"'{text}' is not a date and time; use the picker or "
                 "write it like 2026-12-01T09:00.")
        return None
    if naive.tzinfo is not None:
        return naive
    # fold=0: in the repeated hour of a DST change, the first occurrence is meant.
    return naive.replace(tzinfo=zone)


# --- the list -------------------------------------------------------------------------------


@router.get("/campaigns", name="ui.campaigns")
def campaigns_page(request: Request, session: SessionDep, user: SignedIn) -> Response:
    groups: dict[str, list[CampaignCard]] = campaign_cards(session)
    return render(request, "campaigns/list.html", {
        "title": "Campaigns", "groups": groups, "statuses": [s.value for s in STATUS_ORDER],
        "total": sum(len(cards) for cards in groups.values())})


# --- the campaign page ----------------------------------------------------------------------


def _page_context(session: Session, campaign: Campaign, user: SignedInUser) -> dict[str, Any]:
    assert campaign.id is not None
    arms = arm_views(session, campaign)
    entries, audit_total = audit_trail(session, campaign.id)
    status = CampaignStatus(campaign.status)
    live = campaign.origin == CampaignOrigin.LIVE.value
    draw_at = announced_draw(session, campaign)
    problems: list[FieldError] = []
    if live and status in (S.DRAFT, S.SCHEDULED):
        problems = readiness_problems(session, campaign, now=utcnow())
    return {
        "title": campaign.name, "campaign": campaign, "goal": goal_view(session, campaign),
        "arms": arms, "live": live, "exposures": exposure_count(session, campaign),
        "actions": lifecycle_actions(status) if live and user.can(Permission.CONFIGURE)
        else [],
        "readiness": problems, "pause": pause_info(session, campaign),
        "audit": [(entry, audit_summary(entry)) for entry in entries],
        "audit_total": audit_total,
        "coupon_arms": [arm for arm in arms if arm.batch_coupon],
        "lottery": any(arm.lottery for arm in arms), "draws": _draw_views(session, campaign),
        "draw_at": draw_at, "draw_due": draw_due(draw_at, utcnow()),
        "can_configure": user.can(Permission.CONFIGURE) and live,
        "max_batch": MAX_BATCH,
    }


def _campaign_page(request: Request, session: Session, campaign: Campaign,
                   user: SignedInUser, *, form: FormState | None = None,
                   status_code: int = 200) -> Response:
    context = _page_context(session, campaign, user)
    context["form"] = form or FormState(values={
        f"count_{arm.id}": "" for arm in context["coupon_arms"]})
    return render(request, "campaigns/show.html", context, status_code=status_code)


@router.get(CAMPAIGN, name="ui.campaigns.show")
def campaign_page(request: Request, session: SessionDep, user: SignedIn,
                  campaign_id: CampaignId) -> Response:
    return _campaign_page(request, session, load_campaign(session, campaign_id), user)


# --- lifecycle ------------------------------------------------------------------------------


def _status_page(request: Request, campaign: Campaign, *, action: LifecycleAction | None,
                 form: FormState, problems: list[str] | None = None,
                 status_code: int = 200) -> Response:
    return render(request, "campaigns/status.html", {
        "title": action.question if action else f"Change the status of {campaign.name}",
        "campaign": campaign, "action": action, "form": form, "problems": problems or [],
        "actions": lifecycle_actions(campaign.status)
        if campaign.origin == CampaignOrigin.LIVE.value else []},
        status_code=status_code)


@router.get(f"{CAMPAIGN}/status", name="ui.campaigns.status_confirm")
def status_confirm_page(
    request: Request, session: SessionDep, user: SignedIn, campaign_id: CampaignId,
    to: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """The confirmation step of a lifecycle button (the page opens it in a dialog when it can).

    Without ``to`` (or with one the status does not allow) it lists the allowed changes.
    """
    campaign = load_campaign(session, campaign_id)
    action = _action(campaign.status, to) if to else None
    if action is not None and action.target not in ALLOWED_TRANSITIONS[S(campaign.status)]:
        action = None
    return _status_page(request, campaign, action=action,
                        form=FormState(values={"to": to or "", "reason": ""}))


@router.post(f"{CAMPAIGN}/status", name="ui.campaigns.status")
def change_status(
    request: Request, session: SessionDep, user: SignedIn, campaign_id: CampaignId,
    to: Annotated[str, Form(max_length=20)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Move the campaign through its lifecycle; a refusal lists what stands in the way."""
    campaign = load_campaign(session, campaign_id)
    form = FormState(values={"to": to, "reason": reason.strip()})
    action = _action(campaign.status, to)
    if campaign.origin != CampaignOrigin.LIVE.value:
        return _status_page(request, campaign, action=None, form=form, status_code=409,
                            problems=["An imported experiment has no lifecycle: it ran "
                                      "elsewhere and only its results are kept here."])
    try:
        with session.begin_nested():
            transition(session, campaign=campaign, target=to, actor=user.actor,
                       reason=form.values["reason"] or None)
    except InvalidTransition as error:
        problems = [_sentence(item.msg) for item in error.errors] or [_sentence(error.message)]
        return _status_page(request, campaign, action=action, form=form, problems=problems,
                            status_code=409)
    flash(request, f"'{campaign.name}' is now {campaign.status}.")
    return see_other(request.app.url_path_for("ui.campaigns.show", campaign_id=campaign.id))


def _sentence(message: str) -> str:
    message = message.strip()
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else f"{message}."


# --- editing --------------------------------------------------------------------------------

#: Fields of the edit form, as the service names them (money and times are parsed here).
EDIT_FIELDS = ("name", "description", "budget", "starts_at", "ends_at", "priority",
               "guardrails")
#: Service field name -> form field name, for placing the service's messages.
EDIT_FIELD_NAMES = {"budget_minor": "budget"}
GUARDRAIL_CHOICES = [
    (GuardrailMetric.COMPLAINTS.value, "Complaints (harm: more complaints per customer)"),
    (GuardrailMetric.CHURN.value, "Churn (harm: more customers leave)"),
    (GuardrailMetric.REVENUE.value, "Revenue (harm: less revenue per customer)"),
]


def _edit_values(campaign: Campaign, zone: tzinfo) -> dict[str, Any]:
    return {"name": campaign.name, "description": campaign.description,
            "budget": format_money(campaign.budget_minor),
            "starts_at": local_input(campaign.starts_at, zone),
            "ends_at": local_input(campaign.ends_at, zone),
            "priority": str(campaign.priority), "guardrails": list(campaign.guardrails or [])}


def frozen_fields(campaign: Campaign) -> list[str]:
    """Form fields a running or paused campaign may not change (shown, but disabled)."""
    if campaign.status not in (S.RUNNING.value, S.PAUSED.value):
        return []
    return sorted({"starts_at"} - LIVE_EDITABLE)


def _edit_form(request: Request, campaign: Campaign, form: FormState, *,
               status_code: int = 200) -> Response:
    return render(request, "campaigns/edit.html", {
        "title": f"Edit {campaign.name}", "campaign": campaign, "form": form,
        "frozen": frozen_fields(campaign), "guardrail_choices": GUARDRAIL_CHOICES,
        "editable": campaign.status != S.ENDED.value
        and campaign.origin == CampaignOrigin.LIVE.value},
        status_code=status_code)


@router.get(f"{CAMPAIGN}/edit", name="ui.campaigns.edit")
def edit_campaign_page(request: Request, session: SessionDep, user: SignedIn,
                       campaign_id: CampaignId) -> Response:
    campaign = load_campaign(session, campaign_id)
    return _edit_form(request, campaign, FormState(values=_edit_values(campaign,
                                                                       user_zone(user))))


def edit_changes(campaign: Campaign, form: FormState, zone: tzinfo) -> dict[str, Any]:
    """The fields whose typed value differs from the stored one, parsed; problems on ``form``.

    Only changes are sent to the service, so a running campaign can still save the fields
    it may change while the ones it may not (its start) stay as they are.
    """
    values = form.values
    guardrails: list[str] = list(values["guardrails"])
    typed: dict[str, Any] = {"name": values["name"], "description": values["description"],
                             "guardrails": guardrails}
    budget = values["budget"]
    typed["budget_minor"] = (parse_money(budget, name="budget", form=form) if budget
                             else None)
    for name in ("starts_at", "ends_at"):
        stored = getattr(campaign, name)
        # The form shows minutes; a time shown and sent back unchanged is not a change.
        typed[name] = stored if values[name] == local_input(stored, zone) else parse_local(
            values[name], name=name, form=form, zone=zone)
    priority = parse_int(values["priority"], name="priority", form=form)
    typed["priority"] = priority if priority is not None else campaign.priority
    current = {"name": campaign.name, "description": campaign.description,
               "guardrails": list(campaign.guardrails or []),
               "budget_minor": campaign.budget_minor, "starts_at": campaign.starts_at,
               "ends_at": campaign.ends_at, "priority": campaign.priority}
    changes = {name: value for name, value in typed.items() if value != current[name]}
    # compared as sets: the order of the ticked boxes means nothing
    if "guardrails" in changes and set(guardrails) == set(campaign.guardrails or []):
        del changes["guardrails"]
    for name in ("starts_at", "ends_at", "budget_minor"):
        if name in changes and changes[name] is None:
            form.add(EDIT_FIELD_NAMES.get(name, name),
                     "This cannot be emptied once set; enter a value.")
            del changes[name]
    return changes


@router.post(f"{CAMPAIGN}/edit", name="ui.campaigns.update")
def update_campaign_submit(
    request: Request, session: SessionDep, user: SignedIn, campaign_id: CampaignId,
    fields: FormFields,
    guardrails: Annotated[list[str] | None, Form()] = None,
) -> Response:
    campaign = load_campaign(session, campaign_id)
    zone = user_zone(user)
    stored = _edit_values(campaign, zone)
    form = FormState(values={name: fields.get(name, "").strip() for name in EDIT_FIELDS
                             if name != "guardrails"} | {"guardrails": guardrails or []})
    for name in frozen_fields(campaign):
        form.values[name] = stored[name]  # a disabled input sends nothing: keep what is stored
    changes = edit_changes(campaign, form, zone)
    if not form.failed and changes:
        attempt(session, form, lambda: update_campaign(
            session, campaign=campaign, campaign_update=changes, actor=user.actor),
            fields=EDIT_FIELD_NAMES)
    if form.failed:
        session.refresh(campaign)  # the savepoint rolled back; show the stored campaign
        return _edit_form(request, campaign, form, status_code=422)
    flash(request, f"'{campaign.name}' saved." if changes else "Nothing was changed.")
    return see_other(request.app.url_path_for("ui.campaigns.show", campaign_id=campaign.id))


# --- coupon batches -------------------------------------------------------------------------


@router.post(f"{CAMPAIGN}/coupons", name="ui.campaigns.coupons.generate")
def generate_coupons(request: Request, session: SessionDep, user: SignedIn,
                     campaign_id: CampaignId, fields: FormFields) -> Response:
    """Generate N unique codes for one batch-coupon arm (the field is ``count_<arm id>``)."""
    campaign = load_campaign(session, campaign_id)
    arm_text = fields.get("arm_id", "")
    if not arm_text.isdigit():
        raise PageNotFound("The form did not say which arm the codes are for.")
    arm = _arm(session, campaign, int(arm_text))
    name = f"count_{arm.id}"
    form = FormState(values={name: fields.get(name, "").strip()})
    count = parse_int(form.values[name], name=name, form=form)
    if count is not None and not 1 <= count <= MAX_BATCH:
        form.add(name, f"Enter a number of codes from 1 to {MAX_BATCH:,}.")
    total = None
    if not form.failed and count is not None:
        total = attempt(session, form, lambda: generate_coupon_batch(
            session, campaign=campaign, arm=arm, count=count, actor=user.actor),
            fields={"count": name, "arm_id": name})
    if total is None:
        return _campaign_page(request, session, campaign, user, form=form, status_code=422)
    flash(request, f"{plural(count, 'new code')} for '{arm.name}' ({total:,} in all). "
          "Download them as CSV below.")
    url = request.app.url_path_for("ui.campaigns.show", campaign_id=campaign.id)
    return see_other(f"{url}#coupons")


def _arm(session: Session, campaign: Campaign, arm_id: int) -> Arm:
    try:
        return arm_in_campaign(session, campaign=campaign, arm_id=arm_id)
    except ChannelShiftError:
        raise PageNotFound(f"Campaign {campaign.id} has no arm {arm_id}.") from None


@router.get(f"{CAMPAIGN}/coupon-codes.csv", name="ui.campaigns.coupons.csv")
def download_coupon_codes(user: SignedIn, campaign_id: CampaignId,
                          stream_session: StreamSessionDep) -> StreamingResponse:
    """Every code of the campaign as CSV, streamed (the management API's format)."""
    campaign = load_campaign(stream_session, campaign_id)
    rows = streamed(stream_session, lambda view: coupon_code_rows(view, campaign=campaign))
    return csv_response(CODES_HEADER, rows,
                        filename=f"campaign-{campaign.id}-coupon-codes.csv")


# --- prize draws ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DrawView:
    draw: LotteryDraw
    winners: int
    prizes: dict[str, int]


def _draw_views(session: Session, campaign: Campaign) -> list[DrawView]:
    draws = session.exec(select(LotteryDraw).where(LotteryDraw.campaign_id == campaign.id)
                         .order_by(col(LotteryDraw.id).desc())).all()
    ids = [draw.id for draw in draws if draw.id is not None]
    prizes: dict[int, dict[str, int]] = {}
    if ids:
        for draw_id, prize, count in session.exec(
                select(LotteryWinner.draw_id, LotteryWinner.prize_key, func.count())
                .where(col(LotteryWinner.draw_id).in_(ids))
                .group_by(col(LotteryWinner.draw_id), col(LotteryWinner.prize_key))
                .order_by(col(LotteryWinner.prize_key))):
            prizes.setdefault(draw_id, {})[prize] = int(count)
    return [DrawView(draw=draw, winners=sum(prizes.get(draw.id or 0, {}).values()),
                     prizes=prizes.get(draw.id or 0, {})) for draw in draws]


def _winners(session: Session, draw_id: int) -> Iterator[tuple[str, str]]:
    yield from session.exec(
        select(Customer.external_id, LotteryWinner.prize_key)
        .join(Customer, col(Customer.id) == LotteryWinner.customer_id)
        .where(LotteryWinner.draw_id == draw_id)
        .order_by(col(LotteryWinner.id)).limit(WINNERS_SHOWN)).all()


def _draws_page(request: Request, session: Session, campaign: Campaign, user: SignedInUser,
                *, form: FormState | None = None, verify: int | None = None,
                status_code: int = 200) -> Response:
    views = _draw_views(session, campaign)
    lottery = any(arm.lottery for arm in arm_views(session, campaign))
    verification = None
    if verify is not None:
        verification = _verification(session, campaign, verify)
    latest = views[0] if views else None
    draw_at = announced_draw(session, campaign)
    return render(request, "campaigns/draws.html", {
        "draw_at": draw_at, "due": draw_due(draw_at, utcnow()),
        "title": f"Prize draws of {campaign.name}", "campaign": campaign, "draws": views,
        "lottery": lottery, "form": form or FormState(values={"seed": ""}),
        "verification": verification, "algorithm": ALGORITHM,
        "winners": list(_winners(session, latest.draw.id))
        if latest and latest.draw.id and user.can(Permission.CONFIGURE) else [],
        "winners_shown": WINNERS_SHOWN,
        "can_draw": lottery and user.can(Permission.CONFIGURE) and draw_due(draw_at, utcnow())
        and campaign.origin == CampaignOrigin.LIVE.value}, status_code=status_code)


def _verification(session: Session, campaign: Campaign, draw_id: int) -> dict[str, Any]:
    """Re-run a recorded draw from its seed; a draw made by another algorithm cannot be."""
    assert campaign.id is not None
    draw = session.get(LotteryDraw, draw_id)
    if draw is None or draw.campaign_id != campaign.id:
        raise PageNotFound(f"Campaign {campaign.id} has no draw {draw_id}.")
    if draw.algorithm != ALGORITHM:
        return {"draw": draw, "verified": None,
                "message": f"Draw {draw_id} was recorded with the algorithm "
                f"'{draw.algorithm}'; this server re-runs '{ALGORITHM}' only, so it cannot "
                "be verified here."}
    result = verify_draw(session, campaign_id=campaign.id, draw_id=draw_id)
    verified = bool(result["verified"])
    return {"draw": draw, "verified": verified,
            "message": f"Re-running draw {draw_id} with seed {draw.seed} on the same "
            f"entries gives the same {plural(result['winners'], 'winner')}." if verified else
            f"Re-running draw {draw_id} with seed {draw.seed} does NOT give the recorded "
            "winners: the entries or the winners changed after the draw."}


@router.get(f"{CAMPAIGN}/draws", name="ui.campaigns.draws")
def draws_page(request: Request, session: SessionDep, user: SignedIn,
               campaign_id: CampaignId,
               verify: Annotated[int | None, Query(ge=1)] = None) -> Response:
    """The campaign's draws with their seeds; ``?verify=<draw id>`` re-runs one."""
    return _draws_page(request, session, load_campaign(session, campaign_id), user,
                       verify=verify)


@router.post(f"{CAMPAIGN}/draws", name="ui.campaigns.draws.run")
def run_draw_submit(request: Request, session: SessionDep, user: SignedIn,
                    campaign_id: CampaignId,
                    seed: Annotated[str, Form(max_length=200)] = "") -> Response:
    """Draw winners now; the seed (typed or generated) is recorded with the draw."""
    campaign = load_campaign(session, campaign_id)
    form = FormState(values={"seed": seed.strip()})
    if campaign.origin != CampaignOrigin.LIVE.value:
        form.add(None, "An imported experiment has no prize draw.")
        return _draws_page(request, session, campaign, user, form=form, status_code=409)
    now = utcnow()
    draw = attempt(session, form, lambda: run_draw(
        session, campaign_id=campaign_id, actor=user.actor, seed=form.values["seed"] or None,
        now=now))
    if draw is None:
        early = not draw_due(announced_draw(session, campaign), now)
        return _draws_page(request, session, campaign, user, form=form,
                           status_code=409 if early else 422)
    winners = session.exec(select(func.count()).select_from(LotteryWinner)
                           .where(LotteryWinner.draw_id == draw.id)).one()
    flash(request, f"Draw {draw.id}: {plural(winners, 'winner')}. "
          f"Recorded seed {draw.seed}.")
    return see_other(request.app.url_path_for("ui.campaigns.draws", campaign_id=campaign_id))
