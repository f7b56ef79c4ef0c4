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
