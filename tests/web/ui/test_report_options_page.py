"""The report page's analysis options (money caps, CUPED pre-period) and its power table."""

from __future__ import annotations

import re
from html import unescape

import pytest
from sqlmodel import Session

from campaigns.models import Campaign, Role
from tests.builders import make_running_campaign
from tests.web.ui.test_report_pages import expose, text
from web.ui.pages.reports import ReportOptions, campaign_report, report_options


@pytest.fixture
def experiment(session: Session) -> Campaign:
    """A running campaign: control 40 of 200 adopted the web, treatment 80 of 220."""
    campaign = make_running_campaign(session)
    expose(session, campaign, "control", customers=200, adopters=40, prefix="C")
    expose(session, campaign, "ten percent", customers=220, adopters=80, prefix="T")
    return campaign


class TestReportOptionsForm:
    def test_the_form_offers_the_options_and_keeps_them(self, session: Session,
                                                        experiment: Campaign,
                                                        as_role) -> None:
        url = f"/campaigns/{experiment.id}/report?cap_cost_to_serve=50p&cuped_days=7"
        response = as_role(Role.ANALYST).get(url)
        assert response.status_code == 200
        html = response.text
        for name in ("cap_revenue", "cap_cost_to_serve", "cap_incentive_cost", "cuped_days"):
            assert f'name="{name}"' in html
        assert re.search(r'name="cap_cost_to_serve"[^>]*value="50p"', html)
        # the downloads and the refresh carry the options
        assert "report.csv?segment=value_tier&amp;cap_cost_to_serve=50p&amp;cuped_days=7" in html
        expected = campaign_report(session.connection(), experiment.id, segment="value_tier",
                                   options=report_options({"cap_cost_to_serve": "50p",
                                                           "cuped_days": "7"}))
        page = text(html)
        for statement in expected.methods:
            if statement.startswith(("Outliers", "Power after the fact")) or "CUPED" in statement:
                assert unescape(statement) in page, statement
        assert "Power" in page and "Detectable difference" in page

    def test_a_bad_option_is_named_and_left_out(self, experiment: Campaign,
                                                as_role) -> None:
        response = as_role(Role.VIEWER).get(
            f"/campaigns/{experiment.id}/report?cap_revenue=lots&cuped_days=9999")
        assert response.status_code == 422
        page = text(response.text)
        assert "cap revenue: cannot read 'lots' as a cap" in page
        assert "cuped days: the CUPED pre-period must be a whole number of days" in page
        assert "Outliers" not in page  # the report was built without them
        assert 'aria-invalid="true"' in response.text

    def test_report_options_parse(self) -> None:
        options = report_options({"cap_revenue": " 99p ", "cap_cost_to_serve": "",
                                  "cuped_days": "14"})
        assert set(options.caps) == {"revenue"} and options.cuped_days == 14
        assert options.errors == {} and options.given == {"cap_revenue": "99p",
                                                          "cuped_days": "14"}
        assert ReportOptions().caps == {}
