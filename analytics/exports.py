"""A campaign report in the formats analysts take away.

- :func:`to_json`: a JSON-serialisable dict with stable keys, raw numbers, for programs;
- :func:`write_csv`: the tidy long format of :meth:`Report.records` (one number per row);
- :func:`write_xlsx`: a workbook with the sheets summary, metrics, segments, economics and
  diagnostics (SRM, sample sizes, methods, date range, guardrails);
- :func:`render_html`: one self-contained HTML file, no external assets and no script,
  whose charts are inline SVG drawn here.

Every format states the methods, the sample sizes, the sample ratio check and the date
range. Numbers are raw in JSON and CSV and formatted for people in HTML (percentage points
for rates, money in major units of the campaign's currency).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import lru_cache, partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from babel.numbers import get_currency_precision
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from analytics.metrics import keys as metric_keys
from analytics.metrics import lookup as metric_lookup
from analytics.metrics import metric_label
from analytics.report import Report, srm_sentence, view_statistics
from analytics.reports import PRIMARY_METRICS, MetricResult
from analytics.stats import PROPORTIONS_METHOD
from campaigns.models import CampaignOrigin

if TYPE_CHECKING:
    # pandas (and SciPy) load on first use, inside the functions: a second of every
    # server and CLI start that most never need.
    import pandas as pd

__all__ = [
    "RECORD_COLUMNS",
    "ExportFormat",
    "export_bytes",
    "export_filename",
    "records_frame",
    "render_html",
    "to_json",
    "write_csv",
    "write_xlsx",
]

#: Columns of the tidy long format, in order.
RECORD_COLUMNS = ("campaign", "arm", "segment", "metric", "statistic", "value")

#: Version of the JSON layout; bumped when a key changes meaning or disappears.
JSON_FORMAT = "channelshift.report/1"


class ExportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    XLSX = "xlsx"
    HTML = "html"

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES[self]


_MEDIA_TYPES = {
    ExportFormat.JSON: "application/json",
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ExportFormat.HTML: "text/html; charset=utf-8",
}

#: What HTML prints for an undefined number (an en dash).
MISSING = "\u2013"

#: Metrics measured in the campaign's money (minor units) for live campaigns.
MONEY_METRICS = frozenset(metric_keys(unit="money"))

# Text a spreadsheet would run as a formula (an arm named "=HYPERLINK(...)").
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


# --------------------------------------------------------------------------- JSON


def _json_value(value: Any) -> Any:
    """Plain JSON types: times as ISO 8601 UTC with ``Z``, non-finite numbers as None."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if hasattr(value, "item"):  # a numpy scalar from another module's computation
        return _json_value(value.item())
    raise TypeError(f"cannot put a {type(value).__name__} into a JSON report")


def comparison_json(result: MetricResult) -> dict[str, Any]:
    c = result.comparison
    return _json_value({
        "arm": result.arm, "metric": result.metric, "segment": result.segment,
        "method": c.method, "n_control": c.control_n, "n_treatment": c.treatment_n,
        "mean_control": c.control_mean, "mean_treatment": c.treatment_mean,
        "diff": c.diff, "diff_se": c.diff_se, "diff_ci_low": c.diff_ci_low,
        "diff_ci_high": c.diff_ci_high, "statistic": c.statistic, "df": c.df,
        "p_value": c.p_value, "p_value_floored": c.p_value_floored,
        "p_value_holm": result.p_value_holm, "rel_lift": c.rel_lift,
        "rel_lift_se": c.rel_lift_se, "rel_lift_ci_low": c.rel_lift_ci_low,
        "rel_lift_ci_high": c.rel_lift_ci_high,
        "variance_reduction": result.variance_reduction, "reason": c.reason,
        "interval_method": c.interval_method,
        "rel_lift_interval_method": c.rel_lift_interval_method,
        "small_sample": c.small_sample,
        **_view_json(result)})


def _view_json(result: MetricResult) -> dict[str, Any]:
    """The baseline arm, the BH p-value, the Bayesian and the always-valid views, flat."""
    views: dict[str, Any] = {"baseline": result.baseline, "p_value_bh": result.p_value_bh}
    views.update(view_statistics(result, correction="holm"))
    return views


def _heterogeneity_json(report: Report) -> list[dict[str, Any]]:
    return [{"arm": row.arm, "baseline": row.baseline, "metric": row.metric,
             "breakdown": row.breakdown, **_json_value(row.test)}
            for row in report.heterogeneity]


def to_json(report: Report) -> dict[str, Any]:
    """The whole report as JSON types: raw numbers, minor units, ISO 8601 UTC times."""
    campaign = dataclasses.asdict(report.campaign)
    return {
        "format": JSON_FORMAT,
        "campaign": _json_value(campaign),
        "generated_at": _json_value(report.generated_at),
        "alpha": report.alpha,
        "date_range": _json_value(report.date_range),
        "methods": report.methods,
        "warnings": report.warnings,
        "arms": _json_value(report.arms),
        "srm": {**_json_value(report.srm), "summary": srm_sentence(report.srm)},
        "planned_split": ({"source": report.planned_split.source,
                           "assumed": report.planned_split.assumed}
                          if report.planned_split is not None else None),
        "results": [comparison_json(result) for result in report.results],
        "segments": [comparison_json(result) for result in report.segments],
        "economics": _json_value(report.economics),
        "guardrails": _json_value(report.guardrails),
        "qini": _json_value(report.qini),
        "timeline": [{**_json_value(point), "rate": _json_value(point.rate)}
                     for point in report.timeline],
        "spend": _json_value(report.spend),
        "correction": report.correction,
        "baseline": report.baseline_arm,
        "heterogeneity": _heterogeneity_json(report),
        "interim": _json_value(report.interim),
        "power": _json_value(report.power),
        "caps": _json_value(report.caps),
        "pre_period_days": report.pre_period_days,
    }


# --------------------------------------------------------------------------- CSV


