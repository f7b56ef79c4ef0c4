"""Response shapes of the management API (and the few request shapes only it uses).

Each ``XPublic`` is what the API returns for an X; table rows are never returned as
they are. Money is integer minor units, times are UTC with an offset, ``target_uplift``
is a decimal string so no float rounding creeps in. Every model carries an example that
the OpenAPI document shows.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from campaigns.models import CampaignStatus
from campaigns.schemas import InputModel
from campaigns.services.inputs import MAX_ID as MAX_ID  # the largest id a path may name

T = TypeVar("T")

_NOW = "2026-03-01T09:00:00Z"


def _example(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


class Page(BaseModel, Generic[T]):
    """One page of a list: ``items`` from ``offset`` on, ``total`` rows in all."""

    items: list[T]
    total: int = Field(description="Rows matching the query, ignoring limit and offset.")


# --- channels ---------------------------------------------------------------------------

CHANNEL_EXAMPLE = {"id": 3, "key": "web", "name": "Web shop", "kind": "web", "active": True,
                   "created_at": _NOW}


class ChannelPublic(BaseModel):
    model_config = _example(CHANNEL_EXAMPLE)

    id: int
    key: str
    name: str
    kind: str
    active: bool
    created_at: datetime


STAGE_EXAMPLE = {"id": 3, "key": "after_sale", "name": "After-sale", "position": 3}


class StagePublic(BaseModel):
    model_config = _example(STAGE_EXAMPLE)

    id: int
    key: str
    name: str
    position: int


CHANNEL_COST_EXAMPLE = {"channel": "call_centre", "stage": "after_sale", "cost_minor": 650,
                        "currency": "EUR", "updated_at": _NOW}


class ChannelCostPublic(BaseModel):
    """The cost to serve one interaction on ``channel`` at ``stage``."""

    model_config = _example(CHANNEL_COST_EXAMPLE)

    channel: str
    stage: str
    cost_minor: int
    currency: str
    updated_at: datetime


# --- goals ------------------------------------------------------------------------------

GOAL_EXAMPLE = {
    "id": 1, "name": "After-sale self-service on the web",
    "description": "Move service queries from the call centre to the web.",
    "stage": "after_sale", "source_channels": ["call_centre", "ivr"], "target_channel": "web",
    "metric": "adoption", "window_days": 30, "target_uplift": "0.0500",
    "eligibility_rule": "value_tier != 'platinum'", "created_at": _NOW,
}


class GoalPublic(BaseModel):
    model_config = _example(GOAL_EXAMPLE)

    id: int
    name: str
    description: str
    stage: str = Field(description="Stage key.")
    source_channels: list[str] = Field(description="Keys of the channels to move away from.")
    target_channel: str = Field(description="Key of the channel to move customers to.")
    metric: str
    window_days: int
    target_uplift: Decimal = Field(description="Absolute uplift aimed for, as a fraction.")
    eligibility_rule: str | None = Field(description="Who may be pushed, as rule text.")
    created_at: datetime


# --- incentives -------------------------------------------------------------------------

OFFER_EXAMPLE = {"title": "10% off with a code",
                 "description": "10% off your order with your personal code.",
                 "terms": "The code can be used once. Expires 30 days after it is issued.",
                 "needs_code": True}


class OfferSummary(BaseModel):
    """The offer as a storefront would show it."""

    model_config = _example(OFFER_EXAMPLE)

    title: str
    description: str
    terms: str
    needs_code: bool


INCENTIVE_EXAMPLE = {
    "id": 7, "name": "10% web coupon", "type": "coupon", "type_label": "coupon",
    "config": {"mode": "batch", "prefix": "WEB-", "length": 10,
               "charset": "ABCDEFGHJKMNPQRSTUVWXYZ23456789", "single_use": True,
               "benefit": {"kind": "percent", "percent_bp": 1000, "cap_minor": 2000,
                           "amount_minor": None, "min_order_minor": None},
               "expires_days": 30, "code": None, "max_redemptions": None},
    "summary": OFFER_EXAMPLE, "unit_cost_estimate_minor": 0, "created_at": _NOW,
}


class IncentivePublic(BaseModel):
    model_config = _example(INCENTIVE_EXAMPLE)

    id: int
    name: str
    type: str
    type_label: str
    config: dict[str, Any] = Field(description="The normalized configuration of the type.")
    summary: OfferSummary | None = Field(
        description="What a customer is offered; null if the stored configuration no longer "
        "validates.")
    unit_cost_estimate_minor: int | None = Field(
        description="Expected cost of one redemption without an order amount.")
    created_at: datetime


class IncentiveTypePublic(BaseModel):
    model_config = _example({
        "key": "percent_discount", "label": "percent discount",
        "config_schema": {"title": "PercentDiscountConfig", "type": "object",
                          "properties": {"percent_bp": {"type": "integer"}},
                          "required": ["percent_bp"]}})

    key: str
    label: str
    config_schema: dict[str, Any] = Field(description="JSON schema of the type's `config`.")


# --- campaigns --------------------------------------------------------------------------

ARM_EXAMPLE = {"id": 12, "name": "web coupon", "weight": 50, "is_control": False,
               "position": 1, "incentive_id": 7,
               "incentive": {"id": 7, "name": "10% web coupon", "type": "coupon",
                             **OFFER_EXAMPLE}}


class IncentiveBrief(BaseModel):
    """An arm's incentive in a campaign view: what it is and what it offers."""

    id: int
    name: str
    type: str
    title: str | None
    description: str | None
    terms: str | None
    needs_code: bool


