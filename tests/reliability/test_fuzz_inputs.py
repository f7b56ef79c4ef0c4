"""Hypothesis against the CSV importers and the eligibility-rule parser.

Importers (``channelshift import events`` and ``channelshift import experiment``, run as
the CLI runs them, against a database of this run's backend): generated files mix valid
rows with broken ones (bad dates, unknown channels, missing cells, quotes and line breaks
inside cells, byte-order marks, huge numbers, NUL characters, other encodings, ragged rows,
bad headers and options). Each file must give either

- a clear error: exit status 1, no traceback, the line and column (events) or the column
  or option (experiments) of the first problem named, and every table's row count as it
  was before; or
- a full import: every row of the file in the database, nothing else added.

The generator knows which rows it broke, so a good file must import and a bad one must be
refused naming the right place: a wrong refusal fails as surely as a partial import.

Rules (``campaigns.rules``): arbitrary text, text built from the grammar, and arbitrary
nested JSON for ``Rule.from_data`` give either :class:`InvalidRule` naming the rule or a
:class:`Rule` whose canonical text and data parse back to the same rule, whose
``evaluate`` returns a boolean for any customer mapping, and whose SQL
(``campaigns.services.audience.rule_condition``) selects exactly the customers
``evaluate`` accepts, among a varied population plus generated customers.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare
from sqlalchemy import Engine, func, select
from sqlmodel import Session, SQLModel
from typer.testing import CliRunner, Result

from campaigns.errors import InvalidRule
from campaigns.models import (
    Campaign,
    ChannelEvent,
    Conversion,
    Customer,
    ExperimentSegment,
    ExperimentUnit,
    ExperimentValue,
)
from campaigns.rules import CUSTOMER_ATTRIBUTES, MAX_RULE_LENGTH, Rule, parse_rule
from campaigns.services.audience import rule_condition
from campaigns.services.customers import customer_attributes
from seeds.experiments import UNEQUAL_SPLIT_P
from tests.builders import make_import_world
from tests.campaigns.test_events import assign, lottery_arm, loyalty_arm, running_campaign
from tests.scratch import cli_database
from web.cli import app as cli

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

#: Generated files per importer, and rules per property.
IMPORT_EXAMPLES = 120
RULE_EXAMPLES = 500
SQL_EXAMPLES = 300

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])

COUNTS: dict[str, int] = {}


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


# --- a database the CLI writes to ------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_db(database: tuple[str, str | None], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Engine]:
    """The scratch database, with channels, costs and running lottery and loyalty campaigns
    (so imported events earn entries and points), and the CLI pointed at it."""
    with pytest.MonkeyPatch.context() as env, \
            cli_database(database, tmp_path_factory.mktemp("fuzz-db"), env,
                         prefix="cs_fuzz") as scratch:
        engine = scratch.engine
        with Session(engine) as session:
            make_import_world(session)
            loyalty = running_campaign(session, arm=loyalty_arm(), name="Fuzz points")
            lottery = running_campaign(session, arm=lottery_arm(), name="Fuzz draw")
            for customer in ("C1", "C2"):
                for campaign in (loyalty, lottery):
                    assign(session, campaign, customer=customer,
                           exposed_at=datetime(2020, 1, 1, tzinfo=UTC))
            session.commit()
        yield engine


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table of the schema."""
    with engine.connect() as connection:
        return {name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in SQLModel.metadata.tables.items()}


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_clear_refusal(result: Result, *, must_name: str) -> None:
    """Exit 1 through the CLI's error path, naming the problem; no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert must_name in result.stderr, (must_name, result.stderr)


# --- channelshift import events ------------------------------------------------------------

COLUMNS = ("type", "event_id", "customer_id", "channel", "stage", "occurred_at", "kind",
           "cost_minor", "revenue_minor", "margin_minor")
CHANNELS = ("web", "call_centre", "app")
STAGES = ("pre_sale", "purchase", "after_sale")
SERIAL = itertools.count(1)
NOW = datetime.now(UTC)

# Text that survives a CSV round trip and the importer's stripping: no NUL, no carriage
# return (a line break of its own), no surrounding spaces (checked separately).
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
                    max_size=12)
CUSTOMER_IDS = st.one_of(st.sampled_from(["C1", "C2", "C3"]),
                         st.from_regex(r"[A-Za-z0-9_.:@-]{1,20}", fullmatch=True))
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5,
                                                                             minutes=-30))])
WHEN = st.builds(lambda moment, zone: moment.astimezone(zone).isoformat(),
                 st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2026, 1, 1),
                              timezones=st.just(UTC)), ZONES)
MONEY = st.integers(min_value=0, max_value=10**15)


@dataclass
class EventRow:
    cells: dict[str, str]
    kind: str  # interaction | conversion
    problem: str | None = None  # the column the importer must name, None if the row is good

    @property
    def event_id(self) -> str:
        return self.cells["event_id"].strip()


@st.composite
def good_rows(draw: st.DrawFn, serial: int, index: int) -> EventRow:
    conversion = draw(st.booleans())
    # A unique prefix keeps ids unique in the file and across generated files.
    event_id = f"fz{serial}-{index}-" + draw(SAFE_TEXT).strip()
    cells = {"type": "conversion" if conversion else draw(st.sampled_from(["interaction", ""])),
             "event_id": event_id, "customer_id": draw(CUSTOMER_IDS),
             "occurred_at": draw(WHEN)}
    if conversion:
        cells |= {"kind": draw(st.sampled_from(["", "purchase", "trial_to_paid", "renewal"])),
                  "revenue_minor": str(draw(MONEY)),
                  "margin_minor": draw(st.one_of(st.just(""), st.integers(
                      min_value=-10**15, max_value=10**15).map(str))),
                  "channel": draw(st.sampled_from(["", *CHANNELS]))}
    else:
        cells |= {"channel": draw(st.sampled_from(CHANNELS)),
                  "stage": draw(st.sampled_from(STAGES)),
                  "kind": draw(st.sampled_from(["", "interaction", "complaint", "churn",
                                                "acquisition"])),
                  "cost_minor": draw(st.one_of(st.just(""), MONEY.map(str)))}
    if draw(st.booleans()):  # spaces around cells are not part of the value
        cells = {name: f" {value} " if value and name != "event_id" else value
                 for name, value in cells.items()}
    return EventRow(cells, "conversion" if conversion else "interaction")


#: (column, broken value, applies to) -- each makes the row invalid in that column.
BREAKAGES: list[tuple[str, str, str]] = [
    ("occurred_at", "2026-13-01T00:00:00Z", "any"),
    ("occurred_at", "2026-01-31T09:00:00", "any"),  # no timezone
    ("occurred_at", "yesterday", "any"),
    ("occurred_at", (NOW + timedelta(days=3)).isoformat(), "any"),  # the future
    ("occurred_at", "", "any"),
    ("channel", "fax", "any"),
    ("channel", "WEB", "any"),
    ("channel", "", "interaction"),
    ("stage", "during_sale", "interaction"),
    ("stage", "", "interaction"),
    ("customer_id", "bad id!", "any"),
    ("customer_id", "é", "any"),
    ("customer_id", "", "any"),
    ("event_id", "", "any"),
    ("event_id", "x" * 201, "any"),
    ("event_id", "nul\x00byte", "any"),
    ("kind", "nul\x00kind", "conversion"),
    ("kind", "buy", "interaction"),
    ("cost_minor", "-5", "interaction"),
    ("cost_minor", "12.5", "interaction"),
    ("cost_minor", "9" * 20, "interaction"),
    ("cost_minor", "9" * 5000, "interaction"),
    ("cost_minor", "1e3", "interaction"),
    ("revenue_minor", "", "conversion"),
    ("revenue_minor", "abc", "conversion"),
    ("revenue_minor", "-" + "9" * 4400, "conversion"),
    ("margin_minor", "10", "interaction"),  # not a field of interactions
    ("type", "purchase", "any"),
]


@st.composite
def broken_rows(draw: st.DrawFn, serial: int, index: int) -> EventRow:
    row = draw(good_rows(serial, index))
    column, value, _ = draw(st.sampled_from(
        [b for b in BREAKAGES if b[2] in ("any", row.kind)]))
    row.cells[column] = value
    row.problem = column
    return row


@dataclass
class EventsFile:
    rows: list[EventRow]
    data: bytes
    #: (line, column) of the first problem, None for a good file; column "-" for the file
    first_problem: tuple[int, str] | None
    must_name: str = ""
    line_of: list[int] = field(default_factory=list)


def _render(header: list[str], rows: list[list[str]], newline: str) -> tuple[str, list[int]]:
    """CSV text and the 1-based line each data row starts on."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline)
    writer.writerow(header)
    lines, line = [], 2
    for cells in rows:
        before = buffer.tell()
        writer.writerow(cells)
        lines.append(line)
        line += buffer.getvalue()[before:].count("\n") or 1  # "\r" alone never occurs here
    return buffer.getvalue(), lines