def _safe_text(value: Any) -> Any:
    """Quote text a spreadsheet would run as a formula; leave everything else alone."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def records_frame(report: Report) -> pd.DataFrame:
    """:meth:`Report.records` as a DataFrame with the tidy columns.

    ``value`` is kept as Python objects so counts print as integers and floats with full
    precision; an undefined statistic is an empty cell.
    """
    import pandas as pd
    records = report.records()
    return pd.DataFrame({
        column: pd.Series([_safe_text(record[column]) for record in records], dtype=object)
        for column in RECORD_COLUMNS})


def write_csv(report: Report, target: str | os.PathLike[str] | IO[str]) -> None:
    """The tidy long format as UTF-8 CSV to a path or a text stream."""
    records_frame(report).to_csv(target, index=False)


# --------------------------------------------------------------------------- XLSX


def _excel_value(value: Any) -> Any:
    """Cell values: UTC times without a zone (Excel has none), formulas defused."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return _safe_text(value)


# Number formats of the workbook: what each kind of column looks like when opened.
XLSX_COUNT = "#,##0"
XLSX_PERCENT = "0.00%"
XLSX_NUMBER = "#,##0.0000"
XLSX_P_VALUE = "[<0.0001]0.00E+00;0.0000"
XLSX_TIME = "yyyy-mm-dd hh:mm"


def xlsx_money_format(currency: str) -> str:
    """A number format for major units of ``currency`` with its own digits: ``#,##0.00 "EUR"``."""
    digits = currency_exponent(currency)
    decimals = "." + "0" * digits if digits else ""
    return f'#,##0{decimals} "{currency}"'


#: Column kinds: "text", "count", "percent", "number", "p", "time", "money" (minor units
#: of the campaign's currency, written in major units), "flag", "metric" (the row's
#: metric decides: a rate as a percentage, money in major units, else a number),
#: "economics" (the row's economics unit decides) and "row" (the row's ``kind`` decides).
_XlsxColumn = tuple[str, str]


@dataclass(frozen=True)
class _XlsxTable:
    """One table of a sheet: its columns (key, kind) and rows (dicts by key)."""

    columns: Sequence[_XlsxColumn]
    rows: Sequence[Mapping[str, Any]]
    title: str | None = None


class _Workbook:
    """Writes :class:`_XlsxTable` blocks with number formats, a frozen header, widths."""

    def __init__(self, report: Report) -> None:
        from openpyxl import Workbook  # type: ignore[import-untyped]
        self.book = Workbook()
        self.book.remove(self.book.active)
        self.currency = report.campaign.currency
        self.money = xlsx_money_format(self.currency)
        self.kind_of = metric_kinds(report)
        self.widths: dict[tuple[str, int], int] = {}

    def sheet(self, name: str, tables: Sequence[_XlsxTable]) -> None:
        from openpyxl.styles import Font  # type: ignore[import-untyped]
        sheet = self.book.create_sheet(name)
        row = 1
        for index, table in enumerate(tables):
            if table.title is not None:
                sheet.cell(row=row, column=1, value=table.title).font = Font(bold=True)
                row += 1
            for column, (key, _) in enumerate(table.columns, start=1):
                sheet.cell(row=row, column=column, value=key).font = Font(bold=True)
                self._fit(sheet, column, len(key))
            if index == 0:
                sheet.freeze_panes = sheet.cell(row=row + 1, column=1)
            for record in table.rows:
                row += 1
                for column, (key, kind) in enumerate(table.columns, start=1):
                    self._write(sheet, row, column, record.get(key), kind, record)
            row += 3
        for (sheet_name, column), width in self.widths.items():
            if sheet_name == name:
                letter = sheet.cell(row=1, column=column).column_letter
                sheet.column_dimensions[letter].width = min(max(width + 2, 10), 60)

    def _write(self, sheet: Any, row: int, column: int, value: Any, kind: str,
               record: Mapping[str, Any]) -> None:
        value = _excel_value(value)
        if kind == "row":  # the row says (the summary's value column)
            kind = str(record.get("kind") or "text")
        elif kind == "economics":  # the economics result's unit says
            kind = _ECONOMICS_KINDS.get(str(record.get("source_unit")), "number")
        if kind == "metric":
            kind = {RATE: "percent", MONEY: "money"}.get(
                self.kind_of(str(record.get("metric", ""))), "number")
        number_format = None
        if isinstance(value, bool) or value is None or isinstance(value, str):
            pass
        elif kind == "money" and isinstance(value, int | float):
            value = value / 10 ** currency_exponent(self.currency)
            number_format = self.money
        elif isinstance(value, datetime):
            number_format = XLSX_TIME
        elif isinstance(value, int | float):
            number_format = {"count": XLSX_COUNT, "percent": XLSX_PERCENT,
                             "p": XLSX_P_VALUE}.get(kind, XLSX_NUMBER)
            if kind == "text":  # a number in a text column (a summary value)
                number_format = XLSX_COUNT if isinstance(value, int) else XLSX_NUMBER
        cell = sheet.cell(row=row, column=column, value=value)
        if number_format is not None:
            cell.number_format = number_format
        self._fit(sheet, column, _display_width(value, number_format))

    def _fit(self, sheet: Any, column: int, width: int) -> None:
        key = (sheet.title, column)
        self.widths[key] = max(self.widths.get(key, 0), width)


def _display_width(value: Any, number_format: str | None) -> int:
    """Roughly how many characters a cell shows (for the column's width)."""
    if value is None:
        return 0
    if isinstance(value, datetime):
        return 16
    if isinstance(value, bool):
        return 5
    if isinstance(value, int | float):
        if number_format == XLSX_PERCENT:
            return len(f"{value * 100:,.2f}%")
        if number_format == XLSX_P_VALUE:
            return 8
        text = f"{value:,.4f}" if number_format == XLSX_NUMBER else f"{value:,.2f}"
        return len(text) + (4 if number_format and '"' in number_format else 0)
    return len(str(value))


