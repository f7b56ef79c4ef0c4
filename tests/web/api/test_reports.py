"""GET /api/v1/campaigns/{id}/report: scopes, formats, media types, errors, OpenAPI."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import openpyxl
import pandas as pd
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlmodel import Session

from analytics.exports import RECORD_COLUMNS, to_json
from analytics.report import build_report
from analytics.reports import campaign_results
from seeds.demo import ENDED_CAMPAIGN, DemoSummary
from tests.analytics.test_report import (
    make_skewed_campaign,
    rolled_back_connection,
    savepoint_session,
    seed_demo,
)

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture(scope="module")
def world(engine: Engine) -> Iterator[Connection]:
    with rolled_back_connection(engine) as connection:
        yield connection


@pytest.fixture(scope="module")
def demo(world: Connection) -> DemoSummary:
    return seed_demo(world)


@pytest.fixture
def session(world: Connection) -> Iterator[Session]:
    """Overrides the suite's session: the app's requests run in a savepoint of the world."""
    with savepoint_session(world) as session:
        yield session


def url(campaign_id: int, **query: str) -> str:
    suffix = "&".join(f"{key}={value}" for key, value in query.items())
    return f"/api/v1/campaigns/{campaign_id}/report" + (f"?{suffix}" if suffix else "")


class TestAccess:
    def test_anonymous(self, client) -> None:
        response = client.get(url(1))
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"

    def test_storefront_key(self, client, storefront_key) -> None:
        response = client.get(url(1), headers=storefront_key)
        assert response.status_code == 403
        assert response.json()["code"] == "wrong_scope"

    def test_management_key(self, client, management_key) -> None:
        assert client.get(url(1), headers=management_key).status_code == 403

    def test_unknown_campaign(self, client, analytics_key) -> None:
        response = client.get(url(987654, format="html"), headers=analytics_key)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "campaign_not_found"
        assert response.json()["message"] == "campaign 987654 does not exist"

    @pytest.mark.parametrize(("query", "field"), [
        ({"alpha": "0"}, "alpha"), ({"alpha": "0.9"}, "alpha"), ({"alpha": "x"}, "alpha"),
        ({"format": "pdf"}, "format"), ({"segment": "shoe_size"}, "segment"),
        ({"qini_score": "propensity"}, "qini_score"),
        ({"qini_score": "propensity", "qini_metric": "revenue"}, "qini_metric"),
        ({"qini_metric": "conversion"}, "qini_metric"),
        ({"cap_revenue": "99x"}, "cap_revenue"),
        ({"cap_revenue": "100p"}, "cap_revenue"), ({"cap_cost_to_serve": "-5"},
                                                   "cap_cost_to_serve"),
        ({"cap_incentive_cost": "lots"}, "cap_incentive_cost"), ({"cuped_days": "0"},
                                                                  "cuped_days"),
        ({"cuped_days": "x"}, "cuped_days")])
    def test_invalid_query(self, client, analytics_key, session, query, field) -> None:
        campaign = make_skewed_campaign(session, control=3, treatment=3)
        response = client.get(url(campaign.id, **query), headers=analytics_key)
        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "validation_failed"
        assert body["errors"][0]["loc"] == ["query", field]


class TestFormats:
    def test_sample_ratio_mismatch(self, client, analytics_key, session) -> None:
        campaign = make_skewed_campaign(session)
        response = client.get(url(campaign.id, format="html"), headers=analytics_key)
        assert response.status_code == 200
        assert 'class="banner danger"' in response.text
        assert "SAMPLE RATIO MISMATCH" in response.text
        assert client.get(url(campaign.id), headers=analytics_key).json()["srm"]["flagged"]


@pytest.mark.slow
class TestDemoFormats:
    def test_json_by_default(self, client, analytics_key, session, demo) -> None:
        response = client.get(url(demo.ended_campaign_id, alpha="0.1"), headers=analytics_key)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert re.fullmatch(rf'inline; filename="campaign-{demo.ended_campaign_id}'
                            r'-report-\d{8}\.json"', response.headers["content-disposition"])
        body = response.json()
        expected = to_json(build_report(session.connection(), demo.ended_campaign_id,
                                        alpha=0.1, segment="value_tier"))
        assert body.pop("generated_at") and expected.pop("generated_at")
        assert body == expected
        assert body["alpha"] == 0.1 and body["campaign"]["name"] == ENDED_CAMPAIGN

    @pytest.mark.parametrize(("export_format", "media_type"), [
        ("csv", "text/csv; charset=utf-8"), ("xlsx", XLSX),
        ("html", "text/html; charset=utf-8")])
    def test_downloads(self, client, analytics_key, session, demo, export_format,
                       media_type) -> None:
        response = client.get(url(demo.ended_campaign_id, format=export_format),
                              headers=analytics_key)
        assert response.status_code == 200
        assert response.headers["content-type"] == media_type
        assert response.headers["content-disposition"].startswith(
            f'attachment; filename="campaign-{demo.ended_campaign_id}-report-')
        assert response.headers["content-disposition"].endswith(f'.{export_format}"')
        arms = {r["arm"]: r["n"] for r in campaign_results(session.connection(),
                                                           demo.ended_campaign_id).arms}
        if export_format == "csv":
            frame = pd.read_csv(io.BytesIO(response.content))
            assert list(frame.columns) == list(RECORD_COLUMNS)
            n = frame[frame.statistic == "n"].set_index("arm").value
            assert {arm: int(n[arm]) for arm in arms} == arms
            assert "srm_p_value" in set(frame.statistic)
        elif export_format == "xlsx":
            book = openpyxl.load_workbook(io.BytesIO(response.content))
            assert book.sheetnames == ["summary", "metrics", "segments", "economics",
                                       "diagnostics"]
        else:
            assert "<svg" in response.text and "Sample ratio check" in response.text
            assert all(f"{n:,}" in response.text for n in arms.values())


class TestOpenApi:
    def test_documented(self, client) -> None:
        schema = client.get("/openapi.json").json()
        operation = schema["paths"]["/api/v1/campaigns/{campaign_id}/report"]["get"]
        assert operation["summary"]
        parameters = {p["name"]: p for p in operation["parameters"]}
        assert set(parameters) == {"campaign_id", "format", "alpha", "segment", "qini_score",
                                   "correction", "baseline", "qini_metric", "cap_revenue",
                                   "cap_cost_to_serve", "cap_incentive_cost", "cuped_days"}
        content = operation["responses"]["200"]["content"]
        assert {"application/json", "text/csv", XLSX, "text/html"} <= set(content)
        assert json.dumps(content["application/json"]["example"])
        assert {"401", "403", "404", "422"} <= set(operation["responses"])
        assert operation["responses"]["403"]["content"]["application/json"]["example"][
            "code"] == "wrong_scope"
