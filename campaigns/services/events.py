"""Channel events and conversions: validated as a whole batch, recorded once, with side effects.

Storefronts and channel systems report what customers did (an interaction on a channel at
a stage, a complaint, a purchase). A batch is checked completely before anything is
written: one bad event rejects the batch, and every problem is named by its position and
field. Recording is idempotent: the sender's event id is unique in the database, rows are
inserted with ``ON CONFLICT DO NOTHING ... RETURNING``, and only the rows the database
actually inserted count as accepted and earn anything. A retried batch therefore changes
nothing the second time, even when both attempts run at once.

Newly recorded events feed the incentives of running campaigns, using the catalog
snapshot (no configuration query per event) and a few set-based queries per batch:

- **lottery entries** for customers assigned to a lottery arm, per the arm's entry rule,
  capped by ``max_entries_per_customer``;
- **loyalty points** for customers assigned to a loyalty arm, with the target-channel
  multiplier on the campaign goal's target channel, appended to the points ledger;
- **trial conversions**: a ``trial_to_paid`` conversion marks the customer's free trials
  converted (the first conversion only).

An event earns lottery entries or points only if it happened while the customer was in
the campaign: at or after the assignment's first exposure and before the campaign's end.
Importing history therefore never rewards what the incentive could not have caused.

Everything here works on plain data and a :class:`~sqlmodel.Session`; the web layer and the
CSV importer share it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError
from sqlalchemy import Table, any_, bindparam, cast, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from campaigns.db import insert_ignore
from campaigns.errors import FieldError, ValidationFailed
from campaigns.incentives import OrderContext, get_incentive_type, tier_for_points
from campaigns.models import (
    Assignment,
    Channel,
    ChannelCost,
    ChannelEvent,
    Conversion,
    Customer,
    EventKind,
    LotteryEntry,
    PointsLedger,
    Stage,
    TrialGrant,
)
from campaigns.schemas import AwareDatetime, InputModel
from campaigns.services.catalog import ArmConfig, CampaignConfig, Snapshot
from campaigns.services.customers import CustomerAttributes, ExternalId
from campaigns.types import UTCDateTime, utcnow

#: Most events one API call may carry; larger sets are split by the sender (or imported).
MAX_BATCH_EVENTS = 10_000
#: Clocks drift, but an event more than this far in the future is a bug in the sender.
FUTURE_TOLERANCE = timedelta(days=1)
#: How many problems a rejected batch lists (the message gives the total).
MAX_LISTED_ERRORS = 200
#: The conversion kind that ends a free trial as a paying customer.
TRIAL_TO_PAID = "trial_to_paid"

INTERACTION: Final = "interaction"
CONVERSION: Final = "conversion"
EVENT_TYPES = (INTERACTION, CONVERSION)

#: The largest amount (in minor units) an event may carry.
MAX_MINOR = 10**15
# Rows per IN (...) list: far below SQLite's and PostgreSQL's bound-parameter limits.
_IN_CHUNK = 5_000
_LOTTERY = "lottery"
NUL = "\x00"
_LOYALTY = "loyalty"


# --------------------------------------------------------------------------- input shapes


def _strict_money(value: Any, info: ValidationInfo) -> Any:
    """Whole minor units only: a float, a decimal string or a boolean is refused, not rounded."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PydanticCustomError(
        "money_not_integer",
        "{field} must be a whole number of minor units (cents), e.g. 1999 for 19.99; "
        "got {shown}",
        {"field": info.field_name or "amount", "shown": repr(value)},
    )


def _iso_text(value: Any) -> Any:
    # Pydantic would also take a number as a Unix timestamp; a sender that means that
    # should say so in ISO-8601, where the timezone is explicit.
    if isinstance(value, str | datetime):
        return value
    raise PydanticCustomError("datetime_type", "must be an ISO-8601 date and time")


# Field before the validator, so the JSON schema shows minimum / maximum.
Money = Annotated[int, Field(ge=0, le=MAX_MINOR), BeforeValidator(_strict_money)]
SignedMoney = Annotated[int, Field(ge=-MAX_MINOR, le=MAX_MINOR),
                        BeforeValidator(_strict_money)]
EventTime = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
EventId = Annotated[str, Field(min_length=1, max_length=200)]
KeyText = Annotated[str, Field(min_length=1, max_length=40)]