@st.composite
def events_files(draw: st.DrawFn) -> EventsFile:
    serial = next(SERIAL)
    count = draw(st.integers(min_value=1, max_value=12))
    bad_share = draw(st.sampled_from([0.0, 0.0, 0.2, 0.5]))
    rows = [draw(broken_rows(serial, i)) if draw(st.floats(0, 1)) < bad_share
            else draw(good_rows(serial, i)) for i in range(count)]
    header = list(draw(st.permutations(COLUMNS)))
    if draw(st.booleans()):
        header = [name.upper() if draw(st.booleans()) else f" {name}" for name in header]
    names = [name.strip().lower() for name in header]
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    table = [[row.cells.get(name, "") for name in names] for row in rows]
    structural = draw(st.sampled_from(["none"] * 6 + ["ragged", "missing_column",
                                                      "unknown_column", "repeated_id",
                                                      "blank_lines", "empty"]))
    first: tuple[int, str] | None = None
    must_name = ""
    if structural == "missing_column":
        gone = draw(st.sampled_from(["event_id", "customer_id", "occurred_at"]))
        keep = [i for i, name in enumerate(names) if name != gone]
        header, table = [header[i] for i in keep], [[cells[i] for i in keep] for cells in table]
        first, must_name = (1, gone), f"line 1, column {gone}: missing column '{gone}'"
    elif structural == "unknown_column":
        header, table = [*header, "price"], [[*cells, "1"] for cells in table]
        first, must_name = (1, "price"), "line 1, column price: unknown column 'price'"
    text_body, line_of = _render(header, table, newline)
    if structural == "ragged":
        at = draw(st.integers(min_value=0, max_value=len(table)))
        ragged = [*table[:at], [*(table[at] if at < len(table) else header), "extra"],
                  *table[at:]]
        text_body, line_of = _render(header, ragged, newline)
        ragged_line = line_of[at]
        rows = [*rows[:at], EventRow({}, "interaction", "-"), *rows[at:]]
        line_of = [*line_of[:at], ragged_line, *line_of[at + 1:]]
    elif structural == "repeated_id" and rows:
        again = draw(st.sampled_from(rows))
        copy = EventRow(dict(again.cells), again.kind, "event_id")
        rows.append(copy)
        table.append([copy.cells.get(name, "") for name in names])
        text_body, line_of = _render(header, table, newline)
    elif structural == "blank_lines":
        text_body = text_body.replace(newline, newline * 2, 1) + newline
        line_of = [line + 1 for line in line_of]
    elif structural == "empty":
        text_body, rows, line_of = "", [], []
        first, must_name = (1, "-"), "the file is empty"
    if first is None:
        bad = [(line, row.problem) for row, line in zip(rows, line_of, strict=True)
               if row.problem is not None]
        if structural == "repeated_id" and rows:
            bad = [(line, p) for (line, p) in bad if line != line_of[-1]] + [(line_of[-1],
                                                                                "event_id")]
        if bad:
            first = min(bad)
            must_name = f"line {first[0]}, column {first[1]}"
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    if encoding == "latin-1" and not text_body.isascii():
        data = text_body.encode("latin-1", errors="replace")
        if not data.decode("latin-1").isascii():
            first, must_name = (0, "-"), "not UTF-8"
    elif encoding == "utf-16":
        data = text_body.encode("utf-16")
        if data:
            first, must_name = (0, "-"), "not UTF-8"
    else:
        data = text_body.encode("utf-8" if encoding == "latin-1" else encoding)
    return EventsFile(rows=rows, data=data, first_problem=first, must_name=must_name,
                      line_of=line_of)


