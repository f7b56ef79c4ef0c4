"""POST /api/v1/events: batches of channel events and conversions."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from campaigns.models import ChannelEvent, Conversion, Customer, LotteryEntry, PointsLedger
from campaigns.services.events import MAX_BATCH_EVENTS
from tests.campaigns.test_events import (
    assign,
    balance,
    conversion,
    count,
    entries,
    interaction,
    lottery_arm,
    loyalty_arm,
    running_campaign,
    world,
)
from web.api.events import MAX_BODY_BYTES

URL = "/api/v1/events"


def post(client: TestClient, key: dict[str, str], events: list[dict[str, Any]]) -> Any:
    return client.post(URL, json={"events": events}, headers=key)


def stored(session: Session) -> tuple[int, int, int]:
    return count(session, ChannelEvent), count(session, Conversion), count(session, Customer)


class TestAuth:
    def test_anonymous(self, client: TestClient) -> None:
        response = client.post(URL, json={"events": [interaction()]})
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"

    def test_wrong_scope(self, client: TestClient, session: Session,
                         management_key: dict[str, str]) -> None:
        world(session)
        response = post(client, management_key, [interaction()])
        assert response.status_code == 403
        assert response.json()["code"] == "wrong_scope"
        assert stored(session) == (0, 0, 0)


class TestAcceptedBatch:
    def test_accepted(self, client: TestClient, session: Session,
                      storefront_key: dict[str, str]) -> None:
        world(session)
        response = post(client, storefront_key, [
            interaction("i1"), interaction("i2", customer="C2", kind="complaint"),
            conversion("c1", channel="web", margin_minor=300)])
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 3, "duplicates": 0, "batch_size": 3}
        assert stored(session) == (2, 1, 2)
        cost = session.exec(select(ChannelEvent.cost_minor)
                            .where(ChannelEvent.client_event_id == "i1")).one()
        assert cost == 40  # the channel's cost at the stage

    def test_largest_batch(self, client: TestClient, session: Session,
                           storefront_key: dict[str, str]) -> None:
        world(session)
        events = [interaction(f"e{n}", customer=f"C{n % 500}") for n in range(MAX_BATCH_EVENTS)]
        response = post(client, storefront_key, events)
        assert response.json() == {"accepted": MAX_BATCH_EVENTS, "duplicates": 0,
                                   "batch_size": MAX_BATCH_EVENTS}
        assert stored(session) == (MAX_BATCH_EVENTS, 0, 500)


class TestRetriedBatch:
    def test_retry_counted_once(self, client: TestClient, session: Session,
                                storefront_key: dict[str, str]) -> None:
        world(session)
        batch = [interaction("i1"), conversion("c1")]
        assert post(client, storefront_key, batch).json()["accepted"] == 2
        again = post(client, storefront_key, batch)
        assert again.json() == {"accepted": 0, "duplicates": 2, "batch_size": 2}
        assert stored(session) == (1, 1, 1)

    def test_partly_known_batch(self, client: TestClient, session: Session,
                                storefront_key: dict[str, str]) -> None:
        world(session)
        post(client, storefront_key, [interaction("i1")])
        response = post(client, storefront_key, [interaction("i1"), interaction("i2")])
        assert response.json() == {"accepted": 1, "duplicates": 1, "batch_size": 2}


class TestBadRows:
    @pytest.mark.parametrize(("event", "field", "words"), [
        pytest.param(interaction("bad", channel="fax"), "channel", "unknown channel 'fax'",
                     id="unknown_channel"),
        pytest.param(interaction("bad", stage="after_life"), "stage", "unknown stage",
                     id="unknown_stage"),
        pytest.param(interaction("bad", occurred_at="2026-01-31T09:00:00"), "occurred_at",
                     "timezone", id="naive_datetime"),
        pytest.param({k: v for k, v in interaction("bad").items() if k != "stage"}, "stage",
                     "stage is required", id="missing_field"),
        pytest.param(conversion("bad", revenue_minor=19.99), "revenue_minor", "whole number",
                     id="float_money"),
        pytest.param(interaction("ok"), "event_id", "used twice in this batch",
                     id="duplicate_event_id"),
        pytest.param(interaction("bad", occurred_at="2099-01-01T00:00:00Z"), "occurred_at",
                     "in the future", id="far_future"),
    ])
    def test_bad_row_named_and_nothing_written(
            self, client: TestClient, session: Session, storefront_key: dict[str, str],
            event: dict[str, Any], field: str, words: str) -> None:
        world(session)
        response = post(client, storefront_key,
                        [interaction("ok", customer="NEW1"), event,
                         conversion("c1", customer="NEW2")])
        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "invalid_events"
        assert [e["loc"] for e in body["errors"]] == [["events", 1, field]]
        assert words in body["errors"][0]["msg"]
        assert stored(session) == (0, 0, 0)

    @pytest.mark.parametrize(("content", "loc"), [
        pytest.param(b"{not json", ["body"], id="not_json"),
        pytest.param(b"[]", ["body"], id="not_an_object"),
        pytest.param(b"{}", ["events"], id="no_events"),
        pytest.param(b'{"events": []}', ["events"], id="empty_batch"),
        pytest.param(b'{"events": {}}', ["events"], id="events_not_a_list"),
        pytest.param(b'{"events": [], "extra": 1}', ["extra"], id="unknown_field"),
    ])
    def test_malformed_body(self, client: TestClient, storefront_key: dict[str, str],
                            content: bytes, loc: list[str]) -> None:
        response = client.post(URL, content=content,
                               headers={**storefront_key, "content-type": "application/json"})
        assert response.status_code == 422
        assert loc in [e["loc"] for e in response.json()["errors"]]


class TestTooLarge:
    def test_more_than_ten_thousand_events(self, client: TestClient, session: Session,
                                           storefront_key: dict[str, str]) -> None:
        world(session)
        events = [interaction(f"e{n}") for n in range(MAX_BATCH_EVENTS + 1)]
        response = post(client, storefront_key, events)
        assert response.status_code == 413
        body = response.json()
        assert body["code"] == "too_many_events"
        assert "at most 10,000 events" in body["message"] and "10,001" in body["message"]
        assert stored(session) == (0, 0, 0)

    def test_body_over_the_limit(self, client: TestClient, storefront_key: dict[str, str]
                                 ) -> None:
        filler = "x" * (MAX_BODY_BYTES + 10)
        response = client.post(URL, content=f'{{"events": [], "pad": "{filler}"}}',
                               headers={**storefront_key, "content-type": "application/json"})
        # Refused by the app-wide body limit before the body is read (a text/plain answer).
        assert response.status_code == 413

    def test_streamed_body_over_the_limit(self, client: TestClient,
                                          storefront_key: dict[str, str]) -> None:
        def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
            for _ in range(17):
                yield b" " * (1024 * 1024)

        response = client.post(URL, content=chunks(),
                               headers={**storefront_key, "content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"


class TestSideEffects:
    def test_lottery_entries_earned_and_capped(self, client: TestClient, session: Session,
                                               storefront_key: dict[str, str]) -> None:
        campaign = running_campaign(session, arm=lottery_arm(entries_per_event=2,
                                                             max_entries_per_customer=3))
        assign(session, campaign)
        response = post(client, storefront_key, [conversion("c1"), conversion("c2"),
                                                 conversion("c3")])
        assert response.status_code == 200, response.text
        assert entries(session, campaign) == [2, 1]
        post(client, storefront_key, [conversion("c4")])
        assert entries(session, campaign) == [2, 1]
        refs = set(session.exec(select(LotteryEntry.source_ref)).all())
        assert refs == {"event:c1", "event:c2"}

    def test_loyalty_points_with_and_without_multiplier(
            self, client: TestClient, session: Session, storefront_key: dict[str, str]) -> None:
        campaign = running_campaign(session, arm=loyalty_arm(multiplier_bp=30000))
        assign(session, campaign)
        post(client, storefront_key, [conversion("c1", revenue_minor=2000, channel="app")])
        assert balance(session) == (200, "bronze")
        post(client, storefront_key, [conversion("c2", revenue_minor=2000, channel="web")])
        assert balance(session) == (200 + 600, "bronze")
        post(client, storefront_key, [conversion("c2", revenue_minor=2000, channel="web"),
                                      interaction("i1", revenue_minor=1000)])
        assert balance(session) == (800 + 300, "silver")
        assert count(session, PointsLedger) == 3