_COMPARISON_COLUMNS: tuple[_XlsxColumn, ...] = (
    ("arm", "text"), ("metric", "text"), ("segment", "text"), ("n_control", "count"),
    ("n_treatment", "count"), ("mean_control", "metric"), ("mean_treatment", "metric"),
    ("diff", "metric"), ("diff_ci_low", "metric"), ("diff_ci_high", "metric"),
    ("p_value", "p"), ("p_value_floored", "flag"), ("p_value_holm", "p"),
    ("rel_lift", "percent"), ("rel_lift_ci_low", "percent"), ("rel_lift_ci_high", "percent"),
    ("variance_reduction", "percent"), ("diff_se", "metric"), ("statistic", "number"),
    ("df", "number"), ("method", "text"), ("reason", "text"), ("interval_method", "text"),
    ("rel_lift_interval_method", "text"), ("small_sample", "flag"), ("baseline", "text"),
    ("p_value_bh", "p"), ("bayes_chance_to_beat_baseline", "percent"),
    ("bayes_expected_loss", "metric"), ("bayes_expected_loss_baseline", "metric"),
    ("bayes_ci_low", "metric"), ("bayes_ci_high", "metric"),
    ("bayes_rel_chance_to_beat_baseline", "percent"), ("bayes_rel_expected_loss", "percent"),
    ("bayes_rel_expected_loss_baseline", "percent"), ("bayes_rel_ci_low", "percent"),
    ("bayes_rel_ci_high", "percent"), ("always_valid_ci_low", "metric"),
    ("always_valid_ci_high", "metric"), ("always_valid_p_value", "p"))
_HETEROGENEITY_COLUMNS: tuple[_XlsxColumn, ...] = (
    ("breakdown", "text"), ("arm", "text"), ("baseline", "text"), ("metric", "text"),
    ("segments", "count"), ("excluded", "count"), ("q", "number"), ("df", "number"),
    ("p_value", "p"), ("i_squared", "percent"), ("pooled", "metric"), ("reason", "text"))


def _summary_rows(report: Report) -> list[dict[str, Any]]:
    c = report.campaign
    money = {"budget", "spent"}
    rows: list[tuple[str, Any]] = [
        ("campaign", c.name), ("campaign id", c.id), ("status", c.status),
        ("origin", c.origin), ("goal", c.goal), ("stage", c.stage),
        ("target channel", c.target_channel), ("currency", c.currency),
        ("budget", c.budget_minor), ("spent", c.spent_minor),
        ("starts at (UTC)", c.starts_at), ("ends at (UTC)", c.ends_at),
        ("pause reason", c.pause_reason), ("generated at (UTC)", report.generated_at),
        ("first exposure (UTC)", report.date_range.first_exposure if report.date_range
         else None),
        ("last exposure (UTC)", report.date_range.last_exposure if report.date_range
         else None),
        ("alpha", report.alpha), ("sample ratio check", srm_sentence(report.srm))]
    rows += [(f"n {arm.name}", arm.n) for arm in report.arms]
    rows += [("warning", warning) for warning in report.warnings]
    out: list[dict[str, Any]] = [{"field": field, "value": value,
                                  "kind": "money" if field in money else "text"}
                                 for field, value in rows]
    for result in report.results:
        if _is_primary(result):
            comparison = result.comparison
            out += [{"field": f"{result.arm}: {result.metric} diff", "value": comparison.diff,
                     "metric": result.metric, "kind": "metric"},
                    {"field": f"{result.arm}: {result.metric} diff CI",
                     "value": _raw_interval(comparison.diff_ci_low, comparison.diff_ci_high)},
                    {"field": f"{result.arm}: {result.metric} p "
                              f"({_CORRECTION_LABELS[report.correction]})",
                     "value": result.p_value_adjusted(report.correction), "kind": "p"}]
    return out


_CORRECTION_LABELS = {"holm": "Holm", "bh": "BH"}


def _raw_interval(low: float | None, high: float | None) -> str | None:
    return None if low is None or high is None else f"[{low:.6g}, {high:.6g}]"


def write_xlsx(report: Report, target: str | os.PathLike[str] | IO[bytes]) -> None:
    """The report as a workbook: summary, metrics, segments, economics, diagnostics.

    Formatted for reading: money in major units of the campaign's currency with a number
    format naming it, rates and relative lifts as percentages, counts with separators,
    p-values to four decimals (scientific below 0.0001), a frozen header row and columns
    as wide as their content. The values themselves keep full precision.
    """
    book = _Workbook(report)
    book.sheet("summary", [_XlsxTable([("field", "text"), ("value", "row")],
                                      _summary_rows(report))])
    book.sheet("metrics", [_XlsxTable(_COMPARISON_COLUMNS,
                                      [comparison_json(r) for r in report.results])])
    segments = []
    if report.heterogeneity:
        segments.append(_XlsxTable(_HETEROGENEITY_COLUMNS, _heterogeneity_json(report),
                                   title="Heterogeneity across segment values (Cochran's Q)"))
    segments.append(_XlsxTable(_COMPARISON_COLUMNS,
                               [comparison_json(r) for r in report.segments],
                               title="Comparisons within segments "
                               f"(correction: {report.correction})"))
    if report.qini is not None:
        qini = report.qini
        segments += [
            _XlsxTable((("arm", "text"), ("metric", "text"), ("score", "text"),
                        ("decile", "count"), ("score_min", "number"), ("score_max", "number"),
                        ("control_n", "count"), ("treatment_n", "count"),
                        ("control_rate", "percent"), ("treatment_rate", "percent"),
                        ("uplift", "percent"), ("uplift_ci_low", "percent"),
                        ("uplift_ci_high", "percent"), ("p_value", "p"), ("reason", "text")),
                       [{**_json_value(d), "metric": qini.metric, "score": qini.score}
                        for d in qini.deciles], title="Uplift by decile of the score"),
            _XlsxTable((("arm", "text"), ("metric", "text"), ("score", "text"),
                        ("qini_coefficient", "number"), ("qini_q0", "number"),
                        ("qini_auc_score", "number"), ("scored_n", "count"),
                        ("distinct_scores", "count"), ("ties", "text")),
                       [{"arm": arm, "metric": qini.metric, "score": qini.score,
                         "qini_coefficient": value, "qini_q0": (qini.qini_q0 or {}).get(arm),
                         "qini_auc_score": (qini.qini_auc_score or {}).get(arm),
                         "scored_n": qini.scored_n, "distinct_scores": qini.distinct_scores,
                         "ties": qini.ties}
                        for arm, value in qini.qini_coefficient.items()],
                       title="Qini coefficient")]
    book.sheet("segments", segments)
    book.sheet("economics", [_XlsxTable(
        (("arm", "text"), ("metric", "text"), ("unit", "text"), ("estimate", "economics"),
         ("ci_low", "economics"), ("ci_high", "economics"), ("reason", "text"),
         ("method", "text")),
        [_economics_record(report, e) for e in report.economics])])
    book.sheet("diagnostics", _diagnostics_tables(report))
    book.book.save(target)