@given(events_files())
@settings(FUZZ, max_examples=IMPORT_EXAMPLES)
def test_import_events(cli_db: Engine, tmp_path: Path, events: EventsFile) -> None:
    _count("events files")
    path = tmp_path / "events.csv"
    path.write_bytes(events.data)
    before = table_counts(cli_db)
    result = run_cli("import", "events", str(path))
    if events.first_problem is not None:
        assert_clear_refusal(result, must_name=events.must_name)
        assert table_counts(cli_db) == before, "a refused file changed the database"
        _count("events files refused")
        return
    assert result.exit_code == 0, result.output
    rows = len(events.rows)
    assert f"{rows:,} rows, {rows:,} accepted, 0 duplicates" in result.stdout, result.stdout
    after = table_counts(cli_db)
    interactions = [row.event_id for row in events.rows if row.kind == "interaction"]
    conversions = [row.event_id for row in events.rows if row.kind == "conversion"]
    assert after["channel_event"] - before["channel_event"] == len(interactions)
    assert after["conversion"] - before["conversion"] == len(conversions)
    with Session(cli_db) as session:
        for model, ids in ((ChannelEvent, interactions), (Conversion, conversions)):
            column = model.__table__.c.client_event_id  # type: ignore[attr-defined]
            stored = set(session.execute(select(column).where(column.in_(ids))).scalars())
            assert stored == set(ids)
    _count("events files imported")
    # The same file again records nothing twice and changes nothing.
    again = run_cli("import", "events", str(path))
    assert again.exit_code == 0, again.output
    assert f"{rows:,} rows, 0 accepted, {rows:,} duplicates" in again.stdout
    assert table_counts(cli_db) == after


