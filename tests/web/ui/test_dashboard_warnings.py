"""The dashboard warns about guardrails: harm seen now, and why a campaign was paused."""

from __future__ import annotations

from sqlmodel import Session

from campaigns.services.campaigns import transition
from tests.analytics.test_guardrails import harmful_plans, populate
from tests.builders import make_running_campaign


def test_harmful_guardrail_is_shown_in_the_headline(session: Session, admin) -> None:
    campaign = make_running_campaign(session, name="noisy discount")
    populate(session, campaign, plans=harmful_plans())
    session.flush()
    page = admin.get(f"/dashboard/campaigns/{campaign.id}/headline")
    assert page.status_code == 200
    assert "Guardrail:" in page.text
    assert "complaints per customer in arm &#39;ten percent&#39;" in page.text


def test_harmless_campaign_has_no_guardrail_warning(session: Session, admin) -> None:
    campaign = make_running_campaign(session, name="quiet discount")
    populate(session, campaign)
    session.flush()
    page = admin.get(f"/dashboard/campaigns/{campaign.id}/headline")
    assert page.status_code == 200
    assert "Guardrail:" not in page.text


def test_pause_reason_is_on_the_card(session: Session, admin) -> None:
    campaign = make_running_campaign(session, name="paused by the monitor")
    transition(session, campaign=campaign, target="paused", actor="guardrails",
               reason="guardrail harmed: complaints in arm 'ten percent'")
    session.flush()
    page = admin.get("/")
    assert "Paused:" in page.text
    assert "guardrail harmed: complaints in arm &#39;ten percent&#39;" in page.text