_ECONOMICS_KINDS = {"minor": "money", "ratio": "percent", "customers": "number"}


def _economics_record(report: Report, result: Any) -> dict[str, Any]:
    record = dict(_json_value(result))
    record["source_unit"] = result.unit
    record["unit"] = report.campaign.currency if result.unit == "minor" else result.unit
    return record


def _diagnostics_tables(report: Report) -> list[_XlsxTable]:
    srm = report.srm
    total = sum(arm.n for arm in report.arms)
    dates = report.date_range
    return [
        _XlsxTable((("summary", "text"), ("p_value", "p"), ("chi2", "number"),
                    ("flagged", "flag"), ("threshold", "number"), ("reason", "text")),
                   [{"summary": srm_sentence(srm), "p_value": srm.p_value, "chi2": srm.chi2,
                     "flagged": srm.flagged, "threshold": srm.threshold,
                     "reason": srm.reason}], title="Sample ratio check"),
        _XlsxTable((("name", "text"), ("is_control", "flag"), ("n", "count"),
                    ("share", "percent"), ("planned_weight", "count"),
                    ("planned_share", "percent"), ("observed_share", "percent"),
                    ("incentive_type", "text"), ("incentive_name", "text")),
                   [{**dataclasses.asdict(arm), "share": arm.n / total if total else None}
                    for arm in report.arms], title="Sample sizes"),
        _XlsxTable((("method", "text"),), [{"method": m} for m in report.methods],
                   title="Methods"),
        _XlsxTable((("first_exposure", "time"), ("last_exposure", "time"),
                    ("generated_at", "time")),
                   [{"first_exposure": dates.first_exposure if dates else None,
                     "last_exposure": dates.last_exposure if dates else None,
                     "generated_at": report.generated_at}], title="Date range (UTC)"),
        _XlsxTable((("arm", "text"), ("metric", "text"), ("harm_direction", "count"),
                    ("control_n", "count"), ("treatment_n", "count"),
                    ("control_mean", "metric"), ("treatment_mean", "metric"),
                    ("diff", "metric"), ("ci_low", "metric"), ("ci_high", "metric"),
                    ("level", "percent"), ("p_value_always_valid", "p"),
                    ("harm_detected", "flag"), ("reason", "text")),
                   _json_value(report.guardrails),
                   title="Guardrails (always-valid sequential test)"),
        _XlsxTable((("metric", "text"), ("label", "text"), ("unit", "text"),
                    ("kind", "text"), ("better", "text"), ("primary", "flag")),
                   metric_definitions(report), title="Metrics")]


def metric_definitions(report: Report) -> list[dict[str, Any]]:
    """What each metric key of ``report`` means: the registry's facts for a live metric,
    the key in words and the comparison's kind for an imported experiment's metric."""
    kind_of = metric_kinds(report)
    live = report.campaign.origin == CampaignOrigin.LIVE.value
    rows = []
    for key in dict.fromkeys(r.metric for r in report.results):
        # an imported metric that shares a live metric's name keeps the direction only
        known, printed = (metric_lookup(key) if live else None), kind_of(key)
        direction = metric_lookup(key)
        rows.append({
            "metric": key, "label": metric_label(key),
            "unit": (report.campaign.currency if printed == MONEY
                     else known.unit if known is not None else printed),
            "kind": (known.kind if known is not None
                     else "proportion" if printed == RATE else "mean"),
            "better": direction.better if direction is not None else "higher",
            "primary": _is_primary(next(r for r in report.results if r.metric == key))})
    return rows


# --------------------------------------------------------------------------- dispatch


def export_bytes(report: Report, export_format: ExportFormat | str) -> bytes:
    """The report serialised in one format, ready to send or write."""
    export_format = ExportFormat(export_format)
    if export_format is ExportFormat.JSON:
        return json.dumps(to_json(report), ensure_ascii=False, allow_nan=False,
                          indent=2).encode("utf-8")
    if export_format is ExportFormat.CSV:
        text = io.StringIO()
        write_csv(report, text)
        return text.getvalue().encode("utf-8")
    if export_format is ExportFormat.XLSX:
        binary = io.BytesIO()
        write_xlsx(report, binary)
        return binary.getvalue()
    return render_html(report).encode("utf-8")


def export_filename(report: Report, export_format: ExportFormat | str) -> str:
    """An ASCII file name: campaign id and the UTC date of the report."""
    export_format = ExportFormat(export_format)
    stamp = report.generated_at.astimezone(UTC).strftime("%Y%m%d")
    return f"campaign-{report.campaign.id}-report-{stamp}.{export_format.value}"


# --------------------------------------------------------------------------- formatting


