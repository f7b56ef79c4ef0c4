"""Importing a finished experiment: what is written, what is refused, and the command line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine, func, select, text
from sqlmodel import Session
from typer.testing import CliRunner, Result

from campaigns.models import (
    Arm,
    ArmAllocation,
    AuditLog,
    Campaign,
    ExperimentMetric,
    ExperimentSegment,
    ExperimentUnit,
    ExperimentValue,
)
from seeds.experiments import (
    MAX_ARMS,
    ExperimentImportRejected,
    ExperimentSpec,
    ImportResult,
    build_spec,
    import_experiment,
    rounded_shares,
)
from tests.datafiles import shared_data
from tests.scratch import cli_database
from web.cli import app

ARTEA = shared_data("artea-a_b-experiment.csv")

HEADER = "user,arm,bought,spend,spend_before,region,score"
ROWS = (
    "u1,control,0,10.5,9,north,0.10",
    "u2,coupon,1,22.0,12,south,0.80",
    "u3,control,1,15.0,14,south,0.30",
    "u4,coupon,0,0,3,north,0.20",
    "u5,coupon,1,31.25,20,north,0.95",
    "u6,control,0,4.0,5,north,0.05",
    "u7,coupon,1,18.0,11,south,0.60",
    "u8,coupon,0,2.5,1,south,0.15",
)
TABLES = (Campaign, Arm, ArmAllocation, ExperimentMetric, ExperimentUnit, ExperimentValue,
          ExperimentSegment, AuditLog)


def write_csv(tmp_path: Path, *rows: str, header: str = HEADER, name: str = "experiment.csv",
              bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes(("\ufeff" if bom else "").encode()
                     + ("\n".join([header, *rows]) + "\n").encode())
    return path


def spec(**overrides: Any) -> ExperimentSpec:
    options: dict[str, Any] = {
        "name": "Coupon test", "arm_column": "arm", "control": "control",
        "metrics": ["bought:binary", "spend:continuous"],
        "covariates": ["spend=spend_before"], "id_column": "user", "segments": ["region"],
        "score_column": "score"}
    options.update(overrides)
    return build_spec(**options)


def footprint(session: Session) -> dict[str, int]:
    """Rows per table the importer writes to, to show that a refusal wrote nothing."""
    return {model.__tablename__: session.execute(select(func.count()).select_from(model)
                                                 ).scalar_one()
            for model in TABLES}


def rejected(session: Session, source: Path | pd.DataFrame, experiment: ExperimentSpec
             ) -> list[str]:
    """The messages of a refused import, after checking that nothing was written."""
    before = footprint(session)
    with pytest.raises(ExperimentImportRejected) as caught:
        import_experiment(session, source, experiment)
    assert footprint(session) == before
    assert "nothing was imported" in caught.value.message
    return [error.msg for error in caught.value.errors]


# --------------------------------------------------------------------------- options


class TestBuildSpec:
    def test_parses_every_option(self) -> None:
        parsed = build_spec(name=" Coupon ", arm_column="arm", control="0",
                            metrics=["a:binary", "b:c:continuous"], covariates=["b:c=pre"],
                            segments=["region"], weights="0=20, 1=80")
        assert parsed.name == "Coupon"
        assert [(m.column, m.kind.value, m.covariate) for m in parsed.metrics] == [
            ("a", "binary", None), ("b:c", "continuous", "pre")]
        assert parsed.weights == {"0": 20, "1": 80}

    @pytest.mark.parametrize(("options", "message"), [
        ({"metrics": ["bought"]}, "--metric 'bought': expected COLUMN:KIND"),
        ({"metrics": ["bought:count"]}, "KIND one of binary, continuous"),
        ({"covariates": ["revenue=pre"]}, "--covariate 'revenue=pre': 'revenue' is not a "
                                          "metric given with --metric (given: bought, spend)"),
        ({"covariates": ["spend"]}, "--covariate 'spend': expected METRIC=COLUMN"),
        ({"covariates": ["spend=a", "spend=b"]}, "metric 'spend' already has the covariate"),
        ({"weights": "control=50,coupon"}, "--weights 'control=50,coupon': expected LABEL=PCT"),
        ({"weights": "control=50.5,coupon=49.5"}, "whole percentages, got 'control=50.5'"),
        ({"weights": "control=50,control=50"}, "arm 'control' is given twice"),
    ])
    def test_malformed_option(self, options: dict[str, Any], message: str) -> None:
        with pytest.raises(ExperimentImportRejected) as caught:
            spec(**options)
        assert any(message in error.msg for error in caught.value.errors), caught.value.errors


class TestRoundedShares:
    @pytest.mark.parametrize(("counts", "weights"), [
        ([2498, 2502], [50, 50]),
        ([3, 5], [38, 62]),
        ([1, 1, 1], [34, 33, 33]),
        ([1, 999], [1, 99]),  # every arm keeps at least 1%
        ([0, 10], [1, 99]),
        ([1] * MAX_ARMS, [1] * MAX_ARMS),
    ])
    def test_whole_percentages_adding_to_100(self, counts: list[int], weights: list[int]
                                             ) -> None:
        assert rounded_shares(counts) == weights

    @pytest.mark.parametrize("counts", [[], [0, 0], [1] * (MAX_ARMS + 1), [-1, 5]])
    def test_impossible(self, counts: list[int]) -> None:
        with pytest.raises(ValueError, match="counts"):
            rounded_shares(counts)


# --------------------------------------------------------------------------- writing


class TestImport:
    def test_writes_an_ended_imported_campaign(self, session: Session, tmp_path: Path) -> None:
        result = import_experiment(session, write_csv(tmp_path, *ROWS), spec(), actor="test")
        assert result == ImportResult(campaign_id=result.campaign_id, name="Coupon test", rows=8,
                                      arm_counts={"control": 3, "coupon": 5},
                                      weights={"control": 38, "coupon": 62})
        campaign = session.get(Campaign, result.campaign_id)
        assert campaign is not None
        assert (campaign.origin, campaign.status, campaign.goal_id) == ("imported", "ended", None)
        assert "experiment.csv: 8 units" in campaign.description
        arms = session.execute(select(Arm.name, Arm.is_control, Arm.weight, Arm.incentive_id)
                               .where(Arm.campaign_id == campaign.id).order_by(Arm.position)
                               ).all()
        assert arms == [("control", True, 38, None), ("coupon", False, 62, None)]
        # The split is unknown: no allocation period, so the SRM check assumes equal arms.
        assert footprint_of(session, ArmAllocation, campaign.id) == 0
        metrics = session.execute(select(ExperimentMetric.name, ExperimentMetric.kind,
                                         ExperimentMetric.source_column,
                                         ExperimentMetric.covariate_column)
                                  .where(ExperimentMetric.campaign_id == campaign.id)
                                  .order_by(ExperimentMetric.position)).all()
        assert metrics == [("bought", "binary", "bought", None),
                           ("spend", "continuous", "spend", "spend_before")]

    def test_every_cell_lands_on_its_unit(self, session: Session, tmp_path: Path) -> None:
        result = import_experiment(session, write_csv(tmp_path, *ROWS), spec())
        units = {row.unit_key: row for row in session.execute(
            select(ExperimentUnit.id, ExperimentUnit.unit_key, ExperimentUnit.row_number,
                   ExperimentUnit.score, Arm.name.label("arm"))
            .join(Arm, Arm.id == ExperimentUnit.arm_id)
            .where(ExperimentUnit.campaign_id == result.campaign_id))}
        assert sorted(units) == [f"u{i}" for i in range(1, 9)]
        values = {(row.unit_id, row.name): (row.value, row.pre_value) for row in session.execute(
            select(ExperimentValue.unit_id, ExperimentMetric.name, ExperimentValue.value,
                   ExperimentValue.pre_value)
            .join(ExperimentMetric, ExperimentMetric.id == ExperimentValue.metric_id))}
        regions = dict(session.execute(select(ExperimentSegment.unit_id, ExperimentSegment.value)
                                       .where(ExperimentSegment.name == "region")).all())
        for row_number, line in enumerate(ROWS, start=1):
            key, arm, bought, spend, before, region, score = line.split(",")
            unit = units[key]
            assert (unit.row_number, unit.arm, unit.score) == (row_number, arm, float(score))
            assert values[(unit.id, "bought")] == (float(bought), None)
            assert values[(unit.id, "spend")] == (float(spend), float(before))
            assert regions[unit.id] == region

    def test_row_numbers_are_the_keys_without_an_id_column(self, session: Session,
                                                           tmp_path: Path) -> None:
        result = import_experiment(session, write_csv(tmp_path, *ROWS),
                                   spec(id_column=None, segments=[], score_column=None))
        keys = session.execute(select(ExperimentUnit.unit_key, ExperimentUnit.row_number,
                                      ExperimentUnit.score)
                               .where(ExperimentUnit.campaign_id == result.campaign_id)
                               .order_by(ExperimentUnit.row_number)).all()
        assert keys == [(str(n), n, None) for n in range(1, 9)]

    def test_planned_weights_become_the_allocation(self, session: Session, tmp_path: Path
                                                   ) -> None:
        result = import_experiment(session, write_csv(tmp_path, *ROWS),
                                   spec(weights="coupon=60,control=40"))
        assert result.weights == result.planned_weights == {"control": 40, "coupon": 60}
        allocation = session.execute(
            select(Arm.name, ArmAllocation.period, ArmAllocation.weight)
            .join(Arm, Arm.id == ArmAllocation.arm_id)
            .where(ArmAllocation.campaign_id == result.campaign_id).order_by(Arm.position)
        ).all()
        assert allocation == [("control", 1, 40), ("coupon", 1, 60)]

    def test_records_an_audit_entry(self, session: Session, tmp_path: Path) -> None:
        result = import_experiment(session, write_csv(tmp_path, *ROWS), spec(), actor="analyst")
        entry = session.execute(select(AuditLog).where(AuditLog.entity_id == result.campaign_id,
                                                       AuditLog.action == "campaign.import")
                                ).scalar_one()
        assert (entry.actor, entry.entity_type) == ("analyst", "campaign")
        assert entry.details["source"] == "experiment.csv"
        assert entry.details["arm_counts"] == {"control": 3, "coupon": 5}
        assert entry.details["metrics"][1] == {"column": "spend", "kind": "continuous",
                                               "covariate": "spend_before"}

    def test_bom_crlf_spaces_and_blank_lines(self, session: Session, tmp_path: Path) -> None:
        path = tmp_path / "excel.csv"
        path.write_bytes(("\ufeff user , arm,bought,spend,spend_before,region,score\r\n"
                          + "\r\n".join(ROWS[:4]) + "\r\n\r\n" + "\r\n".join(ROWS[4:])
                          + "\r\n").encode())
        result = import_experiment(session, path, spec())
        assert result.rows == 8
        assert result.arm_counts == {"control": 3, "coupon": 5}

    def test_arms_in_natural_label_order_after_control(self, session: Session, tmp_path: Path
                                                       ) -> None:
        rows = [f"{n},{arm},{n % 2}" for n, arm in enumerate(
            ["10", "2", "0", "2", "10", "0", "b", "0"], start=1)]
        result = import_experiment(session, write_csv(tmp_path, *rows, header="id,arm,bought"),
                                   spec(control="0", metrics=["bought:binary"], covariates=[],
                                        segments=[], score_column=None, id_column="id"))
        assert list(result.arm_counts) == ["0", "2", "10", "b"]
        assert sum(result.weights.values()) == 100

    def test_data_frame_source(self, session: Session) -> None:
        frame = pd.DataFrame({"arm": ["a", "b", "a", "b"], "won": [0, 1, 1, 1],
                              "spend": [1.5, 2.0, None, 4.0]})
        messages = rejected(session, frame, spec(
            control="a", metrics=["won:binary", "spend:continuous"], covariates=[],
            id_column=None, segments=[], score_column=None))
        assert messages == ["column 'spend' (--metric): 1 empty cell(s) at row 3; every cell "
                            "of a used column needs a value"]
        frame.loc[2, "spend"] = 3.0
        result = import_experiment(session, frame, spec(
            control="a", metrics=["won:binary", "spend:continuous"], covariates=[],
            id_column=None, segments=[], score_column=None))
        assert result.arm_counts == {"a": 2, "b": 2}

    def test_five_thousand_rows_in_seconds(self, session: Session) -> None:
        started = time.perf_counter()
        result = import_experiment(session, ARTEA, spec(
            name="Artea", arm_column="test_coupon", control="0",
            metrics=["trans_after:continuous", "revenue_after:continuous"],
            covariates=["revenue_after=num_past_purch"], id_column="id",
            segments=["channel_acq"], score_column=None))
        elapsed = time.perf_counter() - started
        assert result.rows == 5000
        assert result.arm_counts == {"0": 2498, "1": 2502}
        assert footprint_of(session, ExperimentValue, result.campaign_id) == 10_000
        assert elapsed < 30, f"5,000 rows took {elapsed:.1f} s"


def footprint_of(session: Session, model: type[Any], campaign_id: int) -> int:
    """Rows of ``model`` that belong to one campaign."""
    if model is ExperimentValue:
        query = (select(func.count()).select_from(ExperimentValue)
                 .join(ExperimentUnit, ExperimentUnit.id == ExperimentValue.unit_id)
                 .where(ExperimentUnit.campaign_id == campaign_id))
    else:
        query = select(func.count()).select_from(model).where(model.campaign_id == campaign_id)
    return session.execute(query).scalar_one()


# --------------------------------------------------------------------------- refusals


class TestRejected:
    def test_missing_file(self, session: Session, tmp_path: Path) -> None:
        assert rejected(session, tmp_path / "nope.csv", spec()) == [
            f"file '{tmp_path / 'nope.csv'}' does not exist or is not a file"]

    def test_empty_file(self, session: Session, tmp_path: Path) -> None:
        path = tmp_path / "empty.csv"
        path.write_text("")
        assert rejected(session, path, spec()) == [
            "empty.csv: the file is empty; it needs a header row"]

    def test_header_only(self, session: Session, tmp_path: Path) -> None:
        assert rejected(session, write_csv(tmp_path), spec()) == [
            "the file has a header but no data rows"]

    def test_not_utf8(self, session: Session, tmp_path: Path) -> None:
        path = tmp_path / "latin1.csv"
        path.write_bytes((HEADER + "\n" + ROWS[0].replace("north", "Zürich") + "\n")
                         .encode("latin-1"))
        [message] = rejected(session, path, spec())
        assert message.startswith("latin1.csv: the file is not UTF-8 text")

    def test_ragged_row(self, session: Session, tmp_path: Path) -> None:
        [message] = rejected(session, write_csv(tmp_path, ROWS[0], ROWS[1] + ",extra"), spec())
        assert message.startswith("experiment.csv: not valid CSV")
        assert "line 3" in message

    def test_short_row_has_empty_cells(self, session: Session, tmp_path: Path) -> None:
        messages = rejected(session, write_csv(tmp_path, ROWS[0], "u2,coupon,1,22.0,12"), spec())
        assert [message.split(";")[0] for message in messages] == [
            "column 'region' (--segment): 1 empty cell(s) at row 2",
            "column 'score' (--score): 1 empty cell(s) at row 2"]

    def test_column_named_twice(self, session: Session, tmp_path: Path) -> None:
        assert rejected(session, write_csv(tmp_path, *ROWS, header=HEADER + ",arm"), spec()) == [
            "experiment.csv: the header names a column more than once: 'arm'"]

    def test_unknown_columns_list_the_available_ones(self, session: Session, tmp_path: Path
                                                     ) -> None:
        available = "user, arm, bought, spend, spend_before, region, score"
        assert rejected(session, write_csv(tmp_path, *ROWS), spec(
            arm_column="group", metrics=["bought:binary", "revenue:continuous"],
            covariates=["revenue=revenue_before"], segments=["region", "city"])) == [
            f"--arm-column: no column 'group' in the file; the columns are: {available}",
            f"--metric: no column 'revenue' in the file; the columns are: {available}",
            f"--covariate: no column 'revenue_before' in the file; the columns are: "
            f"{available}",
            f"--segment: no column 'city' in the file; the columns are: {available}"]

    def test_control_label_not_present(self, session: Session, tmp_path: Path) -> None:
        assert rejected(session, write_csv(tmp_path, *ROWS), spec(control="holdout")) == [
            "--control: no row of column 'arm' has the label 'holdout'; the labels are "
            "'control', 'coupon'"]

    def test_fewer_than_two_arms(self, session: Session, tmp_path: Path) -> None:
        rows = [line.replace("coupon", "control") for line in ROWS]
        assert rejected(session, write_csv(tmp_path, *rows), spec()) == [
            "column 'arm' (--arm-column): only the label 'control' occurs; an experiment needs "
            "a control and at least one other arm"]

    def test_too_many_arms(self, session: Session, tmp_path: Path) -> None:
        rows = [f"u{n},{'control' if n == 0 else f'arm{n}'},1,1,1,x,0" for n in range(102)]
        [message] = rejected(session, write_csv(tmp_path, *rows), spec())
        assert message.startswith("column 'arm' (--arm-column): 102 different labels; at "
                                  f"most {MAX_ARMS} arms")

    def test_binary_metric_with_other_values(self, session: Session, tmp_path: Path) -> None:
        rows = list(ROWS)
        rows[2] = rows[2].replace("control,1,", "control,2,")
        rows[6] = rows[6].replace("coupon,1,", "coupon,0.5,")
        assert rejected(session, write_csv(tmp_path, *rows), spec()) == [
            "column 'bought' (--metric bought:binary): 2 value(s) are not 0 or 1, at rows "
            "3 ('2'), 7 ('0.5'); import it as continuous or recode it"]

    def test_artea_transactions_are_counts_not_binary(self, session: Session) -> None:
        [message] = rejected(session, ARTEA, spec(
            name="Artea", arm_column="test_coupon", control="0",
            metrics=["trans_after:binary"], covariates=[], id_column="id", segments=[],
            score_column=None))
        assert message.startswith("column 'trans_after' (--metric trans_after:binary): 97 "
                                  "value(s) are not 0 or 1, at rows 34 ('2'), 43 ('2')")

    def test_non_numeric_values(self, session: Session, tmp_path: Path) -> None:
        rows = list(ROWS)
        rows[1] = rows[1].replace("22.0", "22,0").replace(",12,", ",n/a,")
        rows = [rows[0], rows[1].replace("22,0", '"22,0"'), *rows[2:]]
        rows[4] = rows[4].replace("0.95", "inf")
        assert rejected(session, write_csv(tmp_path, *rows), spec()) == [
            "column 'spend' (--metric): 1 value(s) are not finite numbers, at row 2 ('22,0')",
            "column 'spend_before' (--covariate): 1 value(s) are not finite numbers, at row 2 "
            "('n/a')",
            "column 'score' (--score): 1 value(s) are not finite numbers, at row 5 ('inf')"]

    def test_empty_cells(self, session: Session, tmp_path: Path) -> None:
        rows = list(ROWS)
        rows[3] = "u4,coupon,,0,3,north,0.20"
        rows[5] = "u6,,0,4.0,5, ,0.05"
        assert rejected(session, write_csv(tmp_path, *rows), spec()) == [
            "column 'arm' (--arm-column): 1 empty cell(s) at row 6; every cell of a used "
            "column needs a value",
            "column 'bought' (--metric): 1 empty cell(s) at row 4; every cell of a used column "
            "needs a value",
            "column 'region' (--segment): 1 empty cell(s) at row 6; every cell of a used "
            "column needs a value"]

    def test_duplicate_ids(self, session: Session, tmp_path: Path) -> None:
        rows = list(ROWS)
        rows[4] = rows[4].replace("u5,", "u2,")
        rows[7] = rows[7].replace("u8,", "u2,")
        rows[6] = rows[6].replace("u7,", "u1,")
        assert rejected(session, write_csv(tmp_path, *rows), spec()) == [
            "column 'user' (--id-column): 2 id(s) are used by more than one row: 'u1' at rows "
            "1, 7; 'u2' at rows 2, 5, 8"]

    def test_duplicate_campaign_name(self, session: Session, tmp_path: Path) -> None:
        first = import_experiment(session, write_csv(tmp_path, *ROWS), spec())
        assert rejected(session, write_csv(tmp_path, *ROWS), spec()) == [
            f"--name: a campaign named 'Coupon test' already exists (id {first.campaign_id})"]

    def test_option_conflicts(self, session: Session, tmp_path: Path) -> None:
        assert rejected(session, write_csv(tmp_path, *ROWS), spec(
            name=" ", metrics=["bought:binary", "arm:continuous", "bought:continuous"],
            covariates=[], segments=["region", "region"])) == [
            "--name: the campaign needs a name",
            "--metric: column 'bought' is given twice",
            "--segment: column 'region' is given twice",
            "--metric: 'arm' is the arm column; it cannot also be an outcome"]

    @pytest.mark.parametrize(("weights", "message"), [
        ("control=50,coupon=40", "--weights: the percentages add up to 90, not 100"),
        ("control=50,promo=50", "--weights: no arm is labelled 'promo'; the arms are "
                                "'control', 'coupon'"),
        ("control=100", "--weights: no weight for arm(s) 'coupon'; give one for every arm"),
        ("control=100,coupon=0", "--weights: arm(s) 'coupon' have units but a planned weight "
                                 "of 0"),
    ])
    def test_weights_that_do_not_fit(self, session: Session, tmp_path: Path, weights: str,
                                     message: str) -> None:
        assert message in rejected(session, write_csv(tmp_path, *ROWS), spec(weights=weights))

    def test_too_long_values(self, session: Session, tmp_path: Path) -> None:
        rows = [ROWS[0], ROWS[1].replace("south", "s" * 201), *ROWS[2:]]
        assert rejected(session, write_csv(tmp_path, *rows), spec()) == [
            "column 'region' (--segment): values longer than 200 characters at row 2"]

    def test_a_failure_while_writing_leaves_nothing(self, session: Session, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """The caller's rollback undoes a write that fails half way (here: the segments)."""
        import seeds.experiments as experiments

        real_insert = experiments._insert_batches

        def failing_insert(session: Session, table: Any, rows: Any, **kwargs: Any) -> None:
            if table.name == "experiment_segment":
                raise RuntimeError("the database went away")
            real_insert(session, table, rows, **kwargs)

        monkeypatch.setattr(experiments, "_insert_batches", failing_insert)
        before = footprint(session)
        savepoint = session.begin_nested()
        with pytest.raises(RuntimeError, match="went away"):
            import_experiment(session, write_csv(tmp_path, *ROWS), spec())
        savepoint.rollback()
        assert footprint(session) == before