class InteractionIn(InputModel):
    """One interaction (or complaint, churn, acquisition) on a channel at a stage."""

    type: Literal["interaction"] = "interaction"
    event_id: EventId
    customer_id: ExternalId
    channel: KeyText
    stage: KeyText
    occurred_at: EventTime
    kind: EventKind = EventKind.INTERACTION
    #: default: the channel's cost for the stage (channel_cost), or none if unset
    cost_minor: Money | None = None
    revenue_minor: Money | None = None


class ConversionIn(InputModel):
    """A purchase, a trial turning paid, or another outcome worth money."""

    type: Literal["conversion"]
    event_id: EventId
    customer_id: ExternalId
    occurred_at: EventTime
    kind: KeyText = "purchase"
    revenue_minor: Money
    margin_minor: SignedMoney | None = None
    channel: KeyText | None = None


_MODELS: dict[str, type[InteractionIn] | type[ConversionIn]] = {
    INTERACTION: InteractionIn, CONVERSION: ConversionIn,
}


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A checked event with channel and stage resolved to ids, ready to insert."""

    type: Literal["interaction", "conversion"]
    event_id: str
    customer_external_id: str
    occurred_at: datetime
    kind: str
    channel_key: str | None
    channel_id: int | None
    stage_id: int | None
    cost_minor: int | None
    revenue_minor: int | None
    margin_minor: int | None


@dataclass(frozen=True)
class Vocabulary:
    """Channel and stage keys an event may name, and the default cost per interaction."""

    channel_ids: Mapping[str, int]
    stage_ids: Mapping[str, int]
    costs: Mapping[tuple[int, int], int]  # (channel id, stage id) -> cost_minor


def load_vocabulary(session: Session) -> Vocabulary:
    """Channels, stages and costs as they are now (three small queries per batch)."""
    channels = {key: id_ for key, id_ in session.exec(select(Channel.key, Channel.id))
                if id_ is not None}
    stages = {key: id_ for key, id_ in session.exec(select(Stage.key, Stage.id))
              if id_ is not None}
    costs = {(channel, stage): cost for channel, stage, cost in session.exec(
        select(ChannelCost.channel_id, ChannelCost.stage_id, ChannelCost.cost_minor))}
    return Vocabulary(channel_ids=channels, stage_ids=stages, costs=costs)


# --------------------------------------------------------------------------- validation


def _message(loc: tuple[str | int, ...], item: Any, type_key: str) -> str:
    name = ".".join(str(p) for p in loc) or "the event"
    kind = item["type"]
    ctx = item.get("ctx") or {}
    if kind == "missing":
        return f"{name} is required"
    if kind == "extra_forbidden":
        allowed = ", ".join(_MODELS[type_key].model_fields)
        return f"'{name}' is not a field of {type_key} events (fields: {allowed})"
    if kind == "money_not_integer" or (name.endswith("_minor") and kind.startswith("int_")):
        return item["msg"]
    if name == "occurred_at" and (kind.startswith(("datetime", "timezone")) or
                                  kind == "value_error"):
        return ("occurred_at must be an ISO-8601 date and time with a timezone, "
                "e.g. 2026-01-31T09:00:00Z")
    if kind == "enum":
        return f"{name} must be one of {ctx.get('expected')}; got {item.get('input')!r}"
    if kind == "string_too_short":
        return f"{name} cannot be empty"
    if kind == "string_too_long":
        return f"{name} can have at most {ctx.get('max_length')} characters"
    if kind == "string_type":
        return f"{name} must be text"
    if kind == "string_pattern_mismatch" and name == "customer_id":
        return ("customer_id may use only letters, digits and _ . : @ - "
                f"(got {item.get('input')!r})")
    if kind == "greater_than_equal":
        return f"{name} must be {ctx.get('ge'):,} or more; got {item.get('input')!r}"
    if kind == "less_than_equal":
        return f"{name} must be at most {ctx.get('le'):,}; got {item.get('input')!r}"
    return f"{name}: {item['msg'].removeprefix('Value error, ')}"


class EventValidator:
    """Checks raw events one at a time against the channels, stages and the clock.

    Locations in the returned errors are relative to the event (``("occurred_at",)``);
    callers prefix them with the event's position (API) or turn them into a line and
    column (CSV import).
    """

    def __init__(self, vocabulary: Vocabulary, *, now: datetime | None = None) -> None:
        self.vocabulary = vocabulary
        self.latest = (now or utcnow()) + FUTURE_TOLERANCE

    def check(self, raw: Any) -> EventRecord | list[FieldError]:
        """The checked event, or every problem with it."""
        if not isinstance(raw, Mapping):
            return [FieldError((), "each event must be an object with named fields",
                               "model_type")]
        type_key = raw.get("type", INTERACTION)
        model = _MODELS.get(type_key) if isinstance(type_key, str) else None
        if model is None:
            return [FieldError(("type",), f"type must be 'interaction' or 'conversion'; "
                               f"got {type_key!r}", "event_type")]
        # PostgreSQL cannot store NUL in text; no event field has a use for it.
        errors = [FieldError((name,), f"{name} cannot contain the NUL character (\\u0000)",
                             "nul_character")
                  for name, value in raw.items() if isinstance(value, str) and NUL in value]
        try:
            event = model.model_validate(raw)
        except ValidationError as error:
            for item in error.errors(include_url=False):
                loc = tuple(item["loc"])
                errors.append(FieldError(loc, _message(loc, item, type_key), item["type"]))
            event = None
        # Keys are checked even when other fields failed, so one pass names every problem.
        channel = raw.get("channel")
        channel_id = self._key_id("channel", channel, self.vocabulary.channel_ids, errors)
        stage_id = self._key_id("stage", raw.get("stage"), self.vocabulary.stage_ids, errors) \
            if model is InteractionIn else None
        if event is not None and event.occurred_at > self.latest:
            errors.append(FieldError(
                ("occurred_at",), f"occurred_at {event.occurred_at.isoformat()} is more than "
                f"a day in the future; check the sender's clock and timezone", "future"))
        if errors or event is None:
            return errors
        return self._record(event, channel_id, stage_id)

    def _key_id(self, name: str, key: Any, known: Mapping[str, int],
                errors: list[FieldError]) -> int | None:
        if not isinstance(key, str) or not key.strip():
            return None  # absent or mistyped: the model reports it if it matters
        key = key.strip()
        found = known.get(key)
        if found is None:
            listing = ", ".join(sorted(known)) or f"none: create a {name} first"
            errors.append(FieldError((name,), f"unknown {name} '{key}' (known: {listing})",
                                     "not_found"))
        return found

    def _record(self, event: InteractionIn | ConversionIn, channel_id: int | None,
                stage_id: int | None) -> EventRecord:
        if isinstance(event, InteractionIn):
            cost = event.cost_minor
            if cost is None and channel_id is not None and stage_id is not None:
                cost = self.vocabulary.costs.get((channel_id, stage_id))
            return EventRecord(
                type=INTERACTION, event_id=event.event_id,
                customer_external_id=event.customer_id, occurred_at=event.occurred_at,
                kind=event.kind.value, channel_key=event.channel, channel_id=channel_id,
                stage_id=stage_id, cost_minor=cost, revenue_minor=event.revenue_minor,
                margin_minor=None)
        return EventRecord(
            type=CONVERSION, event_id=event.event_id, customer_external_id=event.customer_id,
            occurred_at=event.occurred_at, kind=event.kind, channel_key=event.channel,
            channel_id=channel_id, stage_id=None, cost_minor=None,
            revenue_minor=event.revenue_minor, margin_minor=event.margin_minor)


def validate_batch(raw_events: Sequence[Any], *, vocabulary: Vocabulary,
                   now: datetime | None = None) -> list[EventRecord]:
    """Check a whole batch; raise :class:`ValidationFailed` naming every bad event and field.

    Locations are ``("events", index, field)``. An event id used twice in the batch is an
    error at the second use: the sender has two different events under one id.
    """
    validator = EventValidator(vocabulary, now=now)
    records: list[EventRecord] = []
    errors: list[FieldError] = []
    bad_events = 0
    first_use: dict[str, int] = {}
    for index, raw in enumerate(raw_events):
        checked = validator.check(raw)
        problems = [] if isinstance(checked, EventRecord) else checked
        event_id = raw.get("event_id") if isinstance(raw, Mapping) else None
        if isinstance(event_id, str) and event_id.strip():
            event_id = event_id.strip()
            if event_id in first_use:
                problems.append(FieldError(
                    ("event_id",), f"event_id '{event_id}' is used twice in this batch "
                    f"(first by event {first_use[event_id]})", "duplicate"))
            else:
                first_use[event_id] = index
        if problems:
            bad_events += 1
            errors.extend(FieldError(("events", index, *e.loc), e.msg, e.type)
                          for e in problems)
        elif isinstance(checked, EventRecord):
            records.append(checked)
    if errors:
        listed = errors[:MAX_LISTED_ERRORS]
        more = f"; the first {len(listed)} are listed" if len(errors) > len(listed) else ""
        raise ValidationFailed(
            f"the batch was rejected and nothing was recorded: {len(errors):,} problem(s) in "
            f"{bad_events:,} of {len(raw_events):,} event(s){more}", listed,
            code="invalid_events")
    return records


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class EventEffects:
    """What newly recorded events earned."""

    lottery_entries: int = 0
    points_awarded: int = 0
    trials_converted: int = 0

    def __add__(self, other: EventEffects) -> EventEffects:
        return EventEffects(self.lottery_entries + other.lottery_entries,
                            self.points_awarded + other.points_awarded,
                            self.trials_converted + other.trials_converted)


@dataclass(frozen=True)
class EventBatchResult:
    """``accepted`` new events, ``duplicates`` already recorded earlier, of ``batch_size``."""

    accepted: int
    duplicates: int
    batch_size: int
    effects: EventEffects = field(default_factory=EventEffects)

    def __add__(self, other: EventBatchResult) -> EventBatchResult:
        return EventBatchResult(
            self.accepted + other.accepted, self.duplicates + other.duplicates,
            self.batch_size + other.batch_size, self.effects + other.effects)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A newly inserted event and the customer's row id."""

    record: EventRecord
    customer_id: int