class ArmPublic(BaseModel):
    model_config = _example(ARM_EXAMPLE)

    id: int
    name: str
    weight: int = Field(description="Share of new customers in the current allocation period.")
    is_control: bool
    position: int
    incentive_id: int | None
    incentive: IncentiveBrief | None


CAMPAIGN_EXAMPLE = {
    "id": 4, "name": "Spring self-service push", "description": "", "goal_id": 1,
    "origin": "live", "status": "draft", "starts_at": "2026-04-01T00:00:00Z",
    "ends_at": "2026-05-01T00:00:00Z",
    "budget_minor": 500000, "spent_minor": 0, "remaining_budget_minor": 500000,
    "currency": "EUR", "per_customer_limit": 1, "stacking": "exclusive", "priority": 10,
    "allocation_period": 1, "control_opt_out": False, "control_opt_out_reason": None,
    "eligibility_rule": None, "pause_reason": None,
    "guardrails": ["complaints", "churn", "revenue"], "config_version": 3,
    "created_at": _NOW, "updated_at": _NOW,
    "arms": [{"id": 11, "name": "control", "weight": 50, "is_control": True, "position": 0,
              "incentive_id": None, "incentive": None}, ARM_EXAMPLE],
}


class CampaignPublic(BaseModel):
    model_config = _example(CAMPAIGN_EXAMPLE)

    id: int
    name: str
    description: str
    goal_id: int | None = Field(description="Null only for an imported experiment.")
    origin: str = Field(description="'live' (run here) or 'imported' (a finished experiment "
                        "loaded for its report).")
    status: str
    starts_at: datetime | None
    ends_at: datetime | None
    budget_minor: int | None = Field(description="Null means no budget is set.")
    spent_minor: int
    remaining_budget_minor: int | None
    currency: str
    per_customer_limit: int | None
    stacking: str
    priority: int
    allocation_period: int = Field(
        description="Bumped when weights change after customers were exposed.")
    control_opt_out: bool
    control_opt_out_reason: str | None
    eligibility_rule: str | None
    pause_reason: str | None
    guardrails: list[str] = Field(description="Guardrail metrics the sequential monitor "
                                  "watches; significant harm pauses the campaign.")
    config_version: int
    created_at: datetime
    updated_at: datetime
    arms: list[ArmPublic]


class AuditEntryPublic(BaseModel):
    model_config = _example({
        "id": 40, "at": _NOW, "actor": "api_key:2:ops", "action": "campaign.weights",
        "entity_type": "campaign", "entity_id": 4,
        "details": {"before": {"control": 50, "web coupon": 50},
                    "after": {"control": 20, "web coupon": 80}, "allocation_period": 2,
                    "new_period": True}})

    id: int
    at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: int | None
    details: dict[str, Any]


