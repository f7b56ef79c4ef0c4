"""The ``channelshift`` command line.

It lives in ``web/`` because it wires every package together (database, seeds,
server); the domain in ``campaigns/`` stays free of web and CLI concerns.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlmodel import Session

from campaigns import migrate
from campaigns.db import check_schema_current, current_revision, get_engine, session_scope
from campaigns.errors import ChannelShiftError
from campaigns.models import ApiScope, Role
from campaigns.settings import get_settings

app = typer.Typer(help="ChannelShift: incentive campaigns that move customers to the right "
                  "channel, with randomized proof.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Marketer-UI users.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
apikey_app = typer.Typer(help="API keys for storefronts, scripts and analysts.",
                         no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
import_app = typer.Typer(help="Import data from files.", no_args_is_help=True)
app.add_typer(import_app, name="import")

console = Console()
err = Console(stderr=True)

DEMO_USERNAME = "demo"


def fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


def _describe_database() -> str:
    settings = get_settings()
    url = get_engine().url.render_as_string(hide_password=True)
    return f"{url}" + (f" (schema {settings.database_schema})" if settings.database_schema else "")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head"
               ) -> None:
    """Apply migrations (creates the schema on an empty database). Safe to run twice."""
    engine = get_engine()
    before = current_revision(engine)
    migrate.upgrade(engine, revision)
    after = current_revision(engine)
    if before == after:
        console.print(f"database {_describe_database()} already at revision {after}")
    else:
        console.print(f"database {_describe_database()} upgraded {before or 'empty'} -> {after}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and whether it is the one this code needs."""
    engine = get_engine()
    current = current_revision(engine)
    head = migrate.head_revision()
    state = "current" if current == head else f"out of date (code needs {head})"
    console.print(f"{_describe_database()}: revision {current or 'none'}, {state}")


