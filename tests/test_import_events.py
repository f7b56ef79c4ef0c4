"""`channelshift import events FILE.csv`: all-or-nothing CSV import on a fresh database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, select
from typer.testing import CliRunner, Result

from campaigns.models import ChannelEvent, Conversion, Customer
from campaigns.types import utcnow
from tests.builders import make_import_world
from tests.campaigns.test_events import assign, loyalty_arm, running_campaign
from tests.scratch import cli_database
from web.cli import app

HEADER = "type,event_id,customer_id,channel,stage,occurred_at,kind,cost_minor,revenue_minor," \
         "margin_minor"


@pytest.fixture
def cli_db(database, tmp_path, monkeypatch) -> Iterator[Engine]:
    """A migrated, empty database of this run's backend that the CLI is pointed at.

    Like tests/test_cli.py's ``cli_env``, but the CLI runs in this process, so the cached
    settings and engines are reset around the test.
    """
    with cli_database(database, tmp_path, monkeypatch, prefix="cs_import") as scratch:
        engine = scratch.engine
        with Session(engine) as session:
            make_import_world(session)
            session.commit()
        yield engine


def write_csv(tmp_path: Path, *rows: str, header: str = HEADER, name: str = "events.csv"
              ) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def run_import(path: Path, *options: str) -> Result:
    return CliRunner().invoke(app, ["import", "events", str(path), *options])


def counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        return tuple(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                     for table in ("channel_event", "conversion", "customer"))  # type: ignore[return-value]


def when(minutes_ago: int = 1) -> str:
    return (utcnow() - timedelta(minutes=minutes_ago)).isoformat()


GOOD_ROWS = (
    f"interaction,i1,C1,web,after_sale,{when()},,,,",
    f",i2,C2,call_centre,after_sale,{when()},complaint,75,,",
    f"conversion,c1,C1,web,,{when()},purchase,,1999,500",
)


class TestHappyPath:
    def test_imports_every_row(self, cli_db: Engine, tmp_path: Path) -> None:
        result = run_import(write_csv(tmp_path, *GOOD_ROWS))
        assert result.exit_code == 0, result.output
        assert "3 rows, 3 accepted, 0 duplicates" in result.stdout
        assert counts(cli_db) == (2, 1, 2)
        with Session(cli_db) as session:
            events = session.exec(select(ChannelEvent.client_event_id, ChannelEvent.kind,
                                         ChannelEvent.cost_minor)
                                  .order_by(ChannelEvent.client_event_id)).all()
            sale = session.exec(select(Conversion)).one()
        # an empty type is an interaction; an empty cost is the channel's cost at the stage
        assert events == [("i1", "interaction", 40), ("i2", "complaint", 75)]
        assert (sale.revenue_minor, sale.margin_minor) == (1999, 500)

    def test_chunks_inside_one_transaction(self, cli_db: Engine, tmp_path: Path) -> None:
        rows = [f"interaction,e{n},C{n % 3},web,after_sale,{when()},,,," for n in range(7)]
        result = run_import(write_csv(tmp_path, *rows), "--batch-size", "2")
        assert result.exit_code == 0, result.output
        assert "7 rows, 7 accepted" in result.stdout
        assert counts(cli_db) == (7, 0, 3)

    def test_bom_crlf_blank_lines_and_column_order(self, cli_db: Engine, tmp_path: Path
                                                   ) -> None:
        path = tmp_path / "excel.csv"
        path.write_bytes(("\ufeffevent_id,occurred_at,customer_id,stage,channel\r\n"
                          f"i1,{when()},C1,after_sale,web\r\n\r\n"
                          f"i2,{when()},C1,after_sale,app\r\n").encode())
        result = run_import(path)
        assert result.exit_code == 0, result.output
        assert counts(cli_db) == (2, 0, 1)

    def test_earns_loyalty_points_like_the_api(self, cli_db: Engine, tmp_path: Path) -> None:
        with Session(cli_db) as session:
            campaign = running_campaign(session, arm=loyalty_arm(multiplier_bp=20000))
            assign(session, campaign, customer="C1")
            session.commit()
        result = run_import(write_csv(tmp_path, f"conversion,c1,C1,web,,{when()},,,1000,"))
        assert result.exit_code == 0, result.output
        assert "200 loyalty points" in result.stdout
        with Session(cli_db) as session:
            assert session.exec(select(Customer.points)
                                .where(Customer.external_id == "C1")).one() == 200


class TestBadRows:
    def test_bad_rows_named_by_line_and_column_and_nothing_written(
            self, cli_db: Engine, tmp_path: Path) -> None:
        path = write_csv(tmp_path,
                         f"interaction,i1,C1,web,after_sale,{when()},,,,",
                         "interaction,i2,C2,web,after_sale,2026-01-31T09:00:00,,,,",
                         f"conversion,c1,C3,,,{when()},,,12.50,",
                         f"interaction,i3,C4,fax,after_sale,{when()},,,,")
        result = run_import(path)
        assert result.exit_code == 1
        assert "line 3, column occurred_at: occurred_at must be an ISO-8601" in result.stderr
        assert "line 4, column revenue_minor: revenue_minor must be a whole number of minor " \
               "units (cents), e.g. 1999 for 19.99; got '12.50'" in result.stderr
        assert "line 5, column channel: unknown channel 'fax'" in result.stderr
        assert "3 problem(s) in 4 row(s); nothing was imported" in result.stderr
        assert counts(cli_db) == (0, 0, 0)

    def test_listing_stops_after_twenty(self, cli_db: Engine, tmp_path: Path) -> None:
        rows = [f"interaction,e{n},C1,fax,after_sale,{when()},,,," for n in range(25)]
        result = run_import(write_csv(tmp_path, *rows))
        assert result.exit_code == 1
        assert "line 21, column channel" in result.stderr
        assert "line 22," not in result.stderr
        assert "25 problem(s) in 25 row(s) (the first 20 are listed)" in result.stderr

    def test_event_id_repeated_in_the_file(self, cli_db: Engine, tmp_path: Path) -> None:
        result = run_import(write_csv(tmp_path, f"interaction,e1,C1,web,after_sale,{when()},,,,",
                                      f"interaction,e2,C1,web,after_sale,{when()},,,,",
                                      f"conversion,e1,C1,,,{when()},,,100,"))
        assert result.exit_code == 1
        assert "line 4, column event_id: event_id 'e1' is used again; it is already the id " \
               "of line 2" in result.stderr
        assert counts(cli_db) == (0, 0, 0)

    def test_row_with_missing_fields(self, cli_db: Engine, tmp_path: Path) -> None:
        result = run_import(write_csv(tmp_path, "interaction,e1,C1,web"))
        assert result.exit_code == 1
        assert "line 2, column -: the row has 4 field(s) but the header has 10" in result.stderr

    @pytest.mark.parametrize(("header", "message"), [
        pytest.param("event_id,customer_id,channel,stage", "line 1, column occurred_at: "
                     "missing column 'occurred_at'", id="missing_column"),
        pytest.param(HEADER + ",price", "line 1, column price: unknown column 'price'",
                     id="unknown_column"),
    ])
    def test_bad_header(self, cli_db: Engine, tmp_path: Path, header: str, message: str
                        ) -> None:
        result = run_import(write_csv(tmp_path, "x,y,z,w", header=header))
        assert result.exit_code == 1
        assert message in result.stderr

    def test_empty_file(self, cli_db: Engine, tmp_path: Path) -> None:
        path = tmp_path / "empty.csv"
        path.write_text("")
        result = run_import(path)
        assert result.exit_code == 1
        assert "the file is empty" in result.stderr


class TestReimport:
    def test_duplicates_on_reimport(self, cli_db: Engine, tmp_path: Path) -> None:
        path = write_csv(tmp_path, *GOOD_ROWS)
        assert run_import(path).exit_code == 0
        again = run_import(path)
        assert again.exit_code == 0, again.output
        assert "3 rows, 0 accepted, 3 duplicates" in again.stdout
        assert counts(cli_db) == (2, 1, 2)

    def test_partly_imported_file(self, cli_db: Engine, tmp_path: Path) -> None:
        run_import(write_csv(tmp_path, GOOD_ROWS[0], name="first.csv"))
        result = run_import(write_csv(tmp_path, *GOOD_ROWS))
        assert "3 rows, 2 accepted, 1 duplicates" in result.stdout