RATE, MONEY, NUMBER = "rate", "money", "number"


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point of the currency's major unit (ISO 4217, via Babel,
    as :mod:`campaigns.money` reads it): 2 for EUR, 0 for JPY, 3 for KWD."""
    return int(get_currency_precision(currency.upper()))


def format_money(minor: float | None, currency: str, *, signed: bool = False) -> str:
    """Minor units as major units with the currency code: ``EUR 1,234.50``."""
    if minor is None:
        return MISSING
    exponent = currency_exponent(currency)
    major = minor / 10**exponent
    sign = "-" if major < 0 else ("+" if signed and major > 0 else "")
    return f"{sign}{currency} {abs(major):,.{exponent}f}"


def format_number(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return MISSING
    sign = "+" if signed and value > 0 else ""
    size = abs(value)
    if size >= 1000 or (size >= 100 and float(value).is_integer()):
        return f"{sign}{value:,.0f}"
    if size >= 1:
        return f"{sign}{value:,.2f}"
    return f"{sign}{value:.3g}"


def format_percent(value: float | None, *, signed: bool = False, digits: int = 1) -> str:
    if value is None:
        return MISSING
    sign = "+" if signed and value > 0 else ""
    return f"{sign}{value * 100:.{digits}f}%"


def format_pp(value: float | None, *, signed: bool = True) -> str:
    """A difference of two rates in percentage points."""
    if value is None:
        return MISSING
    sign = "+" if signed and value > 0 else ""
    return f"{sign}{value * 100:.1f} pp"


def format_p(value: float | None, *, floored: bool = False) -> str:
    if value is None:
        return MISSING
    if floored:
        return "< 1e-300"
    if value < 0.0001:
        return "< 0.0001"
    return f"{value:.4f}" if value < 0.01 else f"{value:.3f}"


def format_count(value: int | None) -> str:
    return MISSING if value is None else f"{value:,}"


def format_time(value: datetime | None) -> str:
    return MISSING if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class _Units:
    """How to print a metric's level and a difference of it."""

    level: Callable[[float | None], str]
    diff: Callable[[float | None], str]


def metric_kinds(report: Report) -> Callable[[str], str]:
    """Each metric's kind in ``report``: RATE (a 0/1 rate or a share), MONEY (minor units of
    the campaign's currency, live campaigns only) or NUMBER.

    The registry (:data:`analytics.metrics.METRICS`) says first; a key it does not know (an
    imported experiment's metric) is a rate when it was compared as a proportion.
    """
    proportions = {r.metric.removesuffix("_cuped") for r in [*report.results, *report.segments]
                   if r.comparison.method == PROPORTIONS_METHOD}
    live = report.campaign.origin == CampaignOrigin.LIVE.value

    def kind(metric: str) -> str:
        known = metric_lookup(metric)
        if known is not None and known.is_rate:
            return RATE
        if known is not None and known.is_money and live:
            return MONEY
        return RATE if metric.removesuffix("_cuped") in proportions else NUMBER

    return kind


def _units(report: Report) -> Callable[[str], _Units]:
    """The printer of each metric: rates in % and pp, money in major units, else numbers."""
    currency = report.campaign.currency
    by_kind = {
        RATE: _Units(level=format_percent, diff=format_pp),
        MONEY: _Units(level=lambda v: format_money(v, currency),
                      diff=lambda v: format_money(v, currency, signed=True)),
        NUMBER: _Units(level=format_number, diff=lambda v: format_number(v, signed=True))}
    kind_of = metric_kinds(report)
    return lambda metric: by_kind[kind_of(metric)]


def interval_text(low: float | None, high: float | None, fmt: Callable[[float | None], str]
              ) -> str:
    if low is None or high is None:
        return MISSING
    return f"{fmt(low)} to {fmt(high)}"


def _significant(low: float | None, high: float | None) -> bool:
    return low is not None and high is not None and (low > 0 or high < 0)


# --------------------------------------------------------------------------- SVG charts

_CONTROL_COLOUR = "#6b7280"
_PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d")
_FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def arm_colours(report: Report) -> dict[str, str]:
    colours: dict[str, str] = {}
    treatments = 0
    for arm in report.arms:
        if arm.is_control:
            colours[arm.name] = _CONTROL_COLOUR
        else:
            colours[arm.name] = _PALETTE[treatments % len(_PALETTE)]
            treatments += 1
    return colours


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def _svg(width: int, height: int, title: str, body: Iterable[str]) -> Markup:
    # No xmlns: inline SVG in HTML needs none, and the file then names no URL at all.
    # Every caller escapes the text it puts in ``body``; numbers and colours are ours.
    svg = (f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
           f'class="chart" {_FONT}><title>{escape(title)}</title>{"".join(body)}</svg>')
    return Markup(svg)  # noqa: S704


@dataclass(frozen=True)
class IntervalRow:
    """One row of an interval (forest) plot."""

    label: str
    estimate: float
    low: float | None
    high: float | None
    colour: str
    text: str


def interval_plot(rows: Sequence[IntervalRow], *, title: str,
                  axis: Callable[[float], str], clip: tuple[float, float] | None = None
                  ) -> Markup:
    """Estimates with their intervals on a shared axis, a line at zero (a forest plot).

    A filled mark: the interval drawn on its row excludes zero. Intervals beyond ``clip``
    are cut at its edge and end in an arrow, and an estimate beyond it is a triangle at
    the edge (its value in the text column, marked "beyond the axis"), so one wild
    interval does not squash the others and no clipped point passes for a real one.
    """
    label_w, plot_w, text_w, row_h, top = 290, 400, 250, 22, 30
    width, height = label_w + plot_w + text_w, top + row_h * len(rows) + 40
    values = [0.0] + [v for r in rows for v in (r.estimate, r.low, r.high) if v is not None]
    low, high = min(values), max(values)
    if clip is not None:
        low, high = max(low, clip[0]), min(high, clip[1])
    pad = (high - low) * 0.05 or 0.01
    low, high = low - pad, high + pad

    def x(value: float) -> float:
        return label_w + (min(max(value, low), high) - low) / (high - low) * plot_w

    body = [f'<line x1="{x(0):.1f}" y1="{top - 8}" x2="{x(0):.1f}" '
            f'y2="{height - 32}" stroke="#111827" stroke-dasharray="4 3"/>']
    for tick in nice_ticks(low, high):
        body.append(f'<line x1="{x(tick):.1f}" y1="{height - 32}" x2="{x(tick):.1f}" '
                    f'y2="{height - 27}" stroke="#9ca3af"/><text x="{x(tick):.1f}" '
                    f'y="{height - 14}" text-anchor="middle" fill="#374151">'
                    f'{escape(axis(tick))}</text>')
    for index, row in enumerate(rows):
        y = top + index * row_h + row_h / 2
        if index % 2 == 0:
            body.append(f'<rect x="0" y="{y - row_h / 2:.1f}" width="{width}" '
                        f'height="{row_h}" fill="#f9fafb"/>')
        body.append(f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end" '
                    f'fill="#111827">{escape(row.label)}</text>')
        if row.low is not None and row.high is not None:
            body.append(f'<line x1="{x(row.low):.1f}" y1="{y:.1f}" x2="{x(row.high):.1f}" '
                        f'y2="{y:.1f}" stroke="{row.colour}" stroke-width="2"/>')
            for end, beyond, direction in ((row.low, row.low < low, -1),
                                           (row.high, row.high > high, 1)):
                if beyond:
                    tip = x(end)
                    body.append(f'<path d="M{tip:.1f},{y:.1f} l{-6 * direction},-4 v8 z" '
                                f'fill="{row.colour}"/>')
        # Filled: the interval drawn on this row excludes zero (the caption says so).
        filled = row.colour if _significant(row.low, row.high) else "#ffffff"
        text = row.text
        if low <= row.estimate <= high:
            body.append(f'<circle cx="{x(row.estimate):.1f}" cy="{y:.1f}" r="4.5" '
                        f'fill="{filled}" stroke="{row.colour}" stroke-width="2"/>')
        else:
            # An estimate beyond the axis: a triangle at the edge pointing out of the chart.
            direction = 1 if row.estimate > high else -1
            tip = x(row.estimate)
            body.append(f'<path class="clipped" d="M{tip:.1f},{y:.1f} l{-9 * direction},-6 '
                        f'v12 z" fill="{filled}" stroke="{row.colour}" stroke-width="2">'
                        '<title>estimate beyond the axis</title></path>')
            text += " (beyond the axis)"
        body.append(f'<text x="{label_w + plot_w + 10}" y="{y + 4:.1f}" '
                    f'fill="#374151">{escape(text)}</text>')
    return _svg(width, height, title, body)


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False


