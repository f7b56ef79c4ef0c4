"""Importing a finished experiment that was run elsewhere, all or nothing.

An analyst brings one CSV row per unit (usually a customer): the unit's arm label, its
outcomes and optionally an id, pre-period covariates (for CUPED), segment columns and a
targeting score. :func:`import_experiment` turns it into an *ended* campaign with origin
``'imported'`` (no migration goal), whose report :mod:`analytics.imported` computes with
the same statistics and result shapes as a live campaign's.

Reading
    pandas reads every cell as text (``dtype=str``), UTF-8 with or without a byte-order
    mark. Blank lines are skipped, so "row N" always means the N-th *data* row (1-based,
    header not counted); without an id column, N is the unit's key.

Checking
    Everything is checked before anything is written: the options, the column names, empty
    cells, numbers, the 0/1 values of binary metrics, the arms, duplicate ids, the weights
    and the campaign name. Problems are collected (per column, the first offending rows
    are listed) and raised together as one :class:`ExperimentImportRejected`.

Writing
    Inside the caller's transaction: the function flushes and never commits, so a failure
    anywhere leaves no campaign behind once the caller rolls back. Units, values and
    segment values go in with Core ``insert()`` batches.

Arm weights
    Arms are named by the arm column's labels; the control arm comes first, the others
    follow in natural order of their labels. With ``--weights`` the given percentages are
    stored as the arms' weights *and* as the campaign's first allocation period: they are
    the planned split, and the sample-ratio check tests the observed counts against them.
    Without it the file does not say what split was intended. Arms whose sizes rule out an
    equal split (chi-square p below :data:`UNEQUAL_SPLIT_P`) are then refused, naming
    ``--weights``: testing them against an equal split would report a false mismatch, and
    testing them against their own observed shares could never fail. Otherwise each
    arm's weight is its observed share rounded by the largest-remainder method (every arm
    at least 1%, summing to 100; always possible because at most 100 arms are accepted),
    shown for information only: no allocation period is recorded, and the sample-ratio
    check tests against equal allocation, which the report states as an assumption.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from sqlalchemy import Table, insert, select
from sqlmodel import Session

from campaigns.assignment import new_salt
from campaigns.errors import FieldError, ValidationFailed
from campaigns.models import (
    Arm,
    ArmAllocation,
    Campaign,
    CampaignOrigin,
    CampaignStatus,
    ExperimentMetric,
    ExperimentMetricKind,
    ExperimentSegment,
    ExperimentUnit,
    ExperimentValue,
)
from campaigns.services.audit import record_audit

__all__ = [
    "BATCH_SIZE",
    "MAX_ARMS",
    "ExperimentImportRejected",
    "ExperimentSpec",
    "ImportResult",
    "MetricSpec",
    "ProgressCallback",
    "build_spec",
    "import_experiment",
    "read_experiment_csv",
    "rounded_shares",
]

BATCH_SIZE = 5_000
"""Rows per Core ``insert()`` (all batches share one transaction)."""

MAX_ARMS = 100
"""Whole-percent weights give every arm at least 1% only up to 100 arms."""

MAX_LISTED_ROWS = 5
"""Offending rows quoted per problem; the message also says how many there are."""

WEIGHT_TOTAL = 100

UNEQUAL_SPLIT_P = 0.001
"""Without --weights, arms whose sizes an equal split explains with a chi-square p-value
below this are refused: the report's sample ratio threshold
(``analytics.stats.SRM_THRESHOLD``), so every import the report would call a mismatch
against an equal split is asked for its planned split instead."""

# Column widths of the schema (campaigns/models.py), checked before writing.
_MAX_CAMPAIGN_NAME = 200
_MAX_ARM_NAME = 100
_MAX_METRIC_NAME = 100
_MAX_UNIT_KEY = 200
_MAX_SEGMENT_NAME = 100
_MAX_SEGMENT_VALUE = 200

_WHOLE_PERCENT = re.compile(r"\d{1,3}")
NUL = "\x00"

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(phase, done, total)``; the phase is ``"checking"`` or ``"importing"``."""