class TransitionRequest(InputModel):
    """Move a campaign to another status of its lifecycle."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, json_schema_extra={
        "examples": [{"to": "paused", "reason": "complaints rising in the call centre"}]})

    to: CampaignStatus
    reason: Annotated[str, Field(max_length=500)] | None = None


# --- coupon batches ---------------------------------------------------------------------


class CouponBatchCreate(InputModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"count": 50000}]})

    count: Annotated[int, Field(ge=1, le=1_000_000, description="Codes to generate.")]


class CouponBatchPublic(BaseModel):
    model_config = _example({"generated": 50000, "total_codes": 150000})

    generated: int = Field(description="New codes written by this request.")
    total_codes: int = Field(description="Codes the arm's coupon now has in the campaign.")


# --- errors -----------------------------------------------------------------------------

class FieldErrorPublic(BaseModel):
    loc: list[str | int] = Field(description="Path to the field, e.g. [\"body\", \"count\"].")
    msg: str
    type: str


class ErrorPublic(BaseModel):
    """The body of every error response."""

    code: str = Field(description="Stable machine-readable code, e.g. campaign_not_found.")
    message: str
    errors: list[FieldErrorPublic] = Field(default_factory=list,
                                           description="At most 20 problems.")
    more_errors: int | None = Field(default=None, description="Problems found beyond those "
                                    "listed in `errors`; absent when all are listed.")
    request_id: str | None = None


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                "required": True, "schema": {"type": "string"}}}

#: status -> (description, example body, headers) of the errors the API answers with.
ERROR_EXAMPLES: dict[int, tuple[str, dict[str, Any], dict[str, Any]]] = {
    400: ("The body could not be read as text (it is not UTF-8)", {
        "code": "http_error", "message": "There was an error parsing the body", "errors": []},
        {}),
    401: ("No API key, or an unknown or revoked one", {
        "code": "unauthenticated", "message": "send an API key as 'Authorization: Bearer <key>'",
        "errors": []}, {}),
    403: ("An API key of another scope", {
        "code": "wrong_scope", "message": "this route needs a management key; this key has "
        "scope storefront", "errors": []}, {}),
    404: ("The id or key in the path (or a record the request names) does not exist", {
        "code": "campaign_not_found", "message": "campaign 42 does not exist", "errors": []},
        {}),
    409: ("Valid, but the current state does not allow it (duplicate, wrong status, spent)", {
        "code": "invalid_transition",
        "message": "the campaign cannot become scheduled: set a budget above zero",
        "errors": [{"loc": ["budget_minor"], "msg": "set a budget above zero",
                    "type": "missing"}]}, {}),
    408: ("The body did not arrive within the server's deadline", {
        "code": "request_timeout", "message": "the request body did not arrive within 10 s",
        "errors": []}, {}),
    413: ("The body is larger than this route's limit (8 KiB for a single item, 256 KiB "
          "for configuration, 16 MiB for an events batch), or the shape of an events batch "
          "is not one of events", {
              "code": "payload_too_large", "message": "the request body is larger than 8 KiB "
              "(8192 bytes), the most this route takes", "errors": []}, {}),
    422: ("Invalid input; `errors` names each bad field by its `loc`", {
        "code": "validation_failed", "message": "invalid request: body.count",
        "errors": [{"loc": ["body", "count"],
                    "msg": "Input should be less than or equal to 1000000",
                    "type": "less_than_equal"}]}, {}),
    429: ("Too many requests; wait as long as Retry-After says", {
        "code": "rate_limited", "message": "too many failed code validations; try later",
        "errors": []}, _RETRY_AFTER),
    503: ("The database is unavailable (or not yet migrated), or the request collided with "
          "concurrent ones and was undone (code `concurrency_conflict`); retry after "
          "Retry-After seconds",
          {"code": "database_unavailable", "message": "the database is unavailable right now; "
           "try again in a few seconds", "errors": []}, _RETRY_AFTER),
}


def error_responses(*statuses: int, body: bool = False,
                    descriptions: dict[int, str] | None = None
                    ) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for an authenticated route: 401, 403, 422, 503 and ``statuses``.

    Each documents the error body the API really sends (:class:`ErrorPublic`), not
    FastAPI's default shape. ``body=True`` adds what a route that reads a JSON body can
    answer before looking at it: 400 (not UTF-8 text) and 413 (too large).
    ``descriptions`` replaces the generic description of a status.
    """
    wanted = {401, 403, 422, 503, *statuses, *((400, 408, 413) if body else ())}
    documented: dict[int | str, dict[str, Any]] = {}
    for status in sorted(wanted):
        description, example, headers = ERROR_EXAMPLES[status]
        documented[status] = {
            "model": ErrorPublic,
            "description": (descriptions or {}).get(status, description),
            "content": {"application/json": {"example": example}},
            **({"headers": headers} if headers else {}),
        }
    return documented


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` references inlined (for openapi_extra)."""
    definitions = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(definitions[ref.rsplit("/", 1)[-1]])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


# --- links ------------------------------------------------------------------------------

#: What a client can do next with what an operation made: (path, method, status) of the
#: operation -> link name -> (path and method of the next operation, its parameters as
#: OpenAPI runtime expressions). Added to the document by :func:`with_links`.
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("/api/v1/campaigns", "post", "201"): {
        "GetCampaign": ("/api/v1/campaigns/{campaign_id}", "get",
                        {"campaign_id": "$response.body#/id"}),
        "UpdateCampaign": ("/api/v1/campaigns/{campaign_id}", "patch",
                           {"campaign_id": "$response.body#/id"}),
        "TransitionCampaign": ("/api/v1/campaigns/{campaign_id}/transitions", "post",
                               {"campaign_id": "$response.body#/id"}),
        "AddArm": ("/api/v1/campaigns/{campaign_id}/arms", "post",
                   {"campaign_id": "$response.body#/id"}),
        "SetWeights": ("/api/v1/campaigns/{campaign_id}/weights", "put",
                       {"campaign_id": "$response.body#/id"}),
        "CampaignAudit": ("/api/v1/campaigns/{campaign_id}/audit", "get",
                          {"campaign_id": "$response.body#/id"}),
        "DeleteCampaign": ("/api/v1/campaigns/{campaign_id}", "delete",
                           {"campaign_id": "$response.body#/id"}),
    },
    ("/api/v1/redemptions", "post", "201"): {
        "RollBackRedemption": ("/api/v1/redemptions/{redemption_id}/rollback", "post",
                               {"redemption_id": "$response.body#/redemption_id"}),
    },
    ("/api/v1/channels", "post", "201"): {
        "GetChannel": ("/api/v1/channels/{key}", "get", {"key": "$response.body#/key"}),
        "UpdateChannel": ("/api/v1/channels/{key}", "patch", {"key": "$response.body#/key"}),
    },
    ("/api/v1/goals", "post", "201"): {
        "GetGoal": ("/api/v1/goals/{goal_id}", "get", {"goal_id": "$response.body#/id"}),
    },
    ("/api/v1/incentives", "post", "201"): {
        "GetIncentive": ("/api/v1/incentives/{incentive_id}", "get",
                         {"incentive_id": "$response.body#/id"}),
    },
    ("/api/v1/campaigns/{campaign_id}/draws", "post", "201"): {
        "GetDraw": ("/api/v1/campaigns/{campaign_id}/draws/{draw_id}", "get",
                    {"campaign_id": "$response.body#/campaign_id",
                     "draw_id": "$response.body#/draw_id"}),
        "VerifyDraw": ("/api/v1/campaigns/{campaign_id}/draws/{draw_id}/verify", "post",
                       {"campaign_id": "$response.body#/campaign_id",
                        "draw_id": "$response.body#/draw_id"}),
    },
}


def with_links(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (an OpenAPI document) with :data:`LINKS` on the responses they start
    from, each naming its next operation by ``operationId``."""
    paths = document.get("paths", {})
    for (path, method, status), links in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        response["links"] = {
            name: {"operationId": paths[target][target_method]["operationId"],
                   "parameters": parameters}
            for name, (target, target_method, parameters) in links.items()
            if target_method in paths.get(target, {})}
    return document
