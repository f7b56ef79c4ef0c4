"""Customers: found by external id, created on first sight with the attributes given."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field
from sqlmodel import Session, select

from campaigns.db import insert_ignore
from campaigns.errors import FieldError, NotFound
from campaigns.models import Customer
from campaigns.schemas import InputModel
from campaigns.validation import parse_input

ExternalId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:@-]+$")]


class CustomerAttributes(InputModel):
    """Attributes a storefront may send for a customer ChannelShift has not seen yet."""

    segment: Annotated[str, Field(max_length=40)] | None = None
    value_tier: Annotated[str, Field(pattern=r"^(bronze|silver|gold|platinum)$")] | None = None
    loyalty_tier: Annotated[str, Field(max_length=40)] | None = None
    preferred_channel: Annotated[str, Field(max_length=40)] | None = None
    region: Annotated[str, Field(max_length=40)] | None = None
    age_band: Annotated[str, Field(max_length=20)] | None = None
    tenure_months: Annotated[int, Field(ge=0, le=2400)] = 0
    is_new: bool = False
    attributes: dict[str, str | int | bool] = Field(default_factory=dict)


def customer_by_external_id(session: Session, external_id: str, *,
                            field: str = "customer_id") -> Customer:
    customer = session.exec(select(Customer).where(Customer.external_id == external_id)).first()
    if customer is None:
        raise unknown_customer(external_id, field=field)
    return customer


def unknown_customer(external_id: str, *, field: str = "customer_id") -> NotFound:
    return NotFound(f"customer '{external_id}' is unknown",
                    [FieldError((field,), f"unknown customer '{external_id}'", "not_found")],
                    code="customer_not_found")


def get_or_create_customer(
    session: Session, *, external_id: str,
    attributes: CustomerAttributes | Mapping[str, Any] | None = None,
) -> Customer:
    """The customer with this external id; created with ``attributes`` if unseen.

    Concurrent first sightings are safe: the insert ignores a unique-key conflict and the
    row is read back, so exactly one customer exists whoever wins.
    """
    existing = session.exec(select(Customer).where(Customer.external_id == external_id)).first()
    if existing is not None:
        return existing
    data = parse_input(CustomerAttributes, attributes or {}, what="customer attributes")
    insert_ignore(session, Customer, [{"external_id": external_id, **data.model_dump(),
                                       "points": 0, "lifetime_value_minor": 0}],
                  conflict_columns=["external_id"])
    return customer_by_external_id(session, external_id)


def customer_attributes(customer: Customer) -> dict[str, object]:
    """The mapping eligibility rules are evaluated on (see campaigns.rules)."""
    return {
        "segment": customer.segment,
        "value_tier": customer.value_tier,
        "loyalty_tier": customer.loyalty_tier,
        "preferred_channel": customer.preferred_channel,
        "region": customer.region,
        "age_band": customer.age_band,
        "tenure_months": customer.tenure_months,
        "points": customer.points,
        "lifetime_value": customer.lifetime_value_minor,
        "is_new": customer.is_new,
        "attributes": customer.attributes or {},
    }