# --------------------------------------------------------------------------- bulk SQL
#
# A batch is written with a handful of statements whatever its size. On PostgreSQL a set
# of rows travels as one array per column, expanded by ``unnest`` (a 10,000-row multi-row
# VALUES or IN list spends most of its time in the driver's query parsing); on SQLite as
# multi-row VALUES pages (SQLAlchemy's insertmanyvalues), executemany and short IN lists.


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _array(values: Sequence[Any], type_: Any) -> Any:
    array_type = postgresql.ARRAY(type_)
    return cast(bindparam(None, list(values), type_=array_type, unique=True), array_type)


def _unnest(columns: Mapping[str, tuple[Any, Sequence[Any]]]) -> Any:
    """A derived table of rows from one array per column: ``{name: (type, values)}``."""
    arrays = [_array(values, type_) for type_, values in columns.values()]
    return func.unnest(*arrays).table_valued(*columns).render_derived()


def _in_batches(session: Session, column: Any, values: Sequence[Any]) -> Iterator[Any]:
    """Conditions ``column IN values``: one ``= ANY(array)`` on PostgreSQL, short lists else."""
    if not values:
        return
    if _is_postgresql(session):
        yield column == any_(_array(values, column.type))
    else:
        for chunk in _chunks(values):
            yield column.in_(chunk)