def line_chart(series: Sequence[Series], *, title: str, x_label: Callable[[float], str],
               y_label: Callable[[float], str], x_ticks: Sequence[float] | None = None,
               levels: Sequence[tuple[float, str]] = ()) -> Markup:
    """Lines over a shared x axis from zero up, with labelled horizontal reference levels."""
    left, right, top, bottom, width, height = 110, 20, 34, 36, 840, 300
    xs = [px for s in series for px, _ in s.points]
    ys = [py for s in series for _, py in s.points] + [level for level, _ in levels] + [0.0]
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_high = x_low + 1
    y_high = max(ys) * 1.08 or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(value: float) -> float:
        return left + (value - x_low) / (x_high - x_low) * plot_w

    def y(value: float) -> float:
        return top + plot_h - value / y_high * plot_h

    body: list[str] = []
    for tick in nice_ticks(0.0, y_high):
        body.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{width - right}" '
                    f'y2="{y(tick):.1f}" stroke="#e5e7eb"/><text x="{left - 6}" '
                    f'y="{y(tick) + 4:.1f}" text-anchor="end" fill="#374151">'
                    f'{escape(y_label(tick))}</text>')
    for tick in x_ticks if x_ticks is not None else nice_ticks(x_low, x_high):
        body.append(f'<text x="{x(tick):.1f}" y="{height - 14}" text-anchor="middle" '
                    f'fill="#374151">{escape(x_label(tick))}</text>')
    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" '
                f'y2="{top + plot_h}" stroke="#9ca3af"/>')
    for level, label in levels:
        body.append(f'<line x1="{left}" y1="{y(level):.1f}" x2="{width - right}" '
                    f'y2="{y(level):.1f}" stroke="#dc2626" stroke-dasharray="6 4"/>'
                    f'<text x="{width - right}" y="{y(level) - 5:.1f}" text-anchor="end" '
                    f'fill="#dc2626">{escape(label)}</text>')
    legend_x = left
    for line in series:
        path = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in line.points)
        dash = ' stroke-dasharray="5 4"' if line.dashed else ""
        body.append(f'<polyline points="{path}" fill="none" stroke="{line.colour}" '
                    f'stroke-width="2"{dash}><title>{escape(line.name)}</title></polyline>')
        body.append(f'<rect x="{legend_x}" y="8" width="12" height="12" '
                    f'fill="{line.colour}"/><text x="{legend_x + 16}" y="18" '
                    f'fill="#111827">{escape(line.name)}</text>')
        legend_x += 28 + 7 * len(line.name)
    return _svg(width, height, title, body)


def _date_ticks(days: Sequence[date], count: int = 6) -> list[float]:
    if len(days) <= count:
        return [float(d.toordinal()) for d in days]
    step = (len(days) - 1) / (count - 1)
    return [float(days[round(i * step)].toordinal()) for i in range(count)]


def _day_label(ordinal: float) -> str:
    return date.fromordinal(int(ordinal)).strftime("%d %b")


# --------------------------------------------------------------------------- HTML


def _lift_row(result: MetricResult, colour: str) -> IntervalRow | None:
    c = result.comparison
    if c.rel_lift is None:
        return None

    def signed(value: float | None) -> str:
        return format_percent(value, signed=True)

    return IntervalRow(label=f"{result.arm} · {result.metric}", estimate=c.rel_lift,
                       low=c.rel_lift_ci_low, high=c.rel_lift_ci_high, colour=colour,
                       text=f"{signed(c.rel_lift)} "
                       f"({interval_text(c.rel_lift_ci_low, c.rel_lift_ci_high, signed)})")


def forest_plot(report: Report) -> Markup | None:
    """Relative lift with its interval for every treatment arm and metric."""
    colours = arm_colours(report)
    rows = [row for result in report.results
            if (row := _lift_row(result, colours.get(result.arm, _PALETTE[0]))) is not None]
    if not rows:
        return None
    return interval_plot(rows, title="Relative lift against control with "
                         f"{1 - report.alpha:.0%} intervals", clip=(-1.0, 3.0),
                         axis=lambda v: format_percent(v, signed=True, digits=0))


def adoption_chart(report: Report) -> Markup | None:
    """Cumulative adoption rate by day, one line per arm."""
    if not report.timeline:
        return None
    colours = arm_colours(report)
    by_arm: dict[str, list[tuple[float, float]]] = {}
    for point in report.timeline:
        if point.rate is not None:
            by_arm.setdefault(point.arm, []).append((float(point.day.toordinal()), point.rate))
    days = sorted({point.day for point in report.timeline})
    return line_chart([Series(arm, colours.get(arm, _PALETTE[0]), points)
                       for arm, points in by_arm.items()],
                      title="Share of exposed customers who adopted the target channel, "
                      "by day", x_label=_day_label,
                      y_label=lambda v: format_percent(v, digits=0), x_ticks=_date_ticks(days))


