"""The JSON log line: what each record becomes (web.observability.JsonFormatter)."""

from __future__ import annotations

import json
import logging
import sys
from decimal import Decimal

import pytest

from web.observability import JsonFormatter


def record(message: str = "request", *, created: float | None = None,
           level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("channelshift.access", level, __file__, 1, message, (), None)
    if created is not None:
        made.created = created
    for name, value in extra.items():
        setattr(made, name, value)
    return made


@pytest.fixture
def formatter() -> JsonFormatter:
    return JsonFormatter()


class TestTime:
    def test_utc_to_the_microsecond(self, formatter: JsonFormatter) -> None:
        line = json.loads(formatter.format(record(created=1_700_000_000.25)))
        assert line["time"] == "2023-11-14T22:13:20.250000+00:00"

    def test_a_whole_second_keeps_its_microseconds(self, formatter: JsonFormatter) -> None:
        # Every line has the same shape, so log tools can parse the time with one format.
        line = json.loads(formatter.format(record(created=1_700_000_000.0)))
        assert line["time"] == "2023-11-14T22:13:20.000000+00:00"

    def test_each_second_is_its_own(self, formatter: JsonFormatter) -> None:
        times = [json.loads(formatter.format(record(created=created)))["time"]
                 for created in (1_700_000_000.5, 1_700_000_001.5, 1_700_000_000.999999,
                                 1_700_086_400.0)]
        assert times == ["2023-11-14T22:13:20.500000+00:00", "2023-11-14T22:13:21.500000+00:00",
                         "2023-11-14T22:13:20.999999+00:00", "2023-11-15T22:13:20.000000+00:00"]


class TestFields:
    def test_the_line(self, formatter: JsonFormatter) -> None:
        line = json.loads(formatter.format(record(
            "request %s", created=1_700_000_000.0, request_id="0123456789abcdef",
            method="GET", route="/api/v1/customers/{customer_id}/offers", status=200,
            duration_ms=3.21, caller=None)))
        assert line == {"time": "2023-11-14T22:13:20.000000+00:00", "level": "info",
                        "logger": "channelshift.access", "message": "request %s",
                        "request_id": "0123456789abcdef", "method": "GET",
                        "route": "/api/v1/customers/{customer_id}/offers", "status": 200,
                        "duration_ms": 3.21, "caller": None}

    def test_only_the_safe_extras(self, formatter: JsonFormatter) -> None:
        line = json.loads(formatter.format(record(status=409, code="SECRET-CODE",
                                                  authorization="Bearer cs_x")))
        assert line["status"] == 409
        assert "code" not in line and "authorization" not in line

    def test_a_value_json_cannot_hold_is_written_as_text(self, formatter: JsonFormatter
                                                         ) -> None:
        class Odd:
            def __str__(self) -> str:
                return "odd"

        line = json.loads(formatter.format(record(caller=Odd(), campaign_id=Decimal("7"))))
        assert line["caller"] == "odd"
        assert line["campaign_id"] in ("7", 7)

    def test_text_outside_ascii_is_escaped(self, formatter: JsonFormatter) -> None:
        text = formatter.format(record("café ünïcode ☕", level=logging.WARNING))
        assert text.isascii()
        assert json.loads(text)["message"] == "café ünïcode ☕"
        assert json.loads(text)["level"] == "warning"

    def test_the_traceback(self, formatter: JsonFormatter) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            failed = record("failed", level=logging.ERROR)
            failed.exc_info = sys.exc_info()
        line = json.loads(formatter.format(failed))
        assert line["exception"].startswith("Traceback")
        assert line["exception"].endswith("ValueError: boom")
