"""GET /api/v1/channels/economics and `channelshift economics`: scopes, formats, errors."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from analytics import queries
from analytics.economics import channel_overview, export_overview
from campaigns.models import Channel, ChannelEvent, Conversion, Customer, Stage
from campaigns.services.apikeys import create_api_key, revoke_api_key
from campaigns.services.channels import set_channel_cost
from tests.builders import ACTOR, make_goal
from tests.web.api.conftest import bearer
from web import cli

URL = "/api/v1/channels/economics"
T0 = datetime(2026, 3, 2, tzinfo=UTC)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def world(session: Session) -> None:
    """Two customers: a call-centre caller and a web shopper, one acquired on the web."""
    make_goal(session, sources=("call_centre",), target="web")
    for channel, stage, cost in (("call_centre", "after_sale", 700), ("web", "after_sale", 20),
                                 ("web", "purchase", 25)):
        set_channel_cost(session, actor=ACTOR, cost={"channel": channel, "stage": stage,
                                                     "cost_minor": cost})
    channel = dict(session.exec(select(Channel.key, Channel.id)).all())
    stage = dict(session.exec(select(Stage.key, Stage.id)).all())
    caller = Customer(external_id="caller", preferred_channel="call_centre",
                      value_tier="gold", lifetime_value_minor=9_000,
                      created_at=T0 - timedelta(days=90))
    shopper = Customer(external_id="shopper", preferred_channel="web", value_tier="bronze",
                       lifetime_value_minor=1_000, created_at=T0)
    session.add_all([caller, shopper])
    session.flush()
    events = [(caller, "call_centre", "after_sale", "interaction", 1, None),
              (caller, "call_centre", "after_sale", "interaction", 2, 650),
              (caller, "web", "after_sale", "interaction", 40, None),
              (shopper, "web", "purchase", "interaction", 3, None),
              (shopper, "web", "purchase", "acquisition", 0, None)]
    for number, (who, key, stage_key, kind, day, cost) in enumerate(events):
        session.add(ChannelEvent(client_event_id=f"api-e{number}", customer_id=who.id,
                                 channel_id=channel[key], stage_id=stage[stage_key], kind=kind,
                                 occurred_at=T0 + timedelta(days=day), cost_minor=cost))
    session.add(Conversion(client_event_id="api-cv1", customer_id=shopper.id,
                           channel_id=channel["web"], occurred_at=T0 + timedelta(days=3),
                           revenue_minor=4_000, margin_minor=None))
    session.flush()


class TestScopes:
    def test_anonymous(self, client: TestClient) -> None:
        response = client.get(URL)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"

    def test_storefront_key(self, client: TestClient, storefront_key: dict[str, str]) -> None:
        response = client.get(URL, headers=storefront_key)
        assert response.status_code == 403
        assert response.json()["code"] == "wrong_scope"
        assert "analytics or management" in response.json()["message"]

    @pytest.mark.parametrize("scope", ["analytics", "management"])
    def test_readers(self, client: TestClient, session: Session, scope: str) -> None:
        key = bearer(create_api_key(session, name=scope, scope=scope, actor="test").secret)
        response = client.get(URL, headers=key)
        assert response.status_code == 200, response.text
        assert response.json()["channel_stages"] == []

    def test_revoked_key(self, client: TestClient, session: Session) -> None:
        created = create_api_key(session, name="old", scope="analytics", actor="test")
        assert created.api_key.id is not None
        revoke_api_key(session, api_key_id=created.api_key.id, actor="test")
        response = client.get(URL, headers=bearer(created.secret))
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_api_key"

    def test_channel_routes_still_answer(self, client: TestClient, session: Session,
                                         management_key: dict[str, str],
                                         world: None) -> None:
        """The economics path is not taken for a channel key, nor the reverse."""
        assert client.get("/api/v1/channels/web", headers=management_key).json()["key"] == \
            "web"
        assert "channel_stages" in client.get(URL, headers=management_key).json()


class TestFormats:
    def test_json_is_the_overview(self, client: TestClient, session: Session,
                                  analytics_key: dict[str, str], world: None) -> None:
        response = client.get(URL, headers=analytics_key,
                              params={"since": "2026-03-02", "until": "2026-03-12T00:00:00Z"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        expected = channel_overview(session.connection(), since=T0,
                                    until=T0 + timedelta(days=10)).as_dict()
        assert body == json.loads(json.dumps(expected))
        assert body["since"] == "2026-03-02T00:00:00Z"
        stages = {(r["channel"], r["stage"]): r for r in body["channel_stages"]}
        call = stages[("call_centre", "after_sale")]
        assert (call["interactions"], call["cost_to_serve_minor"],
                call["cost_per_interaction_minor"]) == (2, 700 + 650, 700)
        assert stages[("web", "after_sale")]["interactions"] == 0  # day 40 is outside
        web = next(r for r in body["channels"] if r["channel"] == "web")
        assert (web["revenue_minor"], web["margin_minor"],
                web["margin_imputed_conversions"]) == (4_000, 4_000, 1)
        assert body["acquisition"] == [{"channel": "web", "channel_name": "Web",
                                        "acquisitions": 1, "customers": 1, "cost_minor": 25,
                                        "cost_per_customer_minor": 25.0}]
        preferred = {r["channel"]: r for r in body["preferred_channels"]}
        assert preferred["call_centre"]["value_tiers"] == {"gold": 1}
        assert preferred["call_centre"]["average_lifetime_value_minor"] == 9_000.0

    def test_whole_history_by_default(self, client: TestClient,
                                      analytics_key: dict[str, str], world: None) -> None:
        body = client.get(URL, headers=analytics_key).json()
        assert body["since"] is None and body["until"] is None
        stages = {(r["channel"], r["stage"]): r for r in body["channel_stages"]}
        assert stages[("web", "after_sale")]["interactions"] == 1

    def test_csv(self, client: TestClient, session: Session,
                 analytics_key: dict[str, str], world: None) -> None:
        response = client.get(URL, headers=analytics_key, params={"format": "csv"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.headers["content-disposition"] == \
            'attachment; filename="channel-economics.csv"'
        rows = list(csv.DictReader(io.StringIO(response.text)))
        records = channel_overview(session.connection()).records()
        assert [(r["section"], r["channel"], r["stage"], r["metric"]) for r in rows] == [
            (r["section"], r["channel"] or "", r["stage"] or "", r["metric"]) for r in records]
        assert {"section": "channel_stage", "channel": "call_centre", "stage": "after_sale",
                "metric": "cost_to_serve_minor", "value": "1350"} in rows

    def test_xlsx(self, client: TestClient, analytics_key: dict[str, str],
                  world: None) -> None:
        response = client.get(URL, headers=analytics_key, params={"format": "xlsx"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == XLSX
        assert response.headers["content-disposition"].endswith('channel-economics.xlsx"')
        workbook = openpyxl.load_workbook(io.BytesIO(response.content))
        assert workbook.sheetnames == ["channel_stage", "channel", "preferred_channel",
                                       "acquisition", "records"]
        acquisition = list(workbook["acquisition"].iter_rows(values_only=True))
        assert acquisition[1] == ("web", "Web", 1, 1, 25, 25)


class TestErrors:
    def errors(self, client: TestClient, key: dict[str, str], **params: str) -> list[Any]:
        response = client.get(URL, headers=key, params=params)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_failed"
        return response.json()["errors"]

    def test_not_a_date(self, client: TestClient, analytics_key: dict[str, str]) -> None:
        [error] = self.errors(client, analytics_key, since="yesterday")
        assert error["loc"] == ["query", "since"]
        assert "since must be a date (2026-01-31) or a time with a timezone" in error["msg"]

    def test_impossible_date(self, client: TestClient, analytics_key: dict[str, str]) -> None:
        [error] = self.errors(client, analytics_key, until="2026-02-30")
        assert error["loc"] == ["query", "until"]

    def test_naive_time(self, client: TestClient, analytics_key: dict[str, str]) -> None:
        [error] = self.errors(client, analytics_key, since="2026-01-31T09:00:00")
        assert error["loc"] == ["query", "since"]
        assert "needs a timezone" in error["msg"]

    def test_both_bad_are_named(self, client: TestClient,
                                analytics_key: dict[str, str]) -> None:
        errors = self.errors(client, analytics_key, since="soon", until="later")
        assert [e["loc"] for e in errors] == [["query", "since"], ["query", "until"]]

    @pytest.mark.parametrize("until", ["2026-03-01", "2026-03-01T00:00:00+00:00"])
    def test_period_ends_before_it_starts(self, client: TestClient,
                                          analytics_key: dict[str, str], until: str) -> None:
        [error] = self.errors(client, analytics_key, since="2026-03-01", until=until)
        assert error["loc"] == ["query", "until"]
        assert error["msg"] == "until must be later than since"

    def test_unknown_format(self, client: TestClient, analytics_key: dict[str, str]) -> None:
        [error] = self.errors(client, analytics_key, format="pdf")
        assert error["loc"] == ["query", "format"]

    def test_documented(self, client: TestClient) -> None:
        operation = client.get("/openapi.json").json()["paths"][URL]["get"]
        assert operation["summary"]
        assert {"200", "401", "403", "422"} <= set(operation["responses"])
        content = operation["responses"]["200"]["content"]
        assert content["application/json"]["example"]["channel_stages"]
        assert "text/csv; charset=utf-8" in content and XLSX in content
        parameters = {p["name"] for p in operation["parameters"]}
        assert parameters == {"since", "until", "format"}


# --------------------------------------------------------------------------- CLI


class SessionEngine:
    """The test engine, except that connections are the test's own (rolled back) one."""

    def __init__(self, engine: Engine, session: Session) -> None:
        self._engine = engine
        self._connection = session.connection()

    def connect(self) -> Any:
        return nullcontext(self._connection)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