# --- channelshift import experiment --------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(min_value=-10**6, max_value=10**6).map(str),
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False).map(repr),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda x: f"{x:.3e}"))
LABEL = st.from_regex(r"[A-Za-z][A-Za-z0-9 _-]{0,10}", fullmatch=True).map(str.strip)


@dataclass
class Experiment:
    data: bytes
    options: list[str]
    rows: int
    metrics: int
    segments: int
    #: text the refusal must contain (a column or an option); "" for a good experiment
    must_name: str = ""


@st.composite
def experiments(draw: st.DrawFn) -> Experiment:
    serial = next(SERIAL)
    rows = draw(st.integers(min_value=2, max_value=25))
    arms = ["control", *draw(st.lists(LABEL.filter(lambda s: s and s != "control"),
                                      min_size=1, max_size=3, unique=True))]
    labels = arms + [draw(st.sampled_from(arms)) for _ in range(rows - len(arms))] \
        if rows >= len(arms) else arms[:rows]
    rows = len(labels)
    table = {
        "unit": [f"u{serial}-{i}" for i in range(rows)],
        "arm": labels,
        "converted": [draw(st.sampled_from(["0", "1", "0.0", "1.0", " 1 "]))
                      for _ in range(rows)],
        "revenue": [draw(NUMBERS) for _ in range(rows)],
        "pre_revenue": [draw(NUMBERS) for _ in range(rows)],
        "region": [draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
                                max_size=15).filter(str.strip)) for _ in range(rows)],
        "score": [draw(NUMBERS) for _ in range(rows)],
    }
    options = ["--name", f"Fuzz experiment {serial}", "--arm-column", "arm",
               "--control", "control", "--metric", "converted:binary",
               "--metric", "revenue:continuous", "--covariate", "revenue=pre_revenue",
               "--segment", "region", "--score", "score", "--id-column", "unit"]
    must_name = ""
    breakage = draw(st.sampled_from(["none"] * 8 + [
        "empty_cell", "not_a_number", "infinite", "not_binary", "repeated_id", "no_control",
        "one_arm", "bad_metric_kind", "unknown_column", "weights_total", "weights_unknown",
        "empty_name", "long_name", "taken_name", "long_segment", "nul_cell", "latin1",
        "ragged", "repeated_header"]))
    cell = draw(st.integers(min_value=0, max_value=rows - 1))
    header = list(table)
    if breakage == "empty_cell":
        column = draw(st.sampled_from(["arm", "converted", "revenue", "region", "unit"]))
        table[column][cell], must_name = "", f"column '{column}'"
    elif breakage == "not_a_number":
        table["revenue"][cell], must_name = "12,5 EUR", "column 'revenue'"
    elif breakage == "infinite":
        table["score"][cell], must_name = "1e400", "column 'score'"
    elif breakage == "not_binary":
        table["converted"][cell], must_name = "2", "column 'converted'"
    elif breakage == "repeated_id":
        other = (cell + 1) % rows
        table["unit"][other], must_name = table["unit"][cell], "column 'unit'"
    elif breakage == "no_control":
        options[options.index("--control") + 1], must_name = "holdout", "--control"
    elif breakage == "one_arm":
        table["arm"], must_name = ["control"] * rows, "column 'arm'"
    elif breakage == "bad_metric_kind":
        options[options.index("revenue:continuous")], must_name = "revenue:money", "--metric"
    elif breakage == "unknown_column":
        options[options.index("region")], must_name = "country", "--segment"
    elif breakage == "weights_total":
        options += ["--weights", ",".join(f"{arm}=60" for arm in arms)]
        must_name = "--weights"
    elif breakage == "weights_unknown":
        options += ["--weights", "control=50,nobody=50"]
        must_name = "--weights"
    elif breakage == "empty_name":
        options[1], must_name = "  ", "--name"
    elif breakage == "long_name":
        options[1], must_name = "n" * 201, "--name"
    elif breakage == "taken_name":
        options[1], must_name = "Fuzz points", "--name"  # a campaign of cli_db
    elif breakage == "long_segment":
        table["region"][cell], must_name = "r" * 201, "column 'region'"
    elif breakage == "nul_cell":
        column = draw(st.sampled_from(["arm", "unit", "region"]))
        table[column][cell] += "\x00"
        must_name = f"column '{column}'"
    if not must_name and "--weights" not in options:
        # Arms too unequal for the equal split assumed without --weights are refused.
        sizes = [table["arm"].count(label) for label in dict.fromkeys(table["arm"])]
        if chisquare(sizes).pvalue < UNEQUAL_SPLIT_P:
            must_name = "--weights"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    if breakage == "repeated_header":
        header[header.index("score")] = "region"
        must_name = "more than once"
    writer.writerow(header)
    for i in range(rows):
        cells = [table[name][i] for name in table]
        if breakage == "ragged" and i == cell:
            cells.append("extra")
            must_name = "not valid CSV"
        writer.writerow(cells)
    text_body = buffer.getvalue()
    if breakage == "latin1":
        text_body = text_body.replace("control", "contrôle")
        options[options.index("--control") + 1] = "contrôle"
        data, must_name = text_body.encode("latin-1", errors="replace"), "not UTF-8"
    else:
        data = text_body.encode(draw(st.sampled_from(["utf-8", "utf-8-sig"])))
    return Experiment(data=data, options=options, rows=rows, metrics=2, segments=1,
                      must_name=must_name)


