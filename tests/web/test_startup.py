"""What a server or CLI process loads before its first request or command.

SciPy, statsmodels and pandas take about a second to import, and most processes never
compute a statistic or write a spreadsheet: they load on first use, inside the functions
of ``analytics/``. A module-level import of one of them anywhere on the way from
``web.app`` or ``web.cli`` would bring that second back to every server worker's start and
every CLI command.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("scipy", "statsmodels", "pandas", "openpyxl")


@pytest.mark.parametrize("module", ["web.app", "web.cli"])
def test_start_does_not_load_the_scientific_libraries(module: str) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c",
         f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"],
        capture_output=True, text=True, check=True, timeout=120).stdout.split()
    assert loaded == []


def test_statistics_load_them_on_first_use() -> None:
    """The lazily imported functions work in a fresh process (SciPy checks the figure)."""
    output = subprocess.run(
        [sys.executable, "-c",
         "from analytics.stats import MeanStats, compare_means, srm_check\n"
         "c = compare_means(MeanStats.from_values([1, 2, 3, 4]),"
         " MeanStats.from_values([2, 3, 4, 5]))\n"
         "from scipy import stats\n"
         "t = stats.ttest_ind([2, 3, 4, 5], [1, 2, 3, 4], equal_var=False)\n"
         "print(abs(c.p_value - t.pvalue) < 1e-12, srm_check([500, 500], [0.5, 0.5]).flagged)"],
        capture_output=True, text=True, check=True, timeout=120).stdout.split()
    assert output == ["True", "False"]


OPENTELEMETRY_PROBE = """
from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, TracerProvider

class Provider(TracerProvider):  # as an SDK or an agent would set up
    def get_tracer(self, *args, **kwargs):
        return NoOpTracer()

trace.set_tracer_provider(Provider())
from campaigns.settings import Settings
from web.app import create_app
for wanted in (False, True):
    app = create_app(settings=Settings(opentelemetry=wanted), check_schema=False)
    print(app._native_telemetry.enabled())
"""


def test_opentelemetry_instrumentation_only_when_asked(tmp_path) -> None:
    """FastAPI's own instrumentation looks for providers on every request; it is on only
    with CHANNELSHIFT_OPENTELEMETRY, even where a provider is set up."""
    output = subprocess.run(
        [sys.executable, "-c", OPENTELEMETRY_PROBE], capture_output=True, text=True,
        check=True, timeout=120, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "CHANNELSHIFT_DATA_DIR": str(tmp_path)}).stdout.split()
    assert output == ["False", "True"]
