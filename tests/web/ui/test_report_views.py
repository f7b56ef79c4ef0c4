"""The report page's options and new sections: baseline arm, correction, Cochran's Q,
chance to beat the baseline and the always-valid interval."""

from __future__ import annotations

import io
from html import unescape

import pandas as pd
import pytest
from sqlmodel import Session
from statsmodels.stats.meta_analysis import combine_effects

from analytics.exports import format_number, format_percent
from campaigns.models import Campaign, Role
from tests.analytics import gbstats_reference as gb
from tests.builders import make_running_campaign
from tests.web.ui.test_report_pages import expose

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def experiment(session: Session) -> Campaign:
    """Control 40 of 201 adopted, treatment 90 of 219; tiers cycle bronze, silver, gold."""
    campaign = make_running_campaign(session)
    expose(session, campaign, "control", customers=201, adopters=40, prefix="C")
    expose(session, campaign, "ten percent", customers=219, adopters=90, prefix="T")
    return campaign


def tier_counts(customers: int, adopters: int) -> list[tuple[int, int]]:
    """(customers, adopters) per tier as ``expose`` cycles them: the first ``adopters``."""
    return [(len(range(t, customers, 3)), len(range(t, adopters, 3))) for t in range(3)]


class TestReportPage:
    def test_chance_to_beat_and_always_valid_interval(self, experiment, as_role) -> None:
        html = unescape(as_role(Role.ANALYST).get(f"/campaigns/{experiment.id}/report").text)
        reference = gb.effect_bayesian(gb.ProportionStatistic(201, 40),
                                       gb.ProportionStatistic(219, 90), relative=False)
        assert reference is not None
        assert "Chance to beat</th>" in html
        assert f'<td class="num nowrap">{format_percent(reference.chance_to_win)}</td>' in html
        assert "always valid " in html

    def test_cochran_q_above_the_segment_rows(self, experiment, as_role) -> None:
        html = unescape(as_role(Role.ANALYST).get(
            f"/campaigns/{experiment.id}/report?segment=value_tier").text)
        cells = list(zip(tier_counts(201, 40), tier_counts(219, 90), strict=True))
        diffs = [kt / nt - kc / nc for (nc, kc), (nt, kt) in cells]
        variances = [(kc / nc) * (1 - kc / nc) / nc + (kt / nt) * (1 - kt / nt) / nt
                     for (nc, kc), (nt, kt) in cells]
        q = combine_effects(pd.Series(diffs).to_numpy(), pd.Series(variances).to_numpy()).q
        section = html[html.index('id="segments-title"'):]
        assert section.index('class="heterogeneity"') < section.index('class="segments"')
        assert f"{format_number(q)} (2)" in section
        assert "Holm step-down (family-wise error rate) correction across the whole table" \
            in section

    def test_options_reach_the_page_and_the_downloads(self, experiment, as_role) -> None:
        analyst = as_role(Role.ANALYST)
        html = unescape(analyst.get(f"/campaigns/{experiment.id}/report?correction=bh"
                                    "&baseline=ten+percent&segment=value_tier").text)
        assert '<option value="bh" selected>' in html
        assert '<option value="ten percent" selected>' in html
        assert "BH p</th>" in html and "Holm p</th>" not in html
        assert "each arm against ten percent" in html
        csv = analyst.get(f"/campaigns/{experiment.id}/report.csv",
                          params={"correction": "bh", "baseline": "ten percent"})
        frame = pd.read_csv(io.BytesIO(csv.content))
        adoption = frame[(frame.metric == "adoption") & (frame.segment == "all")]
        assert set(adoption.arm) == {"control"}
        assert "p_value_bh" in set(adoption.statistic)
        diff = adoption[adoption.statistic == "diff"].value.astype(float).item()
        assert diff == pytest.approx(40 / 201 - 90 / 219, rel=1e-12)

    @pytest.mark.parametrize(("query", "field"), [("baseline=nobody", "baseline"),
                                                  ("correction=sidak", "correction")])
    def test_bad_options_are_refused(self, experiment, as_role, query, field) -> None:
        response = as_role(Role.ANALYST).get(f"/campaigns/{experiment.id}/report?{query}")
        assert response.status_code == 400
        assert f"The report option &#39;{field}&#39; is not valid" in response.text