EXPERIMENT_TABLES = ("campaign", "arm", "arm_allocation", "experiment_metric",
                     "experiment_unit", "experiment_value", "experiment_segment", "audit_log",
                     "config_epoch")


@given(experiments())
@settings(FUZZ, max_examples=IMPORT_EXAMPLES)
def test_import_experiment(cli_db: Engine, tmp_path: Path, experiment: Experiment) -> None:
    _count("experiment files")
    path = tmp_path / "experiment.csv"
    path.write_bytes(experiment.data)
    before = table_counts(cli_db)
    result = run_cli("import", "experiment", str(path), *experiment.options)
    if experiment.must_name:
        assert_clear_refusal(result, must_name=experiment.must_name)
        assert table_counts(cli_db) == before, "a refused experiment changed the database"
        _count("experiment files refused")
        return
    assert result.exit_code == 0, result.output
    campaign_id = int(result.stdout.strip().splitlines()[-1])
    after = table_counts(cli_db)
    with Session(cli_db) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None and campaign.origin == "imported"
        assert campaign.name == experiment.options[1].strip()
        unit = ExperimentUnit.__table__  # type: ignore[attr-defined]
        units = session.execute(select(func.count()).select_from(unit).where(
            unit.c.campaign_id == campaign_id)).scalar_one()
        values, segments = (session.execute(
            select(func.count()).select_from(model.__table__.join(  # type: ignore[attr-defined]
                unit, unit.c.id == model.__table__.c.unit_id))  # type: ignore[attr-defined]
            .where(unit.c.campaign_id == campaign_id)).scalar_one()
            for model in (ExperimentValue, ExperimentSegment))
    assert (units, values, segments) == (experiment.rows, experiment.rows * experiment.metrics,
                                         experiment.rows * experiment.segments)
    untouched = {name for name in after if name not in EXPERIMENT_TABLES}
    assert {name: after[name] for name in untouched} == {name: before[name]
                                                         for name in untouched}
    _count("experiment files imported")


