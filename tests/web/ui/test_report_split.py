"""The UI report's sample-ratio part: planned against observed share for every arm."""

from __future__ import annotations

from campaigns.models import Role
from tests.web.api.test_reports_uplift import experiment_frame, import_frame
from tests.web.ui.test_report_pages import text


class TestSampleRatioPart:
    def test_imported_twenty_eighty(self, session, as_role) -> None:
        campaign = import_frame(session, experiment_frame(210, 790), name="UI 20/80",
                                weights="c=20,t=80")
        html = as_role(Role.ANALYST).get(f"/campaigns/{campaign}/report").text
        assert ('<td class="num planned-share">20.0%</td><td class="num">210</td>'
                '<td class="num observed-share">21.0%</td>') in html
        assert ('<td class="num planned-share">80.0%</td><td class="num">790</td>'
                '<td class="num observed-share">79.0%</td>') in html
        page = text(html)
        assert "Planned shares: the planned split given with --weights at import." in page
        assert "Sample ratio check passed" in page and "srm-alert" not in html

    def test_assumed_equal_split_is_stated(self, session, as_role) -> None:
        campaign = import_frame(session, experiment_frame(490, 510), name="UI even")
        page = text(as_role(Role.ANALYST).get(f"/campaigns/{campaign}/report").text)
        assert "ASSUMPTION: no planned split was recorded for this experiment" in page
        assert "equal allocation, ASSUMED" in page