@user_app.command("create")
def user_create(
    username: str,
    role: Annotated[Role, typer.Option(help="admin, marketer, analyst or viewer.")],
    password: Annotated[str | None, typer.Option(
        help="Password (at least 10 characters). Default: read CHANNELSHIFT_NEW_PASSWORD, "
        "else prompt.")] = None,
    timezone: Annotated[str, typer.Option(help="IANA time zone for the UI.")] = "UTC",
) -> None:
    """Create a user (the first admin, for instance)."""
    from campaigns.services.users import create_user

    password = password or os.environ.get("CHANNELSHIFT_NEW_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise fail("no password: pass --password or set CHANNELSHIFT_NEW_PASSWORD")
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with session_scope() as session:
            user = create_user(session, actor="cli", user_create={
                "username": username, "password": password, "role": role.value,
                "timezone": timezone})
            console.print(f"created {user.role} '{user.username}' (id {user.id})")
    except ChannelShiftError as error:
        raise fail(str(error)) from None


@apikey_app.command("create")
def apikey_create(
    scope: Annotated[ApiScope, typer.Option(help="storefront, management or analytics.")],
    name: Annotated[str, typer.Option(help="Who or what uses the key.")] = "default",
) -> None:
    """Create an API key. The secret is printed once and stored only as a hash."""
    from campaigns.services.apikeys import create_api_key

    try:
        with session_scope() as session:
            created = create_api_key(session, name=name, scope=scope, actor="cli")
            key_id = created.api_key.id
    except ChannelShiftError as error:
        raise fail(str(error)) from None
    err.print(f"created {scope.value} key {key_id} '{name}'; store the secret now, "
              "it cannot be shown again:")
    print(created.secret)


@apikey_app.command("list")
def apikey_list() -> None:
    """List API keys (prefix, scope, state), never their secrets."""
    from rich.table import Table

    from campaigns.services.apikeys import list_api_keys

    table = Table("id", "name", "prefix", "scope", "created", "revoked")
    with session_scope() as session:
        for key in list_api_keys(session):
            table.add_row(str(key.id), key.name, key.prefix, key.scope,
                          key.created_at.isoformat(timespec="seconds"),
                          key.revoked_at.isoformat(timespec="seconds") if key.revoked_at
                          else "")
    console.print(table)


@apikey_app.command("revoke")
def apikey_revoke(key_id: int) -> None:
    """Revoke an API key; every worker stops accepting it within seconds."""
    from campaigns.services.apikeys import revoke_api_key

    try:
        with session_scope() as session:
            revoke_api_key(session, api_key_id=key_id, actor="cli")
    except ChannelShiftError as error:
        raise fail(str(error)) from None
    console.print(f"revoked key {key_id}")


def _ensure_schema() -> None:
    try:
        check_schema_current(get_engine())
    except ChannelShiftError as error:
        raise fail(error.message) from None


def _serve(*, host: str, port: int, workers: int) -> None:
    import uvicorn

    _ensure_schema()
    uvicorn.run("web.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="info")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Start the HTTP server (the schema must be current)."""
    _serve(host=host, port=port, workers=workers)


def _reset_demo_login(session: Session) -> str:
    """Give the demo admin a fresh random password each run and return it."""
    from campaigns.services.users import create_user, set_password
    from campaigns.services.users import user_by_name as find_user

    password = secrets.token_urlsafe(12)
    try:
        user = find_user(session, DEMO_USERNAME)
    except ChannelShiftError:
        create_user(session, actor="seed:demo", user_create={
            "username": DEMO_USERNAME, "password": password, "role": Role.ADMIN.value})
    else:
        set_password(session, user=user, password=password, actor="seed:demo")
    return password


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Only create and seed.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed of the demo world.")] = 20261122,
    customers: Annotated[int, typer.Option(help="Customers in the demo world.", min=100)
                         ] = 20_000,
) -> None:
    """Create the database, seed the demo world (once) and start the server."""
    from seeds.demo import is_seeded, seed_demo_world

    engine = get_engine()
    migrate.upgrade(engine)
    with session_scope() as session:
        if is_seeded(session):
            console.print("demo world already seeded; keeping it as it is")
        else:
            with console.status(f"seeding the demo world ({customers:,} customers)..."):
                summary = seed_demo_world(session, seed=seed, customers=customers)
            console.print(f"seeded: {summary}")
        password = _reset_demo_login(session)
    console.print(f"database: {_describe_database()}")
    console.print(f"login:    [bold]{DEMO_USERNAME}[/] / [bold]{password}[/]")
    if no_serve:
        return
    console.print(f"serving:  [bold]http://{host}:{port}/[/]  (Ctrl+C to stop)")
    _serve(host=host, port=port, workers=1)


@import_app.command("events")
def import_events(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="UTF-8 CSV file with a header row.")],
    batch_size: Annotated[int, typer.Option(
        min=1, max=100_000, help="Rows per bulk insert (all inside one transaction).")
    ] = 10_000,
) -> None:
    """Import channel events and conversions from a CSV file, all or nothing.

    \b
    Columns (header row required, any order; event_id, customer_id and occurred_at
    are required; an empty cell means "not given"):
      type           interaction (default) or conversion
      event_id       the sender's unique id of the event (1-200 characters)
      customer_id    the customer's external id (created if new)
      channel        channel key; required for interactions, optional for conversions
      stage          stage key; interactions only
      occurred_at    ISO-8601 time with a timezone, e.g. 2026-01-31T09:00:00Z
      kind           interactions: interaction (default), complaint, churn, acquisition;
                     conversions: purchase (default), trial_to_paid, ...
      cost_minor     interactions only; default: the channel's cost at the stage
      revenue_minor  whole minor units (cents); required for conversions
      margin_minor   conversions only, whole minor units

    The whole file is checked first: every bad row is listed with its line number and
    column (the first 20), and nothing is written. A good file is imported in one
    transaction. Events already recorded (same event_id) count as duplicates, so
    importing a file again records nothing twice.
    """
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from web.importers import CsvRejected, import_events_csv

    _ensure_schema()
    progress = Progress(TextColumn("{task.description:>10}"), BarColumn(),
                        TextColumn("{task.percentage:>5.1f}%"), TextColumn("{task.fields[rows]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err)
    try:
        with progress:
            summary = import_events_csv(file, engine=get_engine(), batch_size=batch_size,
                                        progress=progress)
    except CsvRejected as rejected:
        for error in rejected.errors:
            err.print(f"  {error}", markup=False, highlight=False)
        raise fail(f"{file}: {rejected}") from None
    except ChannelShiftError as error:
        raise fail(str(error)) from None
    result = summary.result
    console.print(f"imported {file}: {summary.rows:,} rows, {result.accepted:,} accepted, "
                  f"{result.duplicates:,} duplicates")
    effects = result.effects
    console.print(f"earned: {effects.lottery_entries:,} lottery entries, "
                  f"{effects.points_awarded:,} loyalty points, "
                  f"{effects.trials_converted:,} trials converted")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
