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
guardrails_app = typer.Typer(help="Guardrails: pause campaigns whose budget is spent or "
                             "that measurably harm complaints, churn or revenue.",
                             no_args_is_help=True)
app.add_typer(guardrails_app, name="guardrails")
lifecycle_app = typer.Typer(help="The lifecycle scheduler's jobs, for cron when the server's "
                            "scheduler is off.", no_args_is_help=True)
app.add_typer(lifecycle_app, name="lifecycle")

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

    from web.observability import log_config

    _ensure_schema()
    # JSON lines on stdout, our access log (with request ids) instead of uvicorn's.
    uvicorn.run("web.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_config=log_config(), access_log=False)


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


@import_app.command("experiment")
def import_experiment_command(
    file: Annotated[Path, typer.Argument(dir_okay=False,
                                         help="UTF-8 CSV file, one row per unit, header row.")],
    name: Annotated[str, typer.Option(help="Name of the new campaign (unique).")],
    arm_column: Annotated[str, typer.Option(help="Column holding each unit's arm label.")],
    control: Annotated[str, typer.Option(help="The control arm's label in --arm-column.")],
    metric: Annotated[list[str], typer.Option(
        help="Outcome COLUMN:binary (0/1) or COLUMN:continuous; repeat for more.")],
    id_column: Annotated[str | None, typer.Option(
        help="Column of unique unit ids (default: the 1-based data row number).")] = None,
    covariate: Annotated[list[str] | None, typer.Option(
        help="Pre-period covariate for CUPED as METRIC=COLUMN; repeatable.")] = None,
    segment: Annotated[list[str] | None, typer.Option(
        help="Column to break results down by; repeatable.")] = None,
    score: Annotated[str | None, typer.Option(
        help="Column of a targeting score (e.g. predicted uplift) for the decile table.")
    ] = None,
    weights: Annotated[str | None, typer.Option(
        help="Planned split as LABEL=PCT,LABEL=PCT,... (whole percentages adding to 100); "
        "the sample ratio check tests against it. Required when the arms are clearly "
        "unequal; without it an equal split is assumed (and the report says so).")] = None,
) -> None:
    """Import a finished experiment run elsewhere as an ended campaign, all or nothing.

    \b
    Every row is a unit; every used cell must be filled. The whole file is checked
    first (options, column names, numbers, 0/1 values of binary metrics, arms, duplicate
    ids, the name) and every problem is listed with its column and rows ("row N" is the
    N-th data row, header and blank lines not counted); nothing is written then.
    Arm weights: --weights if given, else the observed shares rounded to whole
    percentages (for information; the sample ratio check then assumes an equal split,
    and arms too unequal for that are refused until --weights states the plan).
    Prints the new campaign's id on standard output.
    """
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from seeds.experiments import ExperimentImportRejected, build_spec, import_experiment

    _ensure_schema()
    progress = Progress(TextColumn("{task.description:>10}"), BarColumn(),
                        TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                        console=err)
    tasks: dict[str, TaskID] = {}

    def show(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=total)
        progress.update(tasks[phase], completed=done, total=total)

    try:
        spec = build_spec(name=name, arm_column=arm_column, control=control, metrics=metric,
                          covariates=covariate or [], id_column=id_column,
                          segments=segment or [], score_column=score, weights=weights)
        with progress, session_scope() as session:
            result = import_experiment(session, file, spec, actor="cli", progress=show)
    except ExperimentImportRejected as rejected:
        for error in rejected.errors:
            err.print(f"  {error.msg}", markup=False, highlight=False)
        raise fail(f"{file}: {rejected.message}") from None
    except ChannelShiftError as error:
        raise fail(str(error)) from None
    arms = ", ".join(f"{label} ({count:,}{', control' if label == spec.control else ''}, "
                     f"weight {result.weights[label]}%)"
                     for label, count in result.arm_counts.items())
    err.print(f"imported {file}: {result.rows:,} units in arms {arms} as campaign "
              f"{result.campaign_id} '{result.name}'", markup=False, highlight=False)
    print(result.campaign_id)


@guardrails_app.command("check")
def guardrails_check(
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would be paused and why; change nothing.")] = False,
) -> None:
    """Check every running campaign once and pause those spent or harmful (for cron).

    The server's scheduler runs the same check every CHANNELSHIFT_GUARDRAIL_INTERVAL_SECONDS;
    with CHANNELSHIFT_SCHEDULER=false, cron runs this command (and `channelshift lifecycle
    tick`, which pauses spent budgets every minute) instead. Exits 1 when a campaign could
    not be checked.
    """
    from web.guardrails import GuardrailOutcome, check_guardrails

    _ensure_schema()
    actions = check_guardrails(get_engine(), actor="cli:guardrails", dry_run=dry_run)
    verbs = {GuardrailOutcome.PAUSED: "[bold red]paused[/]",
             GuardrailOutcome.WOULD_PAUSE: "[bold yellow]would pause[/]",
             GuardrailOutcome.SKIPPED: "skipped", GuardrailOutcome.FAILED: "[bold red]failed[/]"}
    for action in actions:
        if action.outcome in verbs:
            console.print(verbs[action.outcome], end=" ")
            console.print(f"campaign {action.campaign_id} '{action.campaign_name}': "
                          f"{action.reason}", markup=False, highlight=False)
    acted = {outcome: sum(a.outcome is outcome for a in actions) for outcome in GuardrailOutcome}
    summary = (f"{acted[GuardrailOutcome.WOULD_PAUSE]} would be paused (dry run)" if dry_run
               else f"{acted[GuardrailOutcome.PAUSED]} paused")
    console.print(f"checked {len(actions)} running campaign{'s' * (len(actions) != 1)}: "
                  f"{summary}, {acted[GuardrailOutcome.KEPT]} fine")
    if acted[GuardrailOutcome.FAILED]:
        raise fail(f"{acted[GuardrailOutcome.FAILED]} campaign(s) could not be checked; "
                   "see the errors above")


@lifecycle_app.command("tick")
def lifecycle_tick(
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what is due and why; change nothing.")] = False,
) -> None:
    """Do once what is due now: start and end campaigns on their schedule, run prize draws
    on their announced date, pause campaigns whose budget cannot pay one more redemption.

    The server's scheduler does the same every CHANNELSHIFT_SCHEDULE_INTERVAL_SECONDS
    (draws, budgets: their own intervals); run this from cron, e.g. every minute, when
    CHANNELSHIFT_SCHEDULER is false. Safe to run while servers or other ticks run: each
    change happens once. Exits 1 when something due could not be done.
    """
    from campaigns.types import utcnow
    from web.scheduler import Outcome, tick

    _ensure_schema()
    now = utcnow()
    actions = tick(get_engine(), now=now, dry_run=dry_run)
    done = {"start": "started", "end": "ended", "return to draft": "returned to draft",
            "draw": "drew", "pause": "paused"}
    for action in actions:
        if action.outcome is Outcome.DONE:
            verb = f"[bold]{done[action.verb]}[/]"
        elif action.outcome is Outcome.WOULD:
            verb = f"[bold yellow]would {action.verb}[/]"
        elif action.outcome is Outcome.SKIPPED:
            verb = f"skipped ({action.verb})"
        else:
            verb = f"[bold red]failed to {action.verb}[/]"
        console.print(verb, end=" ")
        console.print(f"campaign {action.campaign_id} '{action.campaign_name}': "
                      f"{action.reason}", markup=False, highlight=False)
    counts = {outcome: sum(a.outcome is outcome for a in actions) for outcome in Outcome}
    when = now.isoformat(timespec="seconds")
    if not actions:
        console.print(f"lifecycle tick at {when}: nothing was due")
    elif dry_run:
        console.print(f"lifecycle tick at {when} (dry run): {counts[Outcome.WOULD]} due, "
                      "nothing changed")
    else:
        console.print(f"lifecycle tick at {when}: {counts[Outcome.DONE]} done, "
                      f"{counts[Outcome.SKIPPED]} already done elsewhere, "
                      f"{counts[Outcome.FAILED]} failed")
    if counts[Outcome.FAILED]:
        raise fail(f"{counts[Outcome.FAILED]} change(s) could not be made; see the errors "
                   "above")


def _report_format(name: str | None, out: Path | None) -> str:
    """The export format: as given, else the --out file's extension, else json."""
    from analytics.exports import ExportFormat

    choices = ", ".join(f.value for f in ExportFormat)
    if name is None:
        suffix = out.suffix.lower().lstrip(".") if out else ""
        return suffix if suffix in {f.value for f in ExportFormat} else ExportFormat.JSON.value
    if name.lower() not in {f.value for f in ExportFormat}:
        raise fail(f"unknown format '{name}': use one of {choices}")
    return name.lower()


def _write_report_file(target: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, so a failure leaves no half file."""
    if target.is_dir():
        raise fail(f"{target} is a folder: give a file name with --out")
    if not target.parent.is_dir():
        raise fail(f"cannot write {target}: the folder {target.parent} does not exist")
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, target)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise fail(f"cannot write {target}: {error.strerror or error}") from None


@app.command()
def report(
    campaign: Annotated[str, typer.Argument(help="The campaign's id or exact name.")],
    report_format: Annotated[str | None, typer.Option(
        "--format", "-f", help="json, csv, xlsx or html. Default: the --out file's "
        "extension, else json.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", dir_okay=False, help="File to write. Default: "
        "campaign-<id>-report-<date>.<format> in the current folder.")] = None,
    alpha: Annotated[float, typer.Option(
        help="Significance level: intervals are two-sided (1 - alpha).")] = 0.05,
    segment: Annotated[str | None, typer.Option(
        help="Customer attribute to break uplift down by; default value_tier (imported: "
        "the first segment column); 'none' for no breakdown.")] = None,
    qini_score: Annotated[str | None, typer.Option(
        help="Numeric customer attribute with a targeting score (an imported experiment: "
        "the column imported with --score): adds uplift by decile and the Qini curve.")
    ] = None,
    qini_metric: Annotated[str | None, typer.Option(
        help="The 0/1 metric the Qini curve counts; default adoption (an imported "
        "experiment: its first binary metric).")] = None,
    correction: Annotated[str, typer.Option(
        help="Multiplicity correction of the primary metrics: holm (family-wise error) "
        "or bh (Benjamini-Hochberg, false discovery rate).")] = "holm",
    baseline: Annotated[str | None, typer.Option(
        help="The arm every other arm is compared with (default: the control arm).")
    ] = None,
    cap_revenue: Annotated[str | None, typer.Option(
        help="Cap each customer's revenue in the comparisons: 99p (a percentile of the "
        "positive values) or 500.00 (an amount in the campaign's currency).")] = None,
    cap_cost_to_serve: Annotated[str | None, typer.Option(
        help="Cap each customer's cost to serve (and its CUPED pre-period value) alike.")
    ] = None,
    cap_incentive_cost: Annotated[str | None, typer.Option(
        help="Cap each customer's incentive cost alike.")] = None,
    cuped_days: Annotated[int | None, typer.Option(
        help="CUPED pre-period in days before first exposure; default: the goal's window.")
    ] = None,
) -> None:
    """Write a campaign's report: results with intervals, methods, SRM check, charts.

    \b
    json  raw numbers for programs (money in minor units, times in UTC)
    csv   tidy long format: campaign, arm, segment, metric, statistic, value
    xlsx  sheets summary, metrics, segments, economics, diagnostics
    html  one self-contained file with charts, to read or send
    """
    from analytics.exports import ExportFormat, export_bytes, export_filename
    from analytics.queries import report_view
    from analytics.report import (
        ReportOptionError,
        arm_names,
        build_report,
        choose_segment,
        resolve_campaign,
    )
    from analytics.reports import choose_baseline
    from analytics.uplift import QiniOptionError

    export_format = ExportFormat(_report_format(report_format, out))
    if not 0 < alpha <= 0.5:
        raise fail(f"--alpha must be above 0 and at most 0.5 (got {alpha})")
    from analytics.stats import check_correction
    try:
        check_correction(correction)
    except ValueError as error:
        raise fail(f"--correction: {error}") from None
    caps = {metric: text for metric, text in (
        ("revenue", cap_revenue), ("cost_to_serve", cap_cost_to_serve),
        ("incentive_cost", cap_incentive_cost)) if text is not None}
    _ensure_schema()
    try:
        with report_view(get_engine()) as connection:
            campaign_id = resolve_campaign(connection, campaign)
            try:
                choose_baseline(arm_names(connection, campaign_id), baseline)
            except ValueError as error:
                raise fail(f"--baseline: {error}") from None
            built = build_report(connection, campaign_id, alpha=alpha,
                                 segment=choose_segment(connection, campaign_id, segment),
                                 qini_score=qini_score, qini_metric=qini_metric,
                                 correction=correction, baseline=baseline, caps=caps,
                                 cuped_days=cuped_days)
    except QiniOptionError as error:
        raise fail(f"--{error.option.replace('_', '-')}: {error}") from None
    except ReportOptionError as error:
        raise fail(f"--{error.option.replace('_', '-')}: {error.detail}") from None
    except (ChannelShiftError, ValueError) as error:
        raise fail(str(error)) from None
    target = out or Path(export_filename(built, export_format))
    _write_report_file(target, export_bytes(built, export_format))
    console.print(f"wrote the {export_format.value} report of campaign {built.campaign.id} "
                  f"'{built.campaign.name}' to {target.resolve()}", markup=False,
                  highlight=False, soft_wrap=True)


@app.command()
def economics(
    export_format: Annotated[str | None, typer.Option(
        "--format", "-f", help="csv, xlsx or json. Default: the --out file's extension, "
        "else csv.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", dir_okay=False, help="File to write. Default: "
        "channel-economics-<date>.<format> in the current folder.")] = None,
    since: Annotated[str | None, typer.Option(
        help="Start of the period (inclusive): 2026-01-31 or 2026-01-31T09:00:00Z.")] = None,
    until: Annotated[str | None, typer.Option(
        help="End of the period (exclusive), same forms as --since.")] = None,
) -> None:
    """Write the channel economics overview: cost to serve, customer quality, acquisition.

    \b
    csv   tidy rows: section, channel, stage, metric, value
    xlsx  sheets channel_stage, channel, preferred_channel, acquisition, records
    json  the sections as lists of objects (money in minor units, times in UTC)
    """
    from analytics.economics import (
        ExportFormat,
        PeriodError,
        channel_overview,
        export_overview,
        parse_time_bound,
    )
    from analytics.queries import report_view
    from campaigns.types import utcnow

    choices = {f.value for f in ExportFormat}
    suffix = out.suffix.lower().lstrip(".") if out else ""
    name = (export_format or (suffix if suffix in choices else ExportFormat.CSV.value)).lower()
    if name not in choices:
        raise fail(f"unknown format '{export_format}': use one of {', '.join(sorted(choices))}")
    try:
        start = parse_time_bound(since, field_name="--since") if since else None
        end = parse_time_bound(until, field_name="--until") if until else None
        _ensure_schema()
        with report_view(get_engine()) as connection:
            overview = channel_overview(connection, since=start, until=end)
    except PeriodError as error:
        raise fail(str(error)) from None
    target = out or Path(f"channel-economics-{utcnow():%Y-%m-%d}.{name}")
    _write_report_file(target, export_overview(overview, name))
    console.print(f"wrote the {name} channel economics ({len(overview.channel_stages)} "
                  f"channel x stage rows) to {target.resolve()}", markup=False,
                  highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