class ExperimentImportRejected(ValidationFailed):
    """The options or the file are not acceptable; nothing was written.

    Each field error's ``loc`` is the option (``--metric``) or the column it concerns and
    its ``msg`` is a complete sentence naming the option, column and rows.
    """

    def __init__(self, errors: Sequence[FieldError]):
        count = len(errors)
        super().__init__(f"{count} problem(s) found; nothing was imported", errors,
                         code="experiment_import_rejected")


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class MetricSpec:
    """An outcome column, its kind and (for CUPED) the column of its pre-period covariate."""

    column: str
    kind: ExperimentMetricKind
    covariate: str | None = None


@dataclass(frozen=True)
class ExperimentSpec:
    """What to import and how to read the file's columns.

    ``weights`` maps arm labels to whole percentages (the planned split, summing to 100);
    ``None`` means the split is unknown (see the module docstring).
    """

    name: str
    arm_column: str
    control: str
    metrics: tuple[MetricSpec, ...]
    id_column: str | None = None
    segments: tuple[str, ...] = ()
    score_column: str | None = None
    weights: Mapping[str, int] | None = None
    description: str = ""


@dataclass(frozen=True)
class ImportResult:
    campaign_id: int
    name: str
    rows: int
    #: units per arm label, control first
    arm_counts: dict[str, int]
    #: the weight stored on each arm
    weights: dict[str, int]
    #: the planned split (``--weights``), or None when unknown (SRM then tests equal split)
    planned_weights: dict[str, int] | None = None


def build_spec(
    *,
    name: str,
    arm_column: str,
    control: str,
    metrics: Sequence[str],
    covariates: Sequence[str] = (),
    id_column: str | None = None,
    segments: Sequence[str] = (),
    score_column: str | None = None,
    weights: str | None = None,
    description: str = "",
) -> ExperimentSpec:
    """An :class:`ExperimentSpec` from the command line's option strings.

    ``metrics`` are ``COLUMN:binary`` or ``COLUMN:continuous``; ``covariates`` are
    ``METRIC=COLUMN``; ``weights`` is ``LABEL=PCT,LABEL=PCT,...``. Raises
    :class:`ExperimentImportRejected` naming the option of every malformed value.
    """
    problems: list[FieldError] = []
    parsed: list[MetricSpec] = []
    for option in metrics:
        column, _, kind = option.rpartition(":")
        kinds = ", ".join(k.value for k in ExperimentMetricKind)
        if not column.strip() or kind.strip() not in {k.value for k in ExperimentMetricKind}:
            problems.append(_option_error("--metric", f"--metric '{option}': expected "
                                          f"COLUMN:KIND with KIND one of {kinds}", "syntax"))
            continue
        parsed.append(MetricSpec(column.strip(), ExperimentMetricKind(kind.strip())))
    covariate_of: dict[str, str] = {}
    for option in covariates:
        metric, _, column = option.partition("=")
        metric, column = metric.strip(), column.strip()
        if not metric or not column:
            problems.append(_option_error("--covariate", f"--covariate '{option}': expected "
                                          "METRIC=COLUMN", "syntax"))
        elif metric not in {m.column for m in parsed}:
            given = ", ".join(m.column for m in parsed) or "none"
            problems.append(_option_error("--covariate", f"--covariate '{option}': '{metric}' "
                                          f"is not a metric given with --metric (given: "
                                          f"{given})", "unknown_metric"))
        elif metric in covariate_of:
            problems.append(_option_error("--covariate", f"--covariate '{option}': metric "
                                          f"'{metric}' already has the covariate "
                                          f"'{covariate_of[metric]}'", "duplicate"))
        else:
            covariate_of[metric] = column
    planned = _parse_weights(weights, problems) if weights is not None else None
    if problems:
        raise ExperimentImportRejected(problems)
    return ExperimentSpec(
        name=name.strip(), arm_column=arm_column.strip(), control=control.strip(),
        metrics=tuple(MetricSpec(m.column, m.kind, covariate_of.get(m.column))
                      for m in parsed),
        id_column=id_column.strip() if id_column else None,
        segments=tuple(s.strip() for s in segments),
        score_column=score_column.strip() if score_column else None,
        weights=planned, description=description)


