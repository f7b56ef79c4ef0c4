"""Forms: values kept and each message next to its field when validation fails; all or nothing."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from sqlmodel import Session, select

from campaigns.models import ApiKey, Channel, ChannelCost, MigrationGoal, Role, User
from campaigns.security import hash_api_key
from campaigns.services.channels import cost_table, ensure_default_stages
from tests.builders import make_channel
from tests.web.ui.conftest import csrf_token
from web.ui.forms import FormState, format_money, parse_money, parse_percentage_points


def field_error(html: str, name: str) -> str | None:
    """The message printed for field ``name`` (tied to it by id), or None."""
    match = re.search(rf'<p class="field-error" id="f-{re.escape(name)}-error">'
                      r'<span class="visually-hidden">Error:</span> ([^<]*)</p>', html)
    return match.group(1) if match else None


def input_value(html: str, name: str) -> str | None:
    match = re.search(rf'<input id="f-{re.escape(name)}" name="{re.escape(name)}" '
                      r'type="[a-z]+"(?: value="([^"]*)")?', html)
    return match.group(1) if match else None


def submit(client, form_path: str, action: str, data: dict[str, str]):
    token = csrf_token(client.get(form_path).text)
    return client.post(action, data={**data, "csrf_token": token})


class TestParsing:
    @pytest.mark.parametrize(("text", "minor"), [("6.50", 650), ("0", 0), ("12", 1200),
                                                 (" 1 234.5 ", 123450), ("0.01", 1)])
    def test_money_is_exact(self, text, minor) -> None:
        form = FormState(values={"cost": text})
        assert parse_money(text, name="cost", form=form) == minor
        assert not form.failed
        assert format_money(minor) == f"{Decimal(minor) / 100:.2f}"

    @pytest.mark.parametrize(("text", "message"), [
        ("6.505", "at most 2 decimals"), ("-1", "0 or more"), ("six", "is not an amount"),
        ("", "Enter an amount"), ("NaN", "0 or more"), ("1e20", "too large")])
    def test_money_refused_not_rounded(self, text, message) -> None:
        form = FormState(values={"cost": text})
        assert parse_money(text, name="cost", form=form) is None
        assert message in form.error("cost")

    def test_percentage_points(self) -> None:
        form = FormState(values={})
        assert parse_percentage_points("2.5", name="u", form=form) == Decimal("0.025")
        assert parse_percentage_points("0", name="u", form=form) is None
        assert parse_percentage_points("2.555", name="u", form=form) is None
        assert form.errors["u"] == ["Enter more than 0 and at most 100 percentage points.",
                                    "Use at most 2 decimals."]


class TestChannelForms:
    def test_bad_key_comes_back_with_values_and_message(self, session, admin) -> None:
        response = submit(admin, "/channels/new", "/channels",
                          {"key": "Call Centre!", "name": "Call centre <main>",
                           "kind": "call_centre"})
        assert response.status_code == 422
        html = response.text
        assert "lowercase letters, digits and underscores" in field_error(html, "key")
        assert field_error(html, "name") is None
        assert input_value(html, "key") == "Call Centre!"
        assert input_value(html, "name") == "Call centre &lt;main&gt;"  # escaped, kept
        assert '<option value="call_centre" selected>' in html
        assert 'aria-invalid="true"' in html and 'href="#f-key"' in html
        assert session.exec(select(Channel)).all() == []

    def test_nul_character_is_a_400_page_that_changes_nothing(self, session, admin) -> None:
        # PostgreSQL cannot store a NUL in text: refused before the page does anything.
        response = submit(admin, "/channels/new", "/channels",
                          {"key": "web", "name": "We\x00b", "kind": "web"})
        assert response.status_code == 400
        assert "NUL character" in response.text and "found in: name" in response.text
        assert session.exec(select(Channel)).all() == []
        assert admin.get("/channels", params={"sort": "\x00"}).status_code == 400

    def test_deadlock_is_a_503_page_that_says_send_again(self, admin, monkeypatch) -> None:
        import psycopg
        from sqlalchemy.exc import OperationalError

        import web.ui.pages.goals

        def deadlock(*args: object, **kwargs: object) -> None:
            raise OperationalError("UPDATE", {}, psycopg.errors.DeadlockDetected("deadlock"))

        monkeypatch.setattr(web.ui.pages.goals, "_choices", deadlock)
        response = admin.get("/goals/new")
        assert response.status_code == 503 and response.headers["retry-after"]
        assert "collided with another change" in response.text

    def test_duplicate_key_is_a_field_error(self, session, admin) -> None:
        make_channel(session, key="web")
        response = submit(admin, "/channels/new", "/channels",
                          {"key": "web", "name": "Web again", "kind": "web"})
        assert response.status_code == 422
        assert field_error(response.text, "key") == "A channel with this key already exists."

    def test_create_then_set_costs(self, session, admin) -> None:
        ensure_default_stages(session)
        created = submit(admin, "/channels/new", "/channels",
                         {"key": "call_centre", "name": "Call centre", "kind": "call_centre"})
        assert created.status_code == 303
        assert created.headers["location"] == "/channels/call_centre/costs"
        saved = submit(admin, "/channels/call_centre/costs", "/channels/call_centre/costs",
                       {"cost_pre_sale": "6", "cost_purchase": "", "cost_after_sale": "7.25"})
        assert saved.status_code == 303
        assert cost_table(session) == {("call_centre", "pre_sale"): 600,
                                       ("call_centre", "after_sale"): 725}
        listing = admin.get("/channels").text
        assert "€7.25" in listing and "Costs of Call centre saved (2 changed)." in listing

    def test_one_bad_cost_changes_none(self, session, admin) -> None:
        ensure_default_stages(session)
        make_channel(session, key="web")
        submit(admin, "/channels/web/costs", "/channels/web/costs",
               {"cost_pre_sale": "0.10", "cost_after_sale": "0.20"})
        response = submit(admin, "/channels/web/costs", "/channels/web/costs",
                          {"cost_pre_sale": "0.15", "cost_purchase": "0.3",
                           "cost_after_sale": "0.205"})
        assert response.status_code == 422
        assert "at most 2 decimals" in field_error(response.text, "cost_after_sale")
        assert field_error(response.text, "cost_pre_sale") is None
        assert input_value(response.text, "cost_pre_sale") == "0.15"
        assert input_value(response.text, "cost_after_sale") == "0.205"
        # a stage that had a cost cannot be blanked by accident
        blank = submit(admin, "/channels/web/costs", "/channels/web/costs",
                       {"cost_pre_sale": "", "cost_after_sale": "0.20"})
        assert "Enter an amount" in field_error(blank.text, "cost_pre_sale")
        assert cost_table(session) == {("web", "pre_sale"): 10, ("web", "after_sale"): 20}

    def test_edit_channel(self, session, admin) -> None:
        make_channel(session, key="web")
        form = admin.get("/channels/web/edit").text
        assert 'name="active" value="on" checked' in form
        bad = submit(admin, "/channels/web/edit", "/channels/web/edit",
                     {"name": "", "kind": "web", "active": "on"})
        assert bad.status_code == 422 and field_error(bad.text, "name")
        good = submit(admin, "/channels/web/edit", "/channels/web/edit",
                      {"name": "Web shop", "kind": "web"})
        assert good.status_code == 303
        channel = session.exec(select(Channel).where(Channel.key == "web")).one()
        session.refresh(channel)
        assert (channel.name, channel.active) == ("Web shop", False)

    def test_unknown_channel_is_a_404_page(self, admin) -> None:
        response = admin.get("/channels/nope/costs")
        assert response.status_code == 404
        assert "There is no channel with the key &#39;nope&#39;." in response.text


class TestGoalForm:
    def form(self, **overrides: str) -> dict[str, str]:
        data = {"name": "Self-service", "stage": "after_sale",
                "source_channels": "call_centre", "target_channel": "web",
                "metric": "adoption", "window_days": "30", "target_uplift_points": "5",
                "eligibility_rule": "value_tier != platinum"}
        data.update(overrides)
        return data

    @pytest.fixture(autouse=True)
    def channels(self, session: Session) -> None:
        ensure_default_stages(session)
        make_channel(session, key="web")
        make_channel(session, key="call_centre")

    def test_rule_error_sits_next_to_the_rule(self, session, admin) -> None:
        response = submit(admin, "/goals/new", "/goals",
                          self.form(eligibility_rule="value_tier == diamond"))
        assert response.status_code == 422
        message = field_error(response.text, "eligibility_rule")
        assert message and "diamond" in message
        assert input_value(response.text, "eligibility_rule") == "value_tier == diamond"
        assert input_value(response.text, "target_uplift_points") == "5"
        assert 'value="call_centre" checked' in response.text
        assert session.exec(select(MigrationGoal)).all() == []

    def test_several_errors_at_once(self, admin) -> None:
        response = submit(admin, "/goals/new", "/goals",
                          self.form(target_channel="call_centre", window_days="soon",
                                    target_uplift_points="150"))
        assert field_error(response.text, "target_channel")
        assert field_error(response.text, "window_days") == "Enter a whole number."
        assert "at most 100" in field_error(response.text, "target_uplift_points")

    def test_created_in_percentage_points(self, session, admin) -> None:
        response = submit(admin, "/goals/new", "/goals", self.form(target_uplift_points="2.5"))
        assert response.status_code == 303
        goal = session.exec(select(MigrationGoal)).one()
        assert goal.target_uplift == Decimal("0.025")
        assert "+2.5 pp" in admin.get("/goals").text


class TestUserForm:
    def test_password_never_echoed_and_errors_placed(self, session, admin) -> None:
        response = submit(admin, "/users/new", "/users",
                          {"username": "new person", "password": "short", "role": "analyst",
                           "timezone": "Mars/Olympus"})
        assert response.status_code == 422
        html = response.text
        assert field_error(html, "username") and field_error(html, "password")
        assert 'value="short"' not in html
        assert input_value(html, "password") is None  # no value attribute at all
        assert input_value(html, "username") == "new person"
        assert 'value="analyst" checked' in html

    def test_create_user_with_role(self, session, admin) -> None:
        response = submit(admin, "/users/new", "/users",
                          {"username": "anna", "password": "a long password",
                           "role": "analyst", "timezone": "Europe/Paris"})
        assert response.status_code == 303
        user = session.exec(select(User).where(User.username == "anna")).one()
        assert (user.role, user.timezone) == ("analyst", "Europe/Paris")


class TestApiKeys:
    def test_secret_shown_once_listed_by_prefix_revoked_after_confirmation(
            self, session, admin) -> None:
        missing = submit(admin, "/api-keys/new", "/api-keys", {"name": "web shop"})
        assert missing.status_code == 422 and field_error(missing.text, "scope")
        assert input_value(missing.text, "name") == "web shop"
        created = submit(admin, "/api-keys/new", "/api-keys",
                         {"name": "web shop", "scope": "storefront"})
        assert created.status_code == 201
        assert created.headers["cache-control"] == "no-store"
        secret = re.search(r'id="secret" type="text" value="([^"]+)"', created.text).group(1)
        key = session.exec(select(ApiKey)).one()
        assert key.key_hash == hash_api_key(secret)
        listing = admin.get("/api-keys").text
        assert key.prefix in listing and secret not in listing
        confirm = admin.get(f"/api-keys/{key.id}/revoke")
        assert "stops working within seconds" in confirm.text
        assert key.revoked_at is None  # asking is not revoking
        revoked = admin.post(f"/api-keys/{key.id}/revoke",
                             data={"csrf_token": csrf_token(confirm.text)})
        assert revoked.status_code == 303
        session.refresh(key)
        assert key.revoked_at is not None
        assert "revoked" in admin.get("/api-keys").text

    def test_list_offers_a_dialog_and_a_confirm_page(self, session, admin) -> None:
        submit(admin, "/api-keys/new", "/api-keys", {"name": "shop", "scope": "storefront"})
        key = session.exec(select(ApiKey)).one()
        html = admin.get("/api-keys").text
        assert f'href="/api-keys/{key.id}/revoke" data-confirm="revoke-{key.id}"' in html
        assert f'<dialog id="revoke-{key.id}"' in html


@pytest.mark.parametrize("role", [Role.MARKETER])
def test_marketer_edits_costs_without_admin_pages(session, as_role, role) -> None:
    ensure_default_stages(session)
    make_channel(session, key="web")
    client = as_role(role)
    assert submit(client, "/channels/web/costs", "/channels/web/costs",
                  {"cost_after_sale": "0.20"}).status_code == 303
    assert session.exec(select(ChannelCost)).one().cost_minor == 20