def _insert_new(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *,
                conflict_columns: Sequence[str], returning: Sequence[str]) -> list[Any]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: the rows the database actually inserted.

    Like :func:`campaigns.db.insert_ignore`, the unique key decides what is new, so two
    writers racing with the same rows cannot both count them.
    """
    if not rows:
        return []
    returned = [table.c[name] for name in returning]
    if not _is_postgresql(session):
        statement: Any = (sqlite.insert(table)
                          .on_conflict_do_nothing(index_elements=list(conflict_columns))
                          .returning(*returned))
        return list(session.execute(statement, list(rows)).all())
    names = list(rows[0])
    source = _unnest({name: (table.c[name].type, [row[name] for row in rows])
                      for name in names})
    statement = (postgresql.insert(table)
                 .from_select(names, select(*(source.c[name] for name in names)))
                 .on_conflict_do_nothing(index_elements=list(conflict_columns))
                 .returning(*returned))
    return list(session.execute(statement).all())


def _bulk_update(session: Session, table: Table, rows: Sequence[Mapping[str, Any]], *,
                 types: Mapping[str, Any], where: Callable[[Any], Sequence[Any]],
                 values: Callable[[Any], Mapping[str, Any]]) -> int:
    """One UPDATE per row of ``rows`` in effect, as one statement; returns rows changed.

    ``where`` and ``values`` build the statement from an object whose attributes are the
    row's fields (``row.customer_pk``): columns of an ``unnest`` on PostgreSQL (UPDATE ...
    FROM), bound parameters of an executemany on SQLite.
    """
    if not rows:
        return 0
    if _is_postgresql(session):
        source = _unnest({name: (type_, [row[name] for row in rows])
                          for name, type_ in types.items()}).c
        result: Any = session.execute(update(table).where(*where(source))
                                      .values(values(source)))
    else:
        params = SimpleNamespace(**{name: bindparam(name, type_=type_)
                                    for name, type_ in types.items()})
        result = session.execute(update(table).where(*where(params)).values(values(params)),
                                 list(rows))
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


def ensure_customers(session: Session, external_ids: Iterable[str], *,
                     now: datetime | None = None) -> dict[str, int]:
    """Row ids of these customers by external id, creating the unseen ones in one insert.

    The bulk form of :func:`campaigns.services.customers.get_or_create_customer`: new
    customers get the same defaults, and a concurrent first sighting is absorbed by the
    unique external id.
    """
    wanted = sorted(set(external_ids))
    found = _customer_ids(session, wanted)
    missing = [external_id for external_id in wanted if external_id not in found]
    if missing:
        defaults = {**CustomerAttributes().model_dump(), "points": 0,
                    "lifetime_value_minor": 0, "created_at": now or utcnow()}
        insert_ignore(session, Customer, [{"external_id": external_id, **defaults}
                                          for external_id in missing],
                      conflict_columns=["external_id"])
        found |= _customer_ids(session, missing)
    return found


def _customer_ids(session: Session, external_ids: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for condition in _in_batches(session, col(Customer.external_id), external_ids):
        found.update((external_id, id_) for external_id, id_ in session.exec(
            select(Customer.external_id, Customer.id).where(condition)) if id_ is not None)
    return found


def record_events(session: Session, *, events: Sequence[EventRecord],
                  snapshot: Snapshot | None, now: datetime | None = None) -> EventBatchResult:
    """Insert checked events once each, create unseen customers, apply the side effects.

    Events whose id is already recorded are counted as duplicates and have no effect.
    ``snapshot`` is the running campaigns' configuration (None: no lottery or loyalty
    effects, e.g. when there is nothing running). Only flushes; the caller commits.
    """
    now = now or utcnow()
    customer_ids = ensure_customers(
        session, (e.customer_external_id for e in events), now=now)
    interactions = sorted((e for e in events if e.type == INTERACTION),
                          key=lambda e: e.event_id)
    conversions = sorted((e for e in events if e.type == CONVERSION), key=lambda e: e.event_id)
    # Sorted by event id: concurrent overlapping batches take unique-index locks in one order.
    new_interactions = {row[0] for row in _insert_new(
        session, ChannelEvent.__table__,  # type: ignore[attr-defined]
        [{"client_event_id": e.event_id, "customer_id": customer_ids[e.customer_external_id],
          "channel_id": e.channel_id, "stage_id": e.stage_id, "kind": e.kind,
          "occurred_at": e.occurred_at, "cost_minor": e.cost_minor,
          "revenue_minor": e.revenue_minor} for e in interactions],
        conflict_columns=["client_event_id"], returning=["client_event_id"])}
    new_conversions = {row[0] for row in _insert_new(
        session, Conversion.__table__,  # type: ignore[attr-defined]
        [{"client_event_id": e.event_id, "customer_id": customer_ids[e.customer_external_id],
          "channel_id": e.channel_id, "kind": e.kind, "occurred_at": e.occurred_at,
          "revenue_minor": e.revenue_minor, "margin_minor": e.margin_minor}
         for e in conversions],
        conflict_columns=["client_event_id"], returning=["client_event_id"])}
    stored = [StoredEvent(e, customer_ids[e.customer_external_id]) for e in events
              if e.event_id in (new_interactions if e.type == INTERACTION else new_conversions)]
    effects = apply_event_effects(session, events=stored, snapshot=snapshot, now=now)
    return EventBatchResult(accepted=len(stored), duplicates=len(events) - len(stored),
                            batch_size=len(events), effects=effects)


def ingest_events(session: Session, *, raw_events: Sequence[Any], snapshot: Snapshot | None,
                  now: datetime | None = None) -> EventBatchResult:
    """Check a whole batch (nothing is written if any event is bad), then record it."""
    now = now or utcnow()
    records = validate_batch(raw_events, vocabulary=load_vocabulary(session), now=now)
    return record_events(session, events=records, snapshot=snapshot, now=now)


# --------------------------------------------------------------------------- side effects


@dataclass(frozen=True, slots=True)
class _Programme:
    """A lottery or loyalty arm of a running campaign."""

    campaign: CampaignConfig
    arm: ArmConfig
    rank: int  # position of the campaign in priority order

    @property
    def capped(self) -> bool:
        return (self.arm.incentive_type == _LOTTERY
                and self.arm.config.entry_rule.max_entries_per_customer is not None)


def _programmes(snapshot: Snapshot | None) -> dict[int, _Programme]:
    """Lottery and loyalty arms of running campaigns, by arm id."""
    if snapshot is None:
        return {}
    return {arm.id: _Programme(campaign, arm, rank)
            for rank, campaign in enumerate(snapshot.campaigns) for arm in campaign.arms
            if arm.incentive_type in (_LOTTERY, _LOYALTY) and arm.incentive_id is not None}


def _memberships(session: Session, programmes: Mapping[int, _Programme],
                 customer_ids: Sequence[int]) -> dict[int, list[tuple[_Programme, datetime]]]:
    """(programme, first exposure) of each customer's assignments, highest priority first.

    When a lottery runs the assignment rows are locked (PostgreSQL), in one order: reading
    the entries a customer holds and adding new ones must not interleave with another
    batch or a redemption for the same customer, or both could fill the last places under
    the cap; and the entry counts updated later are then rows this batch already holds.
    """
    lock = any(p.arm.incentive_type == _LOTTERY for p in programmes.values())
    result: dict[int, list[tuple[_Programme, datetime]]] = defaultdict(list)
    for condition in _in_batches(session, col(Assignment.customer_id), sorted(customer_ids)):
        statement = (select(Assignment.customer_id, Assignment.arm_id,
                            Assignment.first_exposed_at)
                     .where(col(Assignment.arm_id).in_(list(programmes)), condition)
                     .order_by(col(Assignment.campaign_id), col(Assignment.customer_id)))
        if lock:
            statement = statement.with_for_update(key_share=True)  # FOR NO KEY UPDATE
        for customer_id, arm_id, exposed_at in session.exec(statement):
            result[customer_id].append((programmes[arm_id], exposed_at))
    for memberships in result.values():
        memberships.sort(key=lambda m: m[0].rank)
    return result


def _in_campaign(event: EventRecord, programme: _Programme, exposed_at: datetime) -> bool:
    ends_at = programme.campaign.ends_at
    return event.occurred_at >= exposed_at and (ends_at is None or event.occurred_at < ends_at)


def lottery_entries_for(arm: ArmConfig, event: EventRecord) -> int:
    """Entries one event earns under a lottery arm's entry rule (0 if it does not qualify).

    ``interaction`` rules count plain interactions (not complaints, churn or acquisition);
    ``conversion`` rules count every conversion; ``redemption`` rules are earned when an
    offer is redeemed, never by a reported event.
    """
    rule = arm.config.entry_rule
    if rule.event != event.type or (event.type == INTERACTION
                                    and event.kind != EventKind.INTERACTION.value):
        return 0
    context = OrderContext(order_amount_minor=event.revenue_minor, channel_key=event.channel_key)
    try:
        get_incentive_type(_LOTTERY).compute_benefit(arm.config, context)
    except ValidationFailed:  # wrong channel or below the minimum amount
        return 0
    entries = rule.entries_per_event
    assert isinstance(entries, int)
    return entries


def points_for(programme_arm: ArmConfig, campaign: CampaignConfig, event: EventRecord) -> int:
    """Loyalty points an event with revenue earns (the multiplier on the goal's target channel)."""
    if not event.revenue_minor:
        return 0
    context = OrderContext(order_amount_minor=event.revenue_minor, channel_key=event.channel_key,
                           target_channel_key=campaign.target_channel_key)
    benefit = get_incentive_type(_LOYALTY).compute_benefit(programme_arm.config, context)
    points = benefit.details["points"]
    assert isinstance(points, int)
    return points


def apply_event_effects(session: Session, *, events: Sequence[StoredEvent],
                        snapshot: Snapshot | None, now: datetime | None = None) -> EventEffects:
    """Lottery entries, loyalty points and trial conversions earned by newly stored events."""
    now = now or utcnow()
    if not events:
        return EventEffects()
    trials = _convert_trials(session, events)
    programmes = _programmes(snapshot)
    if not programmes:
        return EventEffects(trials_converted=trials)
    members = _memberships(session, programmes, sorted({e.customer_id for e in events}))
    entries: list[tuple[_Programme, StoredEvent, int]] = []
    points: list[tuple[_Programme, StoredEvent, int]] = []
    for event in sorted(events, key=lambda e: e.record.occurred_at):
        earned_points = False
        for programme, exposed_at in members.get(event.customer_id, ()):
            if not _in_campaign(event.record, programme, exposed_at):
                continue
            if programme.arm.incentive_type == _LOTTERY:
                count = lottery_entries_for(programme.arm, event.record)
                if count:
                    entries.append((programme, event, count))
            elif not earned_points:
                # One ledger row per event and customer (the ledger's unique source_ref):
                # the highest-priority loyalty campaign the customer is in awards it.
                amount = points_for(programme.arm, programme.campaign, event.record)
                if amount:
                    points.append((programme, event, amount))
                    earned_points = True
    return EventEffects(
        lottery_entries=_grant_entries(session, entries, now=now),
        points_awarded=_award_points(session, points, now=now),
        trials_converted=trials,
    )


def _earlier_entries(session: Session, pairs: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """Live entries already held, by (campaign id, customer id): the assignment's count,
    which every entry source changes on the row :func:`_memberships` locked."""
    held: dict[tuple[int, int], int] = {}
    campaigns = sorted({campaign for campaign, _ in pairs})
    customers = sorted({customer for _, customer in pairs})
    for condition in _in_batches(session, col(Assignment.customer_id), customers):
        rows = session.exec(
            select(Assignment.campaign_id, Assignment.customer_id, Assignment.lottery_entries)
            .where(col(Assignment.campaign_id).in_(campaigns), condition))
        held.update(((campaign, customer), int(total)) for campaign, customer, total in rows)
    return held


def _grant_entries(session: Session, earned: Sequence[tuple[_Programme, StoredEvent, int]], *,
                   now: datetime) -> int:
    """Insert lottery entries up to each customer's cap; returns entries granted."""
    if not earned:
        return 0
    capped = {(p.campaign.id, e.customer_id) for p, e, _ in earned if p.capped}
    held = _earlier_entries(session, capped) if capped else {}
    rows = []
    for programme, event, count in earned:
        key = (programme.campaign.id, event.customer_id)
        cap = programme.arm.config.entry_rule.max_entries_per_customer
        grant = count if cap is None else min(count, cap - held.get(key, 0))
        if grant <= 0:
            continue
        held[key] = held.get(key, 0) + grant
        rows.append({"campaign_id": programme.campaign.id,
                     "incentive_id": programme.arm.incentive_id,
                     "customer_id": event.customer_id, "entries": grant,
                     "source_ref": f"event:{event.record.event_id}", "created_at": now})
    inserted = _insert_new(session, LotteryEntry.__table__,  # type: ignore[attr-defined]
                           rows, conflict_columns=["campaign_id", "source_ref"],
                           returning=["campaign_id", "customer_id", "entries"])
    totals: dict[tuple[int, int], int] = defaultdict(int)
    for campaign_id, customer_id, entries in inserted:
        totals[(campaign_id, customer_id)] += entries
    assignments: Table = Assignment.__table__  # type: ignore[attr-defined]
    # The count the caps compare with (redemptions check it on the same row).
    _bulk_update(session, assignments,
                 [{"campaign_pk": campaign_id, "customer_pk": customer_id, "earned": earned}
                  for (campaign_id, customer_id), earned in sorted(totals.items())],
                 types={"campaign_pk": assignments.c.campaign_id.type,
                        "customer_pk": assignments.c.customer_id.type,
                        "earned": assignments.c.lottery_entries.type},
                 where=lambda row: [assignments.c.campaign_id == row.campaign_pk,
                                    assignments.c.customer_id == row.customer_pk],
                 values=lambda row: {
                     "lottery_entries": assignments.c.lottery_entries + row.earned})
    return sum(totals.values())


def _award_points(session: Session, earned: Sequence[tuple[_Programme, StoredEvent, int]], *,
                  now: datetime) -> int:
    """Append ledger rows, add what was inserted to each balance, then update tiers."""
    if not earned:
        return 0
    rows = [{"customer_id": event.customer_id, "campaign_id": programme.campaign.id,
             "delta": amount, "reason": _points_reason(event.record, programme),
             "source_ref": f"event:{event.record.event_id}", "created_at": now}
            for programme, event, amount in earned]
    inserted = _insert_new(session, PointsLedger.__table__,  # type: ignore[attr-defined]
                           rows, conflict_columns=["customer_id", "source_ref"],
                           returning=["customer_id", "delta"])
    totals: dict[int, int] = defaultdict(int)
    for customer_id, delta in inserted:
        totals[customer_id] += delta
    if not totals:
        return 0
    customers: Table = Customer.__table__  # type: ignore[attr-defined]
    ids = sorted(totals)
    if _is_postgresql(session):
        # Lock the balances in id order first: two batches touching the same customers
        # then queue behind each other instead of deadlocking. NO KEY UPDATE, the lock
        # the UPDATE itself takes: a plain FOR UPDATE would conflict with the KEY SHARE
        # locks that inserting this batch's events (foreign keys to customer) already holds
        # in the other batch, which is a deadlock.
        session.execute(select(customers.c.id).where(customers.c.id == any_(
            _array(ids, customers.c.id.type))).order_by(customers.c.id)
            .with_for_update(key_share=True))  # renders FOR NO KEY UPDATE
    # points = points + x in the database, never a balance computed in Python: concurrent
    # batches for one customer each add their own share (the row lock orders them).
    _bulk_update(session, customers,
                 [{"customer_pk": customer_id, "earned": totals[customer_id]}
                  for customer_id in ids],
                 types={"customer_pk": customers.c.id.type, "earned": customers.c.points.type},
                 where=lambda row: [customers.c.id == row.customer_pk],
                 values=lambda row: {"points": customers.c.points + row.earned})
    configs = {event.customer_id: programme.arm.config
               for programme, event, _ in sorted(earned, key=lambda item: -item[0].rank)}
    _update_tiers(session, {customer_id: configs[customer_id] for customer_id in totals})
    return sum(totals.values())


def _points_reason(event: EventRecord, programme: _Programme) -> str:
    where = f" on {event.channel_key}" if event.channel_key else ""
    return f"{event.type} '{event.kind}'{where} in campaign {programme.campaign.name}"[:200]


def _update_tiers(session: Session, configs: Mapping[int, Any]) -> None:
    """Set each customer's loyalty tier from the balance now in the database."""
    customers: Table = Customer.__table__  # type: ignore[attr-defined]
    changes = []
    for condition in _in_batches(session, customers.c.id, sorted(configs)):
        for customer_id, balance, tier in session.execute(
                select(customers.c.id, customers.c.points, customers.c.loyalty_tier)
                .where(condition)):
            new_tier = tier_for_points(configs[customer_id], balance)
            if new_tier != tier:
                changes.append({"customer_pk": customer_id, "tier": new_tier})
    _bulk_update(session, customers, sorted(changes, key=lambda row: row["customer_pk"]),
                 types={"customer_pk": customers.c.id.type,
                        "tier": customers.c.loyalty_tier.type},
                 where=lambda row: [customers.c.id == row.customer_pk],
                 values=lambda row: {"loyalty_tier": row.tier})


def _convert_trials(session: Session, events: Sequence[StoredEvent]) -> int:
    """Mark the customer's running or past trials converted at the first trial_to_paid.

    ``converted_at IS NULL`` in the UPDATE keeps the first conversion: a later one (in
    this batch or another) finds nothing left to change.
    """
    first: dict[int, datetime] = {}
    for event in events:
        record = event.record
        if record.type == CONVERSION and record.kind == TRIAL_TO_PAID:
            known = first.get(event.customer_id)
            if known is None or record.occurred_at < known:
                first[event.customer_id] = record.occurred_at
    if not first:
        return 0
    trials: Table = TrialGrant.__table__  # type: ignore[attr-defined]
    return _bulk_update(
        session, trials,
        [{"customer_pk": customer_id, "at": at} for customer_id, at in sorted(first.items())],
        types={"customer_pk": trials.c.customer_id.type, "at": UTCDateTime()},
        where=lambda row: [trials.c.customer_id == row.customer_pk,
                           trials.c.converted_at.is_(None), trials.c.starts_at <= row.at],
        values=lambda row: {"converted_at": row.at})