@pytest.fixture
def run_cli(engine: Engine, session: Session, world: None,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(cli, "get_engine", lambda: SessionEngine(engine, session))
    # The command reads in a view of its own; here, the test's (rolled back) transaction.
    monkeypatch.setattr(queries, "report_view", lambda _engine: nullcontext(session.connection()))
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli.app, ["economics", *args], env={"COLUMNS": "300"})

    yield run


class TestCli:
    def test_csv_by_default(self, run_cli: Any, session: Session, tmp_path: Path) -> None:
        target = tmp_path / "economics.out"
        result = run_cli("--out", str(target))
        assert result.exit_code == 0, result.output
        assert "wrote the csv channel economics" in result.output
        assert target.read_bytes() == export_overview(channel_overview(session.connection()),
                                                      "csv")

    def test_format_from_extension_and_period(self, run_cli: Any, session: Session,
                                              tmp_path: Path) -> None:
        target = tmp_path / "economics.json"
        result = run_cli("--out", str(target), "--since", "2026-03-02",
                         "--until", "2026-03-12T00:00:00Z")
        assert result.exit_code == 0, result.output
        body = json.loads(target.read_text())
        assert (body["since"], body["until"]) == ("2026-03-02T00:00:00Z",
                                                  "2026-03-12T00:00:00Z")
        xlsx = tmp_path / "workbook.bin"
        assert run_cli("--format", "xlsx", "--out", str(xlsx)).exit_code == 0
        assert openpyxl.load_workbook(io.BytesIO(xlsx.read_bytes())).sheetnames[-1] == \
            "records"

    @pytest.mark.parametrize(("args", "message"), [
        (("--format", "pdf"), "unknown format 'pdf': use one of csv, json, xlsx"),
        (("--since", "yesterday"), "--since must be a date"),
        (("--since", "2026-03-02", "--until", "2026-03-01"), "must be later than since"),
    ])
    def test_errors(self, run_cli: Any, tmp_path: Path, args: tuple[str, ...],
                    message: str) -> None:
        target = tmp_path / "economics.csv"
        result = run_cli(*args, "--out", str(target))
        assert result.exit_code == 1
        assert message in result.output
        assert not target.exists()
