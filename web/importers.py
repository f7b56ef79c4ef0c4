"""Importing channel events and conversions from a CSV file, all or nothing.

The file is read twice, streaming, so a file of millions of rows needs memory for one
chunk of rows, not for the file:

The columns are documented in the ``channelshift import events --help`` text (web/cli.py).

1. **check**: every row goes through the same validation as the API
   (:class:`campaigns.services.events.EventValidator`); problems are collected with their
   line and column. Event ids repeated inside the file are found from an 8-byte hash per
   row (a sorted array, not a set of strings) and confirmed by a third pass that runs only
   when two hashes collide. Nothing is written if any row is bad.
2. **load**: in one transaction, chunks of ``batch_size`` rows are recorded with
   :func:`campaigns.services.events.record_events` (set-based inserts, the same side
   effects as the API). Event ids already in the database count as duplicates, so
   importing the same file again changes nothing.
"""

from __future__ import annotations

import csv
import io
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.progress import Progress, TaskID
from sqlalchemy import Engine
from sqlmodel import Session

from campaigns.db import session_scope
from campaigns.errors import FieldError
from campaigns.services.catalog import load_snapshot
from campaigns.services.epoch import read_config_epoch
from campaigns.services.events import (
    MAX_MINOR,
    EventBatchResult,
    EventRecord,
    EventValidator,
    load_vocabulary,
    record_events,
)
from campaigns.types import utcnow

EVENT_COLUMNS = ("type", "event_id", "customer_id", "channel", "stage", "occurred_at", "kind",
                 "cost_minor", "revenue_minor", "margin_minor")
REQUIRED_COLUMNS = ("event_id", "customer_id", "occurred_at")
MONEY_COLUMNS = frozenset({"cost_minor", "revenue_minor", "margin_minor"})
MAX_LISTED_ERRORS = 20
DEFAULT_BATCH_SIZE = 10_000

_WHOLE_NUMBER = re.compile(r"[+-]?\d+")
_MAX_MONEY_DIGITS = 30
_PROGRESS_EVERY = 2_000  # rows between progress-bar updates


@dataclass(frozen=True, order=True)
class RowError:
    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class CsvRejected(Exception):
    """The file has bad rows (or a bad header); nothing was written."""

    def __init__(self, errors: list[RowError], total: int, rows: int) -> None:
        self.errors = errors
        self.total = total
        self.rows = rows
        more = f" (the first {len(errors)} are listed)" if total > len(errors) else ""
        super().__init__(f"{total:,} problem(s) in {rows:,} row(s){more}; nothing was imported")


@dataclass
class _Problems:
    """The first ``limit`` problems by line, and how many there were in all."""

    limit: int = MAX_LISTED_ERRORS
    listed: list[RowError] = field(default_factory=list)
    total: int = 0

    def add(self, error: RowError) -> None:
        self.total += 1
        self.listed.append(error)
        if len(self.listed) > 10 * self.limit:
            self.listed = sorted(self.listed)[:self.limit]

    def first(self) -> list[RowError]:
        return sorted(self.listed)[:self.limit]


@dataclass(frozen=True)
class ImportSummary:
    rows: int
    result: EventBatchResult


# --------------------------------------------------------------------------- reading