def spend_chart(report: Report) -> Markup | None:
    """Cumulative incentive cost against the budget."""
    if not report.spend:
        return None
    currency = report.campaign.currency
    budget = report.campaign.budget_minor
    levels = [(float(budget), f"budget {format_money(budget, currency)}")] if budget else []
    days = [point.day for point in report.spend]
    return line_chart([Series("spent", "#2563eb", [(float(p.day.toordinal()), p.spent_minor)
                                                    for p in report.spend])],
                      title="Cumulative incentive cost against the budget",
                      x_label=_day_label, y_label=lambda v: format_money(v, currency),
                      x_ticks=_date_ticks(days), levels=levels)


def segment_metric(report: Report) -> str | None:
    """The metric the segment chart shows: the first primary metric broken down."""
    metrics = [s.metric for s in report.segments]
    return next((m for m in PRIMARY_METRICS if m in metrics), metrics[0] if metrics else None)


def segment_chart(report: Report) -> Markup | None:
    """Uplift (treatment - control) of the primary metric within each segment."""
    metric = segment_metric(report)
    if metric is None:
        return None
    units = _units(report)(metric)
    colours = arm_colours(report)
    rows = [IntervalRow(label=f"{s.segment} · {s.arm}", estimate=s.comparison.diff,
                        low=s.comparison.diff_ci_low, high=s.comparison.diff_ci_high,
                        colour=colours.get(s.arm, _PALETTE[0]),
                        text=f"{units.diff(s.comparison.diff)} "
                        f"(n {s.comparison.treatment_n:,} vs {s.comparison.control_n:,})")
            for s in report.segments if s.metric == metric and s.comparison.diff is not None]
    if not rows:
        return None
    return interval_plot(rows, title=f"Uplift of {metric} by segment", axis=units.diff)