# --- eligibility rules ----------------------------------------------------------------------

BUILT_IN = sorted(CUSTOMER_ATTRIBUTES)
CUSTOM = ["attr.score", "attr.tier", "attr.flag"]
OPERATORS = ["==", "!=", "<", "<=", ">", ">="]


def _quoted(value: str) -> str:
    quote = "'" if "'" not in value or '"' in value else '"'
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


RULE_VALUES = st.one_of(
    st.integers(min_value=-1000, max_value=1000).map(str),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.from_regex(r"-?[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True),
    st.from_regex(r"-?[0-9]{1,25}\.[0-9]{1,25}", fullmatch=True),
    st.sampled_from(["7.5", "0.3", "0.30000000000000001", "7.0", "-3", "12", "2.5",
                     "9007199254740993", "9223372036854775808", "1e3"]),
    st.sampled_from(["true", "false", "gold", "silver", "bronze", "platinum", "web",
                     "call_centre", "north", "a18_24", "consumer"]),
    st.text(max_size=8).map(_quoted),
)


def _comparison(attribute: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(st.sampled_from(OPERATORS), RULE_VALUES).map(
            lambda pair: f"{attribute} {pair[0]} {pair[1]}"),
        st.tuples(st.booleans(), st.lists(RULE_VALUES, min_size=1, max_size=4)).map(
            lambda pair: f"{attribute} {'not in' if pair[0] else 'in'} "
                         f"[{', '.join(pair[1])}]"))


COMPARISONS = st.sampled_from(BUILT_IN + CUSTOM).flatmap(_comparison)
GRAMMAR_RULES = st.recursive(
    COMPARISONS,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" and ", " or ", "  AND ", " or\n"]), inner).map(
            "".join),
        inner.map(lambda rule: f"not ({rule})"),
        inner.map(lambda rule: f"({rule})")),
    max_leaves=8)
NOISY_RULES = st.lists(st.sampled_from(
    ["(", ")", "[", "]", ",", " ", "and", "or", "not", "in", "==", "!=", "<", ">=", "=", "=>",
     "'", '"', "\\", "attr.", "x", "value_tier", "tenure_months", "7", "7.5", "-", "1e9",
     "gold", "true", "\x00", "é", "💥"]), max_size=25).map("".join)