# --------------------------------------------------------------------------- command line


@pytest.fixture
def cli_db(database: tuple[str, str | None], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A migrated, empty database of this run's backend that the in-process CLI uses."""
    with cli_database(database, tmp_path, monkeypatch, prefix="cs_experiment") as scratch:
        yield scratch.engine


def run_import(path: Path, *options: str) -> Result:
    return CliRunner().invoke(app, ["import", "experiment", str(path), *options])


def campaign_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM campaign")).scalar_one()


ARTEA_OPTIONS = ("--name", "Artea coupon", "--arm-column", "test_coupon", "--control", "0",
                 "--metric", "trans_after:continuous", "--metric", "revenue_after:continuous",
                 "--covariate", "revenue_after=num_past_purch", "--segment", "channel_acq",
                 "--id-column", "id")


class TestCommandLine:
    def test_imports_and_prints_the_campaign_id(self, cli_db: Engine) -> None:
        result = run_import(ARTEA, *ARTEA_OPTIONS, "--weights", "0=50,1=50")
        assert result.exit_code == 0, result.output
        with Session(cli_db) as session:
            campaign = session.execute(select(Campaign)).scalar_one()
            units = footprint_of(session, ExperimentUnit, campaign.id)
        assert result.stdout.strip() == str(campaign.id)
        assert "5,000 units in arms 0 (2,498, control, weight 50%), 1 (2,502, weight 50%)" \
            in result.stderr
        assert units == 5000

    def test_refusal_lists_problems_and_writes_nothing(self, cli_db: Engine) -> None:
        options = [option.replace("trans_after:continuous", "trans_after:binary")
                   for option in ARTEA_OPTIONS]
        result = run_import(ARTEA, *options, "--segment", "region")
        assert result.exit_code == 1
        assert "--segment: no column 'region' in the file" in result.stderr
        assert "nothing was imported" in result.stderr
        result = run_import(ARTEA, *options)
        assert result.exit_code == 1
        assert "column 'trans_after' (--metric trans_after:binary): 97 value(s) are not 0 or 1"\
            in result.stderr
        assert result.stdout == ""
        assert campaign_count(cli_db) == 0

    def test_bad_option_syntax(self, cli_db: Engine, tmp_path: Path) -> None:
        result = run_import(tmp_path / "missing.csv", *ARTEA_OPTIONS, "--covariate", "x=y")
        assert result.exit_code == 1
        assert "--covariate 'x=y': 'x' is not a metric given with --metric" in result.stderr
        result = run_import(tmp_path / "missing.csv", *ARTEA_OPTIONS)
        assert result.exit_code == 1
        assert "missing.csv' does not exist" in result.stderr
        assert campaign_count(cli_db) == 0