def qini_chart(report: Report) -> Markup | None:
    qini = report.qini
    if qini is None or not qini.curve:
        return None
    colours = arm_colours(report)
    series: list[Series] = []
    for arm in dict.fromkeys(point.arm for point in qini.curve):
        points = [p for p in qini.curve if p.arm == arm]
        colour = colours.get(arm, _PALETTE[0])
        series.append(Series(f"{arm}", colour,
                             [(p.fraction_targeted, p.incremental_gain) for p in points]))
        series.append(Series(f"{arm} (random)", colour,
                             [(p.fraction_targeted, p.random_gain) for p in points],
                             dashed=True))
    return line_chart(series, title=f"Qini curve of {qini.metric} by score {qini.score}",
                      x_label=lambda v: format_percent(v, digits=0),
                      y_label=format_number, x_ticks=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def _is_primary(result: MetricResult) -> bool:
    """A metric the experiment is judged on: Holm-corrected (or a live goal's primary)."""
    return result.p_value_holm is not None or result.metric in PRIMARY_METRICS


def _result_rows(report: Report, results: Sequence[MetricResult]) -> list[dict[str, Any]]:
    units = _units(report)
    rows = []
    for result in results:
        c = result.comparison
        unit = units(result.metric)
        rows.append({
            "arm": result.arm, "metric": result.metric, "segment": result.segment,
            "n_control": format_count(c.control_n), "n_treatment": format_count(c.treatment_n),
            "control": unit.level(c.control_mean), "treatment": unit.level(c.treatment_mean),
            "diff": unit.diff(c.diff), "diff_ci": interval_text(c.diff_ci_low, c.diff_ci_high,
                                                            unit.diff),
            "rel_lift": format_percent(c.rel_lift, signed=True),
            "rel_lift_ci": interval_text(c.rel_lift_ci_low, c.rel_lift_ci_high,
                                     lambda v: format_percent(v, signed=True)),
            "p_value": format_p(c.p_value, floored=c.p_value_floored),
            "p_value_holm": format_p(result.p_value_adjusted(report.correction)),
            "variance_reduction": (format_percent(result.variance_reduction)
                                   if result.variance_reduction is not None else None),
            "significant": _significant(c.diff_ci_low, c.diff_ci_high),
            "primary": _is_primary(result), "note": c.reason or ""})
    return rows


def view_rows(report: Report, results: Sequence[MetricResult]) -> list[dict[str, Any]]:
    """The Bayesian and always-valid views of ``results``, formatted for people."""
    units = _units(report)
    rows = []
    for result in results:
        bayes, sequence = result.bayesian, result.sequential
        if bayes is None or sequence is None:
            continue
        unit = units(result.metric)
        relative = result.bayesian_relative
        rows.append({
            "arm": result.arm, "metric": result.metric, "segment": result.segment,
            "chance": format_percent(bayes.chance_to_beat_baseline),
            "loss": unit.diff(bayes.expected_loss),
            "loss_baseline": unit.diff(bayes.expected_loss_baseline),
            "loss_relative": format_percent(relative.expected_loss if relative else None),
            "credible": interval_text(bayes.ci_low, bayes.ci_high, unit.diff),
            "always_valid": interval_text(sequence.ci_low, sequence.ci_high, unit.diff),
            "always_valid_p": format_p(sequence.p_value_always_valid,
                                       floored=sequence.p_value_floored),
            "always_valid_significant": sequence.significant,
            "primary": _is_primary(result), "note": bayes.reason or sequence.reason or ""})
    return rows


def heterogeneity_rows(report: Report, metrics: Iterable[str] | None = None
                       ) -> list[dict[str, Any]]:
    """Cochran's Q per breakdown, arm and metric (of ``metrics``, default all), formatted."""
    wanted = set(metrics) if metrics is not None else None
    ordered = [row for row in report.heterogeneity if wanted is None or row.metric in wanted]
    return [{"breakdown": row.breakdown, "arm": row.arm, "metric": row.metric,
             "segments": row.test.segments,
             "q": format_number(row.test.q), "df": row.test.df if row.test.df else MISSING,
             "p_value": format_p(row.test.p_value, floored=row.test.p_value_floored),
             "i_squared": format_percent(row.test.i_squared, digits=0),
             "differs": row.test.p_value is not None and row.test.p_value < report.alpha,
             "note": row.test.reason or ""} for row in ordered]


def economics_rows(report: Report) -> list[dict[str, Any]]:
    currency = report.campaign.currency

    def fmt(value: float | None, unit: str) -> str:
        if unit == "minor":
            return format_money(value, currency)
        if unit == "ratio":
            return format_percent(value, signed=True)
        return format_number(value)

    return [{"arm": e.arm, "metric": e.metric.replace("_", " "),
             "estimate": fmt(e.estimate, e.unit),
             "interval": interval_text(e.ci_low, e.ci_high, partial(fmt, unit=e.unit)),
             "note": e.reason or ""} for e in report.economics]


def _guardrail_rows(report: Report) -> list[dict[str, Any]]:
    units = _units(report)
    return [{"arm": g.arm, "metric": g.metric,
             "harm": "an increase" if g.harm_direction > 0 else "a decrease",
             "control": units(g.metric).level(g.control_mean),
             "treatment": units(g.metric).level(g.treatment_mean),
             "diff": units(g.metric).diff(g.diff),
             "n": f"{g.control_n:,} / {g.treatment_n:,}",
             "level": format_percent(g.level, digits=2) if g.level is not None else "",
             "interval": interval_text(g.ci_low, g.ci_high, units(g.metric).diff),
             "p_value": format_p(g.p_value_always_valid), "harm_detected": g.harm_detected,
             "note": g.reason or ""} for g in report.guardrails]


def _qini_rows(report: Report) -> list[dict[str, Any]]:
    if report.qini is None:
        return []
    return [{"arm": d.arm, "decile": d.decile,
             "score": f"{format_number(d.score_min)} to {format_number(d.score_max)}",
             "n": f"{d.treatment_n:,} vs {d.control_n:,}",
             "treatment": format_percent(d.treatment_rate),
             "control": format_percent(d.control_rate), "uplift": format_pp(d.uplift),
             "interval": interval_text(d.uplift_ci_low, d.uplift_ci_high, format_pp)}
            for d in report.qini.deciles]


def _headline_segments(report: Report) -> list[MetricResult]:
    """The segment rows a page has room for: the primary metrics (the files hold all)."""
    primary = [s for s in report.segments if _is_primary(s)]
    return primary or [s for s in report.segments if s.metric == segment_metric(report)]


def _headline(report: Report) -> list[str]:
    """One sentence per treatment arm and primary metric."""
    units = _units(report)
    level = f"{1 - report.alpha:.0%}"
    out = []
    for result in report.results:
        if not _is_primary(result):
            continue
        c = result.comparison
        unit = units(result.metric)
        text = (f"{result.arm}: {result.metric} {unit.level(c.treatment_mean)} vs "
                f"{unit.level(c.control_mean)} in control, {unit.diff(c.diff)}")
        if c.diff_ci_low is not None and c.diff_ci_high is not None:
            text += f" ({level} CI {interval_text(c.diff_ci_low, c.diff_ci_high, unit.diff)})"
        adjusted = result.p_value_adjusted(report.correction)
        if adjusted is not None:
            text += (f", {_CORRECTION_LABELS[report.correction]}-adjusted p "
                     f"{format_p(adjusted)}")
        out.append(("Interim: " if report.interim is not None else "") + text + ".")
    return out


@lru_cache(maxsize=1)
def _environment() -> Environment:
    folder = Path(__file__).resolve().parent / "templates"
    return Environment(loader=FileSystemLoader(folder), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(report: Report) -> str:
    """One self-contained HTML page: inline CSS and SVG, no script, no external reference."""
    campaign = report.campaign
    total = sum(arm.n for arm in report.arms)
    budget = campaign.budget_minor
    return _environment().get_template("report.html").render(
        report=report, campaign=campaign, live=campaign.origin == CampaignOrigin.LIVE.value,
        generated_at=format_time(report.generated_at),
        starts_at=format_time(campaign.starts_at), ends_at=format_time(campaign.ends_at),
        first_exposure=format_time(report.date_range.first_exposure)
        if report.date_range else None,
        last_exposure=format_time(report.date_range.last_exposure)
        if report.date_range else None,
        confidence=f"{1 - report.alpha:.0%}", srm_text=srm_sentence(report.srm),
        arms=[{"name": arm.name, "control": arm.is_control, "n": format_count(arm.n),
               "share": format_percent(arm.n / total) if total else MISSING,
               "weight": f"{arm.planned_weight}%",
               "planned_share": format_percent(arm.planned_share),
               "observed_share": format_percent(arm.observed_share),
               "incentive": (f"{arm.incentive_name} ({arm.incentive_type})"
                             if arm.incentive_type else "none (holdout)" if arm.is_control
                             else MISSING)} for arm in report.arms],
        total=format_count(total),
        budget=format_money(budget, campaign.currency) if budget is not None else "no budget",
        spent=format_money(campaign.spent_minor, campaign.currency),
        spent_share=format_percent(campaign.spent_minor / budget) if budget else None,
        headline=_headline(report),
        results=_result_rows(report, report.results),
        segments=_result_rows(report, _headline_segments(report)),
        economics=economics_rows(report), guardrails=_guardrail_rows(report),
        deciles=_qini_rows(report), forest_plot=forest_plot(report),
        adoption_chart=adoption_chart(report), spend_chart=spend_chart(report),
        segment_chart=segment_chart(report), qini_chart=qini_chart(report),
        segment_metric=segment_metric(report),
        correction_label=_CORRECTION_LABELS[report.correction],
        baseline=report.baseline_arm or "control",
        views=view_rows(report, [r for r in report.results if _is_primary(r)]),
        heterogeneity=heterogeneity_rows(
            report, {segment.metric for segment in _headline_segments(report)}),
        qini_coefficients={arm: format_number(value) for arm, value in
                           (report.qini.qini_coefficient.items() if report.qini else [])},
    )