class HugeInt(int):
    """An integer too long for Python to print (over 4,300 digits), with a printable repr
    so that Hypothesis can show an example holding it; the code under test gets a plain
    ``int`` (see :func:`_plain`), which has no such repr."""

    def __repr__(self) -> str:
        return f"HugeInt(<{self.bit_length()} bits>)"


def _plain(data: Any) -> Any:
    if isinstance(data, HugeInt):
        return int(data)
    if isinstance(data, dict):
        return {key: _plain(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_plain(value) for value in data]
    return data


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(),
              st.integers(min_value=0, max_value=3).map(lambda n: HugeInt(10**(4400 + n))),
              st.floats(allow_nan=True), st.text(max_size=10),
              st.sampled_from(["compare", "membership", "not", "and", "or", "==", "in",
                               "value_tier", "attr.x", "gold"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["type", "attribute", "op", "value", "values",
                                         "negated", "item", "items", "decimal", "version",
                                         "tree", "x"]), inner, max_size=5)),
    max_leaves=20)
RULE_DATA = st.one_of(JSON, JSON.map(lambda tree: {"version": 1, "tree": tree}),
                      st.builds(lambda version, tree: {"version": version, "tree": tree},
                                JSON, JSON),
                      GRAMMAR_RULES.map(lambda rule_text: _data_or_none(rule_text)))


def _data_or_none(rule_text: str) -> Any:
    try:
        return parse_rule(rule_text).to_data()
    except InvalidRule:
        return None


CUSTOM_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**53), max_value=2**53),
    st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0.3, 7.5, 7.0, 12, -3, 0.30000000000000004, 1e16, 9007199254740993]),
    st.sampled_from(["gold", "7", "yes", "", "web"]), st.text(max_size=5),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(),
                                                          max_size=1))
CUSTOMERS = st.fixed_dictionaries({
    "segment": st.one_of(st.none(), st.sampled_from(["consumer", "small_business"])),
    "value_tier": st.one_of(st.none(), st.sampled_from(["bronze", "silver", "gold",
                                                        "platinum"])),
    "preferred_channel": st.one_of(st.none(), st.sampled_from(["web", "call_centre"])),
    "region": st.one_of(st.none(), st.sampled_from(["north", "south"])),
    "age_band": st.one_of(st.none(), st.just("a18_24")),
    "tenure_months": st.integers(min_value=0, max_value=2400),
    "points": st.integers(min_value=0, max_value=2**62),
    "lifetime_value_minor": st.integers(min_value=0, max_value=10**15),
    "is_new": st.booleans(),
    "attributes": st.dictionaries(st.sampled_from(["score", "tier", "flag"]), CUSTOM_VALUE,
                                  max_size=3),
})
ANY_MAPPING = st.dictionaries(
    st.one_of(st.sampled_from([*BUILT_IN, "attributes", "attr.score"]), st.text(max_size=5)),
    st.one_of(CUSTOM_VALUE, st.decimals(), st.floats(), st.binary(max_size=3),
              st.dictionaries(st.text(max_size=5), CUSTOM_VALUE, max_size=3)), max_size=8)


def check_rule(rule: Rule, customers: list[dict[str, Any]]) -> None:
    """What every rule the parser accepts must satisfy, whatever it was built from."""
    assert len(rule.source) <= MAX_RULE_LENGTH
    again = parse_rule(rule.source) if rule.source else rule
    assert again == rule, (rule.source, again.source)
    assert Rule.from_data(rule.to_data()) == rule
    for customer in customers:
        assert isinstance(rule.evaluate(customer), bool)


def check_refusal(error: InvalidRule) -> None:
    assert error.errors and all(e.loc == ("rule",) and e.msg for e in error.errors), error


