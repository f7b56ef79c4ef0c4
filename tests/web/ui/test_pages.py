"""The dashboard and what every page sends: headline statistics checked independently,
times in the user's zone, security headers and no inline script anywhere."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from sqlmodel import Session, select
from statsmodels.stats.proportion import confint_proportions_2indep

from analytics.stats import Comparison
from campaigns.models import Arm, Assignment, Campaign, ChannelEvent, Customer, Role, Stage
from campaigns.services.channels import channel_by_key
from tests.builders import make_campaign, make_running_campaign
from tests.web.ui.conftest import make_user, sign_in
from tests.web.ui.test_access import ui_routes
from web.api.docs import STATIC_DIR
from web.ui.headline import Verdict, verdict
from web.ui.permissions import PUBLIC
from web.ui.rendering import CONTENT_SECURITY_POLICY

EXPOSED_AT = datetime.now(UTC) - timedelta(days=10)


def expose(session: Session, campaign: Campaign, arm_name: str, *, customers: int,
           adopters: int, prefix: str) -> None:
    """``customers`` exposed in ``arm_name``; the first ``adopters`` use the web afterwards."""
    arm = session.exec(select(Arm).where(Arm.campaign_id == campaign.id,
                                         Arm.name == arm_name)).one()
    web = channel_by_key(session, "web")
    call_centre = channel_by_key(session, "call_centre")
    stage = session.exec(select(Stage).where(Stage.key == "after_sale")).one()
    for i in range(customers):
        customer = Customer(external_id=f"{prefix}{i}")
        session.add(customer)
        session.flush()
        session.add(Assignment(campaign_id=campaign.id, customer_id=customer.id,
                               arm_id=arm.id, first_exposed_at=EXPOSED_AT))
        channel = web if i < adopters else call_centre
        session.add(ChannelEvent(client_event_id=f"{prefix}{i}", customer_id=customer.id,
                                 channel_id=channel.id, stage_id=stage.id,
                                 occurred_at=EXPOSED_AT + timedelta(days=1)))
    session.flush()


def headline_row(html: str, arm: str) -> str:
    match = re.search(rf'<th scope="row">{re.escape(arm)}</th>(.*?)</tr>', html, re.S)
    assert match, html
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))))


class TestVerdict:
    @pytest.mark.parametrize(("low", "high", "expected"), [
        (0.01, 0.05, Verdict.CREDIBLE_LIFT), (-0.05, -0.001, Verdict.HARM),
        (-0.01, 0.02, Verdict.NO_EFFECT), (None, None, Verdict.TOO_EARLY)])
    def test_reads_the_interval(self, low, high, expected) -> None:
        comparison = Comparison(method="z", alpha=0.05, control_n=10, treatment_n=10,
                                diff_ci_low=low, diff_ci_high=high)
        assert verdict(comparison) == expected


class TestHeadline:
    @pytest.mark.parametrize(("control", "treatment", "expected"), [
        ((40, 8), (50, 20), Verdict.CREDIBLE_LIFT),
        ((40, 20), (50, 9), Verdict.HARM),
        ((40, 10), (50, 13), Verdict.NO_EFFECT)])
    def test_lift_and_interval_match_statsmodels(self, session, admin, control, treatment,
                                                 expected) -> None:
        campaign = make_running_campaign(session)
        expose(session, campaign, "control", customers=control[0], adopters=control[1],
               prefix="C")
        expose(session, campaign, "ten percent", customers=treatment[0],
               adopters=treatment[1], prefix="T")
        html = admin.get(f"/dashboard/campaigns/{campaign.id}/headline").text
        low, high = confint_proportions_2indep(
            treatment[1], treatment[0], control[1], control[0], method="wald",
            compare="diff", alpha=0.05)
        diff = treatment[1] / treatment[0] - control[1] / control[0]
        row = headline_row(html, "ten percent")
        assert f"{diff * 100:+.1f} pp" in row
        assert f"{low * 100:+.1f} pp to {high * 100:+.1f} pp" in row
        assert f"{treatment[1] / treatment[0] * 100:.1f}% vs " \
               f"{control[1] / control[0] * 100:.1f}%" in row
        assert expected.value in row
        assert "Sample ratio mismatch" not in html

    def test_sample_ratio_mismatch_is_flagged(self, session, admin) -> None:
        campaign = make_running_campaign(session)
        expose(session, campaign, "control", customers=20, adopters=4, prefix="C")
        expose(session, campaign, "ten percent", customers=200, adopters=50, prefix="T")
        html = admin.get(f"/dashboard/campaigns/{campaign.id}/headline").text
        assert "Sample ratio mismatch" in html

    def test_dashboard_loads_headlines_only_where_customers_were_exposed(self, session,
                                                                         admin) -> None:
        running = make_running_campaign(session, name="Live one", budget_minor=50_000)
        running.spent_minor = 12_345
        session.add(running)
        draft = make_campaign(session, name="Not yet")
        expose(session, running, "control", customers=5, adopters=1, prefix="C")
        html = admin.get("/").text
        running_section = html.split('id="status-running"')[1].split("</section>")[0]
        assert "Live one" in running_section and "Not yet" not in running_section
        assert "Not yet" in html.split('id="status-draft"')[1]
        assert f'hx-get="/dashboard/campaigns/{running.id}/headline"' in html
        assert f"/dashboard/campaigns/{draft.id}/headline" not in html
        assert "Spent €123.45 of €500.00 (25%)" in " ".join(html.split())
        assert 'max="50000"' in html and 'value="12345"' in html

    def test_times_in_the_users_zone(self, session, new_client) -> None:
        make_user(session, role=Role.VIEWER, username="paris", timezone="Europe/Paris")
        make_campaign(session, name="Winter", starts_at=datetime(2027, 1, 5, 8, 0, tzinfo=UTC),
                      ends_at=datetime(2027, 7, 5, 8, 0, tzinfo=UTC))
        html = sign_in(new_client(), "paris").get("/").text
        assert '<time datetime="2027-01-05T08:00:00+00:00">2027-01-05 09:00 CET</time>' in html
        assert '<time datetime="2027-07-05T08:00:00+00:00">2027-07-05 10:00 CEST</time>' in html
        assert "Times are shown in Europe/Paris." in html


class TestEveryPage:
    @pytest.fixture
    def pages(self, session, ui_app) -> list[str]:
        campaign = make_running_campaign(session)
        expose(session, campaign, "control", customers=6, adopters=2, prefix="C")
        expose(session, campaign, "ten percent", customers=6, adopters=3, prefix="T")
        from campaigns.services.apikeys import create_api_key
        key = create_api_key(session, name="shop", scope="storefront", actor="test")
        params = {"key": "web", "api_key_id": str(key.api_key.id),
                  "campaign_id": str(campaign.id)}
        return [route.path.format(**params) for route in ui_routes(ui_app)
                if "GET" in route.methods and route.permission is not PUBLIC]

    def test_security_headers_and_no_inline_code(self, admin, new_client, pages) -> None:
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY
        responses = [admin.get(path) for path in pages] + [new_client().get("/login")]
        for response in responses:
            assert response.status_code == 200, response.url
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-store"
            if response.headers.get("content-disposition", "").startswith("attachment"):
                continue  # a download (CSV, XLSX, the self-contained HTML report), not a page
            html = response.text
            for script in re.findall(r"<script\b[^>]*>", html):
                assert " src=" in script, (response.url, script)
            assert all(not body.strip() for body in re.findall(
                r"<script\b[^>]*>(.*?)</script>", html, re.S)), response.url
            assert not re.search(r"\son[a-z]+\s*=", html), response.url
            assert not re.search(r"\sstyle\s*=", html), response.url
            assert "<style" not in html
            assert "cdn" not in html.lower()

    def test_every_input_has_a_label(self, admin, pages) -> None:
        for path in pages:
            response = admin.get(path)
            if response.headers.get("content-disposition", "").startswith("attachment"):
                continue  # a download, not a page
            html = response.text
            labels = set(re.findall(r'<label for="([^"]+)"', html))
            for tag, element_id in re.findall(
                    r'<(input|select|textarea)\b(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', html):
                assert element_id in labels, (path, tag, element_id)
            if html.startswith("<!doctype html>"):  # a full page, not an htmx fragment
                assert '<a class="skip-link" href="#main">' in html

    def test_assets_are_served_locally_with_versions(self, admin) -> None:
        html = admin.get("/channels").text
        urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
        assert any("/vendor/htmx.org-" in url for url in urls)
        assert any(re.search(r"/css/app\.css\?v=[0-9a-f]{12}$", url) for url in urls)
        for url in urls:
            response = admin.get(url)
            assert response.status_code == 200, url
        assert (STATIC_DIR / "js" / "app.mjs").exists()


class TestProblems:
    def test_unexpected_error_is_a_logged_500_page(self, admin, monkeypatch, caplog) -> None:
        from web.ui.pages import dashboard

        def broken(session):
            raise RuntimeError("boom")

        monkeypatch.setattr(dashboard, "campaign_cards", broken)
        response = admin.get("/", headers={"X-Request-ID": "req-12345678"})
        assert response.status_code == 500
        assert "Something went wrong" in response.text and "req-12345678" in response.text
        assert "boom" not in response.text
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert any("unhandled error in a UI page" in r.message for r in caplog.records)

    def test_malformed_path_is_a_400_page(self, admin) -> None:
        response = admin.get("/api-keys/abc/revoke")
        assert response.status_code == 400
        assert "<h1>Bad request</h1>" in response.text