def _parse_weights(text: str, problems: list[FieldError]) -> dict[str, int] | None:
    """``LABEL=PCT,...`` as a dict; appends a problem and returns None when malformed."""
    weights: dict[str, int] = {}
    for part in text.split(","):
        label, _, percent = part.partition("=")
        label, percent = label.strip(), percent.strip()
        if not label or not _WHOLE_PERCENT.fullmatch(percent):
            problems.append(_option_error("--weights", f"--weights '{text}': expected "
                                          "LABEL=PCT,LABEL=PCT,... with whole percentages, "
                                          f"got '{part.strip()}'", "syntax"))
            return None
        if label in weights:
            problems.append(_option_error("--weights", f"--weights '{text}': arm '{label}' "
                                          "is given twice", "duplicate"))
            return None
        weights[label] = int(percent)
    return weights


def _option_error(option: str, message: str, kind: str) -> FieldError:
    return FieldError((option,), message, kind)


# --------------------------------------------------------------------------- reading


def read_experiment_csv(path: Path | str) -> pd.DataFrame:
    """The file as text cells, stripped of surrounding spaces (and the header of a BOM).

    Empty cells, and the missing cells of a short row, are ''.

    Raises :class:`ExperimentImportRejected` when the file is missing, empty, not UTF-8,
    not CSV or has a column name twice.
    """
    path = Path(path)
    if not path.is_file():
        raise ExperimentImportRejected([FieldError(("FILE",), f"file '{path}' does not exist "
                                                   "or is not a file", "missing_file")])
    try:
        cells = pd.read_csv(path, header=None, dtype=str, encoding="utf-8-sig",
                            na_filter=False, keep_default_na=False, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise _file_error(path, "the file is empty; it needs a header row") from None
    except UnicodeDecodeError as error:
        raise _file_error(path, f"the file is not UTF-8 text ({error.reason})") from None
    except pd.errors.ParserError as error:
        raise _file_error(path, f"not valid CSV: {error}") from None
    header = [str(name).strip() for name in cells.iloc[0]]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise _file_error(path, "the header names a column more than once: "
                          + ", ".join(f"'{name}'" for name in repeated))
    frame = cells.iloc[1:].reset_index(drop=True)
    frame.columns = pd.Index(header)
    return frame.apply(lambda column: column.str.strip())


def _file_error(path: Path, message: str) -> ExperimentImportRejected:
    return ExperimentImportRejected([FieldError(("FILE",), f"{path.name}: {message}",
                                                "bad_file")])


def _as_text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A caller's data frame as stripped text cells, missing values as ''."""
    text = frame.astype(object).where(frame.notna(), "")
    text = text.map(lambda cell: str(cell).strip())
    text.columns = pd.Index([str(name).strip() for name in frame.columns])
    return text.reset_index(drop=True)


# --------------------------------------------------------------------------- checking


@dataclass
class _Checked:
    """The validated file, column by column, ready to be written."""

    rows: int
    unit_keys: list[str]
    arm_labels: pd.Series
    arms: list[str]  # control first
    counts: dict[str, int]
    values: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> values
    pre_values: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> covariate
    segments: dict[str, list[str]] = field(default_factory=dict)
    scores: np.ndarray | None = None


def _rows(mask: pd.Series | np.ndarray, cells: pd.Series | None = None) -> str:
    """'rows 3, 9 and 14' (1-based data rows), quoting the cells when given."""
    positions = np.flatnonzero(np.asarray(mask))
    shown = [f"{p + 1} ('{cells.iat[p]}')" if cells is not None else str(p + 1)
             for p in positions[:MAX_LISTED_ROWS]]
    more = f" and {len(positions) - len(shown):,} more" if len(positions) > len(shown) else ""
    noun = "row" if len(positions) == 1 else "rows"
    return f"{noun} {', '.join(shown)}{more}"


class _Checker:
    """Collects every problem of a spec against a frame of text cells."""

    def __init__(self, frame: pd.DataFrame, spec: ExperimentSpec) -> None:
        self.frame = frame
        self.spec = spec
        self.problems: list[FieldError] = []

    def fail(self, loc: str, message: str, kind: str) -> None:
        self.problems.append(FieldError((loc,), message, kind))

    def raise_if_any(self) -> None:
        if self.problems:
            raise ExperimentImportRejected(self.problems)

    # -- the options and the header ---------------------------------------------------

    def roles(self) -> list[tuple[str, str]]:
        """(option, column) for every column the spec uses."""
        spec = self.spec
        used = [("--arm-column", spec.arm_column)]
        used += [("--id-column", spec.id_column)] if spec.id_column else []
        used += [("--metric", m.column) for m in spec.metrics]
        used += [("--covariate", m.covariate) for m in spec.metrics if m.covariate]
        used += [("--segment", s) for s in spec.segments]
        used += [("--score", spec.score_column)] if spec.score_column else []
        return used

    def check_options(self) -> None:
        spec = self.spec
        for option, value in (("--name", spec.name), ("--control", spec.control),
                              *self.roles(), *(("--weights", label)
                                               for label in spec.weights or {})):
            if value is not None and NUL in value:
                self.fail(option, f"{option}: {value!r} contains the NUL character, which "
                          "cannot be stored", "nul_character")
        if not spec.name:
            self.fail("--name", "--name: the campaign needs a name", "missing")
        elif len(spec.name) > _MAX_CAMPAIGN_NAME:
            self.fail("--name", f"--name: at most {_MAX_CAMPAIGN_NAME} characters "
                      f"(got {len(spec.name)})", "too_long")
        if not spec.metrics:
            self.fail("--metric", "--metric: give at least one outcome column", "missing")
        for option, names in (("--metric", [m.column for m in spec.metrics]),
                              ("--segment", list(spec.segments))):
            for name in sorted({n for n in names if names.count(n) > 1}):
                self.fail(option, f"{option}: column '{name}' is given twice", "duplicate")
        for metric in spec.metrics:
            if metric.column == spec.arm_column:
                self.fail("--metric", f"--metric: '{metric.column}' is the arm column; it "
                          "cannot also be an outcome", "conflict")
            if len(metric.column) > _MAX_METRIC_NAME:
                self.fail("--metric", f"--metric: the metric name '{metric.column}' is longer "
                          f"than {_MAX_METRIC_NAME} characters", "too_long")
        for segment in spec.segments:
            if len(segment) > _MAX_SEGMENT_NAME:
                self.fail("--segment", f"--segment: the segment name '{segment}' is longer "
                          f"than {_MAX_SEGMENT_NAME} characters", "too_long")

    def check_columns(self) -> None:
        available = list(self.frame.columns)
        listed = ", ".join(available)
        for option, column in self.roles():
            if column not in available:
                self.fail(option, f"{option}: no column '{column}' in the file; the columns "
                          f"are: {listed}", "unknown_column")

    # -- the cells -----------------------------------------------------------------------

    def nonempty(self, option: str, column: str) -> pd.Series | None:
        """The column's cells, or None (with a problem recorded) if any is empty."""
        cells = self.frame[column]
        empty = cells == ""
        if empty.any():
            self.fail(column, f"column '{column}' ({option}): {int(empty.sum()):,} empty "
                      f"cell(s) at {_rows(empty)}; every cell of a used column needs a value",
                      "empty")
            return None
        return cells

    def numbers(self, option: str, column: str) -> np.ndarray | None:
        """The column as finite floats, or None (with a problem recorded)."""
        cells = self.nonempty(option, column)
        if cells is None:
            return None
        values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            self.fail(column, f"column '{column}' ({option}): {int(bad.sum()):,} value(s) "
                      f"are not finite numbers, at {_rows(bad, cells)}", "not_a_number")
            return None
        return values

    def check_binary(self, column: str, values: np.ndarray) -> None:
        bad = (values != 0.0) & (values != 1.0)
        if bad.any():
            self.fail(column, f"column '{column}' (--metric {column}:binary): "
                      f"{int(bad.sum()):,} value(s) are not 0 or 1, at "
                      f"{_rows(bad, self.frame[column])}; import it as continuous or "
                      "recode it", "not_binary")

    def check_text(self, option: str, column: str, cells: pd.Series) -> None:
        """Text cells that will be stored must not hold NUL (PostgreSQL cannot store it)."""
        bad = cells.str.contains(NUL, regex=False)
        if bad.any():
            self.fail(column, f"column '{column}' ({option}): the NUL character (\\u0000) at "
                      f"{_rows(bad)}; it cannot be stored", "nul_character")

    def check_lengths(self, option: str, column: str, cells: pd.Series, limit: int) -> None:
        long = cells.str.len() > limit
        if long.any():
            self.fail(column, f"column '{column}' ({option}): values longer than {limit} "
                      f"characters at {_rows(long)}", "too_long")

    def check_arms(self, labels: pd.Series) -> list[str] | None:
        """The arm labels, control first; None (with problems recorded) if unusable."""
        column = self.spec.arm_column
        self.check_text("--arm-column", column, labels)
        self.check_lengths("--arm-column", column, labels, _MAX_ARM_NAME)
        found = sorted(labels.unique().tolist(), key=_natural_key)
        shown = ", ".join(f"'{label}'" for label in found[:20])
        if len(found) > 20:
            shown += f" and {len(found) - 20} more"
        if self.spec.control not in found:
            self.fail("--control", f"--control: no row of column '{column}' has the label "
                      f"'{self.spec.control}'; the labels are {shown}", "unknown_label")
            return None
        if len(found) < 2:
            self.fail(column, f"column '{column}' (--arm-column): only the label {shown} "
                      "occurs; an experiment needs a control and at least one other arm",
                      "too_few_arms")
            return None
        if len(found) > MAX_ARMS:
            self.fail(column, f"column '{column}' (--arm-column): {len(found):,} different "
                      f"labels; at most {MAX_ARMS} arms are supported (is this the right "
                      "column?)", "too_many_arms")
            return None
        return [self.spec.control, *(label for label in found if label != self.spec.control)]

    def check_ids(self, ids: pd.Series) -> None:
        column = self.spec.id_column
        assert column is not None
        self.check_text("--id-column", column, ids)
        self.check_lengths("--id-column", column, ids, _MAX_UNIT_KEY)
        repeated = ids.duplicated(keep=False)
        if repeated.any():
            groups = ids[repeated].groupby(ids[repeated], sort=False).groups
            examples = [f"'{key}' at rows " + ", ".join(str(i + 1) for i in index[:3])
                        for key, index in list(groups.items())[:MAX_LISTED_ROWS]]
            more = len(groups) - len(examples)
            self.fail(column, f"column '{column}' (--id-column): {len(groups):,} id(s) are "
                      f"used by more than one row: {'; '.join(examples)}"
                      + (f"; and {more:,} more" if more > 0 else ""), "duplicate")

    def check_weights(self, arms: list[str]) -> None:
        weights = self.spec.weights
        if weights is None:
            return
        unknown = [label for label in weights if label not in arms]
        missing = [label for label in arms if label not in weights]
        listed = ", ".join(f"'{label}'" for label in arms)
        if unknown:
            self.fail("--weights", "--weights: no arm is labelled "
                      + ", ".join(f"'{label}'" for label in unknown)
                      + f"; the arms are {listed}", "unknown_label")
        if missing:
            self.fail("--weights", "--weights: no weight for arm(s) "
                      + ", ".join(f"'{label}'" for label in missing)
                      + "; give one for every arm", "missing")
        zero = [label for label in arms if weights.get(label) == 0]
        if zero:
            self.fail("--weights", "--weights: arm(s) " + ", ".join(f"'{z}'" for z in zero)
                      + " have units but a planned weight of 0", "zero_weight")
        total = sum(weights.values())
        if total != WEIGHT_TOTAL:
            self.fail("--weights", f"--weights: the percentages add up to {total}, not "
                      f"{WEIGHT_TOTAL}", "total")

    def check_split_stated(self, counts: Mapping[str, int]) -> None:
        """Without --weights, refuse arms whose sizes rule out an equal split.

        The report's sample ratio check then assumes equal allocation; arms this unequal
        would raise a false "sample ratio mismatch" when the design was unequal on
        purpose, and a test against the observed split could never fail. Only the
        analyst knows which, so the import asks.
        """
        sizes = list(counts.values())
        if sps.chisquare(sizes).pvalue >= UNEQUAL_SPLIT_P:
            return
        shares = _observed_percentages(sizes)
        suggestion = ",".join(f"{label}={share}" for label, share in
                              zip(counts, shares, strict=True))
        observed = ", ".join(f"'{label}' {count:,}" for label, count in counts.items())
        self.fail("--weights", f"--weights: the arms are clearly unequal ({observed} units; "
                  f"an equal split is ruled out at p < {UNEQUAL_SPLIT_P:g}) and no planned "
                  "split was given. Give the split the experiment was designed with, e.g. "
                  f"--weights '{suggestion}' if the observed shares were the plan, so the "
                  "sample ratio check tests what was intended", "planned_split_required")

    def check_name_free(self, session: Session) -> None:
        campaign = _table(Campaign)
        taken = session.execute(select(campaign.c.id).where(
            campaign.c.name == self.spec.name)).first()
        if taken is not None:
            self.fail("--name", f"--name: a campaign named '{self.spec.name}' already exists "
                      f"(id {taken.id})", "duplicate")


def _natural_key(label: str) -> tuple[int, float, str]:
    """Numbers in numeric order, before text in text order ('2' < '10' < 'b')."""
    try:
        number = float(label)
    except ValueError:
        return (1, 0.0, label)
    return (0, number, label) if math.isfinite(number) else (1, 0.0, label)


def _check(session: Session, frame: pd.DataFrame, spec: ExperimentSpec,
           progress: ProgressCallback | None) -> _Checked:
    """Every problem of the spec, the header and the cells; raises if there is any."""
    checker = _Checker(frame, spec)
    checker.check_options()
    checker.check_columns()
    checker.check_name_free(session)
    checker.raise_if_any()  # the cells can only be read through known columns
    total = len(checker.roles())
    rows = len(frame)
    if rows == 0:
        checker.fail("FILE", "the file has a header but no data rows", "empty")
        checker.raise_if_any()
    labels = checker.nonempty("--arm-column", spec.arm_column)
    arms = checker.check_arms(labels) if labels is not None else None
    if arms is not None:
        checker.check_weights(arms)
    unit_keys = [str(row) for row in range(1, rows + 1)]
    if spec.id_column:
        ids = checker.nonempty("--id-column", spec.id_column)
        if ids is not None:
            checker.check_ids(ids)
            unit_keys = ids.tolist()
    checked = _Checked(rows=rows, unit_keys=unit_keys,
                       arm_labels=labels if labels is not None else pd.Series(dtype=str),
                       arms=arms or [], counts={})
    done = 1 + bool(spec.id_column)
    _report(progress, "checking", done, total)
    for metric in spec.metrics:
        values = checker.numbers("--metric", metric.column)
        if values is not None:
            if metric.kind is ExperimentMetricKind.BINARY:
                checker.check_binary(metric.column, values)
            checked.values[metric.column] = values
        if metric.covariate:
            pre = checker.numbers("--covariate", metric.covariate)
            if pre is not None:
                checked.pre_values[metric.column] = pre
        done += 1 + bool(metric.covariate)
        _report(progress, "checking", done, total)
    for segment in spec.segments:
        cells = checker.nonempty("--segment", segment)
        if cells is not None:
            checker.check_text("--segment", segment, cells)
            checker.check_lengths("--segment", segment, cells, _MAX_SEGMENT_VALUE)
            checked.segments[segment] = cells.tolist()
    if spec.score_column:
        checked.scores = checker.numbers("--score", spec.score_column)
    _report(progress, "checking", total, total)
    checker.raise_if_any()
    units = checked.arm_labels.value_counts()
    checked.counts = {arm: int(units[arm]) for arm in checked.arms}
    if spec.weights is None:
        checker.check_split_stated(checked.counts)
        checker.raise_if_any()
    return checked


def _observed_percentages(counts: Sequence[int]) -> list[int]:
    """Observed shares as whole percentages adding to 100 (largest remainder), for a hint.

    Plain largest-remainder rounding (200 and 800 units: 20 and 80); :func:`rounded_shares`
    when that would give an arm 0%, which --weights refuses.
    """
    total = sum(counts)
    exact = [WEIGHT_TOTAL * count / total for count in counts]
    shares = [math.floor(share) for share in exact]
    by_remainder = sorted(range(len(counts)), key=lambda i: (-(exact[i] - shares[i]), i))
    for index in by_remainder[:WEIGHT_TOTAL - sum(shares)]:
        shares[index] += 1
    return shares if min(shares) > 0 else rounded_shares(counts)


def _report(progress: ProgressCallback | None, phase: str, done: int, total: int) -> None:
    if progress is not None:
        progress(phase, min(done, total), total)


# --------------------------------------------------------------------------- weights


def rounded_shares(counts: Sequence[int]) -> list[int]:
    """Whole percentages proportional to ``counts`` that add up to 100, each at least 1.

    Largest-remainder (Hamilton) rounding after giving every arm its 1%: the floors of
    the remaining 100 - k points are handed out first, then one point each to the arms
    with the largest remainders (ties to the earlier arm). Needs 1 to 100 arms and a
    positive total.
    """
    arms = len(counts)
    total = sum(counts)
    if not 1 <= arms <= WEIGHT_TOTAL or total <= 0 or min(counts) < 0:
        raise ValueError(f"need 1 to {WEIGHT_TOTAL} non-negative counts with a positive "
                         f"total (got {list(counts)})")
    spare = WEIGHT_TOTAL - arms
    exact = [spare * count / total for count in counts]
    weights = [1 + math.floor(share) for share in exact]
    leftover = WEIGHT_TOTAL - sum(weights)
    by_remainder = sorted(range(arms), key=lambda i: (-(exact[i] - math.floor(exact[i])), i))
    for index in by_remainder[:leftover]:
        weights[index] += 1
    return weights


# --------------------------------------------------------------------------- writing


def _table(model: type[Any]) -> Table:
    return model.__table__


def _insert_batches(session: Session, table: Table, rows: Sequence[dict[str, Any]], *,
                    batch_size: int, on_batch: Callable[[int], None]) -> None:
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        session.execute(insert(table), list(batch))
        on_batch(len(batch))


def _create_campaign(session: Session, spec: ExperimentSpec, *, arms_weights: dict[str, int],
                     description: str) -> tuple[Campaign, dict[str, Arm]]:
    """The ended imported campaign and its arms (control first), plus a planned allocation."""
    campaign = Campaign(name=spec.name, description=description,
                        origin=CampaignOrigin.IMPORTED.value, status=CampaignStatus.ENDED.value,
                        salt=new_salt(), guardrails=[])
    session.add(campaign)
    session.flush()
    assert campaign.id is not None
    arms = {label: Arm(campaign_id=campaign.id, name=label, is_control=label == spec.control,
                       weight=weight, position=position)
            for position, (label, weight) in enumerate(arms_weights.items())}
    session.add_all(arms.values())
    session.flush()
    if spec.weights is not None:
        # The planned split is the campaign's (only) allocation period, as for a live one.
        for arm in arms.values():
            assert arm.id is not None
            session.add(ArmAllocation(campaign_id=campaign.id, period=1, arm_id=arm.id,
                                      weight=arm.weight))
        session.flush()
    return campaign, arms


def _write(session: Session, spec: ExperimentSpec, checked: _Checked, *,
           arms_weights: dict[str, int], description: str, batch_size: int,
           progress: ProgressCallback | None) -> Campaign:
    campaign, arms = _create_campaign(session, spec, arms_weights=arms_weights,
                                      description=description)
    assert campaign.id is not None
    metric_rows = [ExperimentMetric(campaign_id=campaign.id, name=m.column, kind=m.kind.value,
                                    source_column=m.column, covariate_column=m.covariate,
                                    position=position)
                   for position, m in enumerate(spec.metrics)]
    session.add_all(metric_rows)
    session.flush()
    total = checked.rows * (1 + len(spec.metrics) + len(spec.segments))
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        _report(progress, "importing", done, total)

    arm_ids = {label: arm.id for label, arm in arms.items()}
    scores = checked.scores.tolist() if checked.scores is not None else [None] * checked.rows
    units = [{"campaign_id": campaign.id, "arm_id": arm_ids[label], "unit_key": key,
              "row_number": row, "score": score}
             for row, (label, key, score) in enumerate(
                 zip(checked.arm_labels.tolist(), checked.unit_keys, scores, strict=True),
                 start=1)]
    _insert_batches(session, _table(ExperimentUnit), units, batch_size=batch_size,
                    on_batch=advance)
    unit_table = _table(ExperimentUnit)
    unit_ids = dict(session.execute(select(unit_table.c.row_number, unit_table.c.id).where(
        unit_table.c.campaign_id == campaign.id)).all())
    ids = [unit_ids[row] for row in range(1, checked.rows + 1)]
    for metric in metric_rows:
        values = checked.values[metric.name].tolist()
        pre = checked.pre_values.get(metric.name)
        pre_values = pre.tolist() if pre is not None else [None] * checked.rows
        rows = [{"unit_id": unit_id, "metric_id": metric.id, "value": value, "pre_value": p}
                for unit_id, value, p in zip(ids, values, pre_values, strict=True)]
        _insert_batches(session, _table(ExperimentValue), rows, batch_size=batch_size,
                        on_batch=advance)
    for segment, segment_values in checked.segments.items():
        rows = [{"unit_id": unit_id, "name": segment, "value": value}
                for unit_id, value in zip(ids, segment_values, strict=True)]
        _insert_batches(session, _table(ExperimentSegment), rows, batch_size=batch_size,
                        on_batch=advance)
    return campaign


def import_experiment(
    session: Session,
    source: Path | str | pd.DataFrame,
    spec: ExperimentSpec,
    *,
    actor: str = "cli",
    batch_size: int = BATCH_SIZE,
    progress: ProgressCallback | None = None,
) -> ImportResult:
    """Check ``source`` against ``spec`` completely, then write the experiment.

    ``source`` is a CSV file or a data frame with one row per unit. Raises
    :class:`ExperimentImportRejected` (listing every problem) before anything is
    written. Writes inside the caller's transaction (flushes, does not commit), so the
    caller's rollback undoes a failure that happens while writing.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive (got {batch_size})")
    if isinstance(source, pd.DataFrame):
        frame, origin = _as_text_frame(source), "a data frame"
    else:
        frame, origin = read_experiment_csv(source), Path(source).name
    checked = _check(session, frame, spec, progress)
    description = spec.description or (
        f"Imported from {origin}: {checked.rows:,} units, arm column '{spec.arm_column}', "
        f"control '{spec.control}'.")
    weights = _arm_weights(spec, checked)
    campaign = _write(session, spec, checked, arms_weights=weights, description=description,
                      batch_size=batch_size, progress=progress)
    assert campaign.id is not None
    planned = dict(spec.weights) if spec.weights is not None else None
    # An ended imported campaign changes no live configuration: no cache needs reloading.
    record_audit(session, actor=actor, action="campaign.import", entity_type="campaign",
                 entity_id=campaign.id, config_change=False, details={
                     "source": origin, "rows": checked.rows, "arm_column": spec.arm_column,
                     "control": spec.control, "id_column": spec.id_column,
                     "metrics": [{"column": m.column, "kind": m.kind.value,
                                  "covariate": m.covariate} for m in spec.metrics],
                     "segments": list(spec.segments), "score_column": spec.score_column,
                     "arm_counts": checked.counts, "weights": weights,
                     "planned_weights": planned})
    session.flush()
    return ImportResult(campaign_id=campaign.id, name=campaign.name, rows=checked.rows,
                        arm_counts=dict(checked.counts), weights=weights,
                        planned_weights=planned)


def _arm_weights(spec: ExperimentSpec, checked: _Checked) -> dict[str, int]:
    """Each arm's stored weight, control first: the planned split, else observed shares."""
    if spec.weights is not None:
        return {arm: spec.weights[arm] for arm in checked.arms}
    shares = rounded_shares([checked.counts[arm] for arm in checked.arms])
    return dict(zip(checked.arms, shares, strict=True))