class TestRules:
    @given(st.one_of(st.text(max_size=60), NOISY_RULES, GRAMMAR_RULES),
           st.lists(ANY_MAPPING, max_size=3))
    @settings(FUZZ, max_examples=RULE_EXAMPLES)
    def test_text(self, rule_text: str, customers: list[dict[str, Any]]) -> None:
        _count("rule texts")
        try:
            rule = parse_rule(rule_text)
        except InvalidRule as error:
            check_refusal(error)
            return
        _count("rule texts accepted")
        check_rule(rule, customers)

    @given(RULE_DATA, st.lists(ANY_MAPPING, max_size=3))
    @example({"version": HugeInt(10**5000), "tree": {}}, [])  # found by this test
    @settings(FUZZ, max_examples=RULE_EXAMPLES)
    def test_data(self, data: Any, customers: list[dict[str, Any]]) -> None:
        _count("rule data")
        try:
            rule = Rule.from_data(_plain(data))
        except InvalidRule as error:
            check_refusal(error)
            return
        _count("rule data accepted")
        check_rule(rule, customers)


#: A fixed population with the awkward values; each example adds generated customers.
POPULATION_VALUES = [None, "gold", "7", 7, 7.5, 0.3, True, False, [1, 2], {"a": 1}, 12, -3,
                     "yes", 2**62, 0.30000000000000004, 1e300]


@pytest.fixture
def population(session: Session) -> list[Customer]:
    customers = [Customer(external_id=f"P{index}", tenure_months=index % 30,
                          points=index * 7, lifetime_value_minor=index * 1000,
                          value_tier=[None, "gold", "silver"][index % 3],
                          preferred_channel=[None, "web", "call_centre"][index % 3],
                          is_new=index % 2 == 0,
                          attributes={} if index % 9 == 4 else {"score": value})
                 for index, value in enumerate(POPULATION_VALUES * 2)]
    session.add_all(customers)
    session.flush()
    return customers


@given(GRAMMAR_RULES, st.lists(CUSTOMERS, min_size=1, max_size=4))
@settings(FUZZ, max_examples=SQL_EXAMPLES)
def test_sql_agrees_with_evaluate(session: Session, population: list[Customer], rule_text: str,
                                  generated: list[dict[str, Any]]) -> None:
    """The audience SQL selects exactly the customers ``Rule.evaluate`` accepts."""
    _count("rules compiled to SQL")
    try:
        rule = parse_rule(rule_text)
    except InvalidRule as error:
        check_refusal(error)
        return
    _count("rules compiled to SQL (valid)")
    savepoint = session.begin_nested()
    try:
        extra = [Customer(external_id=f"G{index}", **values)
                 for index, values in enumerate(generated)]
        session.add_all(extra)
        session.flush()
        everyone = [*population, *extra]
        expected = {c.id for c in everyone if rule.evaluate(customer_attributes(c))}
        table = Customer.__table__  # type: ignore[attr-defined]
        dialect = session.get_bind().dialect.name
        selected = {row[0] for row in session.execute(
            select(table.c.id).where(table.c.id.in_([c.id for c in everyone]),
                                     rule_condition(rule, dialect=dialect)))}
        assert selected == expected, (rule.source, [
            (customer_attributes(c), c.id in expected) for c in everyone
            if (c.id in expected) != (c.id in selected)][:3])
    finally:
        savepoint.rollback()


def test_fuzz_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """The properties above ran on enough input, of both kinds (good and bad)."""
    with capsys.disabled():
        print("\nfuzz: " + ", ".join(f"{name}={count}" for name, count in sorted(
            COUNTS.items())))
    for name in ("events files", "experiment files", "rule texts", "rule data",
                 "rules compiled to SQL"):
        assert COUNTS.get(name, 0) >= 50, (name, COUNTS)
    for name in ("events files refused", "events files imported", "experiment files refused",
                 "experiment files imported", "rule texts accepted", "rule data accepted",
                 "rules compiled to SQL (valid)"):
        assert COUNTS.get(name, 0) >= 10, (name, COUNTS)