class CsvFile:
    """A UTF-8 CSV file read row by row as raw events (dicts), with line numbers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.position = 0  # bytes read so far (to the buffer), for progress bars

    def rows(self) -> Iterator[tuple[int, dict[str, Any] | list[RowError]]]:
        """(line, raw event) per row, or (line, problems) for a row that cannot be read.

        Raises :class:`CsvRejected` for a bad header or text that is not UTF-8.
        """
        self.position = 0
        with self.path.open("rb") as binary:
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
            reader = csv.reader(text)
            line = 0  # the last line read so far
            try:
                header = self._header(next(reader, None))
                line = reader.line_num
                for count, cells in enumerate(reader, start=1):
                    # A quoted cell may span lines: the row starts after the previous one.
                    start, line = line + 1, reader.line_num
                    if count % _PROGRESS_EVERY == 0:
                        self.position = binary.tell()
                    if not cells or cells == [""]:
                        continue  # blank line
                    yield start, self._raw_event(header, cells, start)
            except UnicodeDecodeError as error:
                raise CsvRejected([RowError(line + 1, "-", f"the file is not UTF-8 text "
                                            f"({error.reason})")], 1, line) from None
            except csv.Error as error:
                raise CsvRejected([RowError(line + 1, "-", f"not valid CSV: {error}")],
                                  1, line) from None
            self.position = self.size

    def _header(self, cells: list[str] | None) -> list[str]:
        if cells is None:
            raise CsvRejected([RowError(1, "-", "the file is empty; it needs a header row: "
                                        + ",".join(EVENT_COLUMNS))], 1, 0)
        header = [cell.strip().lower() for cell in cells]
        problems = [RowError(1, name or f"#{index + 1}",
                             f"unknown column '{name}'; the columns are "
                             + ", ".join(EVENT_COLUMNS))
                    for index, name in enumerate(header) if name not in EVENT_COLUMNS]
        problems += [RowError(1, name, "column named twice in the header")
                     for index, name in enumerate(header)
                     if name in EVENT_COLUMNS and name in header[:index]]
        problems += [RowError(1, name, f"missing column '{name}' (required)")
                     for name in REQUIRED_COLUMNS if name not in header]
        if problems:
            raise CsvRejected(problems, len(problems), 0)
        return header

    @staticmethod
    def _raw_event(header: list[str], cells: list[str], line: int
                   ) -> dict[str, Any] | list[RowError]:
        if len(cells) != len(header):
            return [RowError(line, "-", f"the row has {len(cells)} field(s) but the header "
                             f"has {len(header)}")]
        raw: dict[str, Any] = {}
        for name, cell in zip(header, cells, strict=True):
            value: Any = cell.strip()
            if not value:
                continue
            if name in MONEY_COLUMNS and _WHOLE_NUMBER.fullmatch(value):
                digits = len(value.lstrip("+-"))
                if digits > _MAX_MONEY_DIGITS:
                    # Far beyond any amount (and, past 4,300 digits, beyond what Python
                    # turns into a number at all): refused without converting it.
                    return [RowError(line, name, f"{name} must be at most "
                                     f"{MAX_MINOR:,} minor units; got a number of "
                                     f"{digits:,} digits")]
                value = int(value)  # anything else stays text and is refused as money
            raw[name] = value
        return raw


def _row_errors(line: int, errors: list[FieldError]) -> list[RowError]:
    return [RowError(line, str(e.loc[0]) if e.loc else "-", e.msg) for e in errors]


# --------------------------------------------------------------------------- pass 1: check


def check_events_csv(csv_file: CsvFile, *, validator: EventValidator,
                     progress: Progress | None = None) -> int:
    """Check every row; raise :class:`CsvRejected` listing the problems. Returns the row count."""
    problems = _Problems()
    hashes = array("q")  # one 8-byte hash of the event id per row
    rows = 0
    task = _task(progress, "checking", total=csv_file.size)
    for line, raw in csv_file.rows():
        rows += 1
        if rows % _PROGRESS_EVERY == 0:
            _show(progress, task, completed=csv_file.position, rows=rows)
        if isinstance(raw, list):
            for error in raw:
                problems.add(error)
            continue
        checked = validator.check(raw)
        if not isinstance(checked, EventRecord):
            for error in _row_errors(line, checked):
                problems.add(error)
        event_id = raw.get("event_id")
        if isinstance(event_id, str):
            hashes.append(hash(event_id))
    _show(progress, task, completed=csv_file.size, rows=rows)
    for error in _repeated_ids(csv_file, hashes):
        problems.add(error)
    if problems.total:
        raise CsvRejected(problems.first(), problems.total, rows)
    return rows


def _repeated_ids(csv_file: CsvFile, hashes: array[int]) -> Iterator[RowError]:
    """Rows whose event id was already used higher up in the file."""
    import numpy as np  # only the import command needs it; keep the CLI quick to start

    ordered = np.sort(np.frombuffer(hashes, dtype=np.int64))
    suspects = set(np.unique(ordered[1:][ordered[1:] == ordered[:-1]]).tolist())
    if not suspects:
        return
    first_line: dict[str, int] = {}
    for line, raw in csv_file.rows():
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        if not isinstance(event_id, str) or hash(event_id) not in suspects:
            continue
        if event_id in first_line:
            yield RowError(line, "event_id", f"event_id '{event_id}' is used again; it is "
                           f"already the id of line {first_line[event_id]}")
        else:
            first_line[event_id] = line


# --------------------------------------------------------------------------- pass 2: load


def load_events_csv(csv_file: CsvFile, *, session: Session, validator: EventValidator,
                    rows: int, batch_size: int = DEFAULT_BATCH_SIZE,
                    progress: Progress | None = None, now: datetime | None = None
                    ) -> EventBatchResult:
    """Record every row in chunks of ``batch_size`` inside the caller's transaction."""
    snapshot = load_snapshot(session, epoch=read_config_epoch(session))
    total = EventBatchResult(accepted=0, duplicates=0, batch_size=0)
    task = _task(progress, "importing", total=rows)
    chunk: list[EventRecord] = []

    def flush() -> None:
        nonlocal total
        total += record_events(session, events=chunk, snapshot=snapshot, now=now)
        chunk.clear()
        _show(progress, task, completed=total.batch_size, rows=total.batch_size, of=rows)

    for line, raw in csv_file.rows():
        checked = validator.check(raw) if isinstance(raw, dict) else raw
        if not isinstance(checked, EventRecord):
            # Only possible if channels or stages changed since the check: stop, roll back.
            errors = checked if isinstance(raw, list) else _row_errors(line, checked)
            raise CsvRejected(errors[:MAX_LISTED_ERRORS], len(errors), rows)
        chunk.append(checked)
        if len(chunk) >= batch_size:
            flush()
    if chunk:
        flush()
    return total


def import_events_csv(path: Path, *, engine: Engine, batch_size: int = DEFAULT_BATCH_SIZE,
                      progress: Progress | None = None, now: datetime | None = None
                      ) -> ImportSummary:
    """Check the whole file, then import it in one transaction; :class:`CsvRejected` if bad."""
    now = now or utcnow()
    csv_file = CsvFile(path)
    with Session(engine) as session:
        vocabulary = load_vocabulary(session)
    rows = check_events_csv(csv_file, validator=EventValidator(vocabulary, now=now),
                            progress=progress)
    with session_scope(engine) as session:
        validator = EventValidator(load_vocabulary(session), now=now)
        result = load_events_csv(csv_file, session=session, validator=validator, rows=rows,
                                 batch_size=batch_size, progress=progress, now=now)
    return ImportSummary(rows=rows, result=result)


def _task(progress: Progress | None, description: str, *, total: int) -> TaskID | None:
    """A progress task; its ``rows`` field is shown by the CLI's progress columns."""
    if progress is None:
        return None
    return progress.add_task(description, total=total, rows="")


def _show(progress: Progress | None, task: TaskID | None, *, completed: int, rows: int,
          of: int | None = None) -> None:
    if progress is not None and task is not None:
        text = f"{rows:,} rows" if of is None else f"{rows:,} of {of:,} rows"
        progress.update(task, completed=completed, rows=text)
