"""The report page names every live metric by the registry's label (analytics.metrics)."""

from __future__ import annotations

from html import unescape

from sqlmodel import Session

from analytics.metrics import METRICS, metric_label
from campaigns.models import Campaign, Role
from tests.builders import make_running_campaign
from tests.web.ui.test_report_pages import expose


def test_every_metric_row_shows_the_registry_label(session: Session, as_role) -> None:
    campaign: Campaign = make_running_campaign(session)
    expose(session, campaign, "control", customers=120, adopters=30, prefix="C")
    expose(session, campaign, "ten percent", customers=130, adopters=50, prefix="T")
    html = unescape(as_role(Role.VIEWER).get(f"/campaigns/{campaign.id}/report").text)
    results = html[html.index('id="results-title"'):html.index('id="segments-title"')]
    for key, metric in METRICS.items():
        assert metric.label in results, key
        if metric.pre_period:
            assert metric_label(f"{key}_cuped") in results, key
