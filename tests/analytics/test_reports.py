"""Campaign results on the demo world, whose true effects are known."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import Session

from analytics.reports import campaign_results
from seeds.demo import TRUE_EFFECTS, seed_demo_world

pytestmark = pytest.mark.slow


class TestDemoWorldRecoversTruth:
    def test_each_arm_effect_within_its_ci(self, session: Session) -> None:
        summary = seed_demo_world(session, now=datetime(2026, 11, 22, tzinfo=UTC))
        session.flush()
        report = campaign_results(session.connection(), summary.ended_campaign_id)
        adoption = {r.arm: r for r in report.results if r.metric == "adoption"}
        assert set(adoption) == set(TRUE_EFFECTS)
        for arm, truth in TRUE_EFFECTS.items():
            comparison = adoption[arm].comparison
            assert comparison.diff_ci_low <= truth <= comparison.diff_ci_high, (arm, comparison)
            assert comparison.diff_ci_low > 0  # and the effect is detected
            assert adoption[arm].p_value_holm is not None
            assert adoption[arm].p_value_holm >= comparison.p_value
        assert report.srm.flagged is False
        cuped = {r.arm: r for r in report.results if r.metric == "adoption_cuped"}
        for arm, truth in TRUE_EFFECTS.items():
            assert cuped[arm].variance_reduction > 0
            comparison = cuped[arm].comparison
            assert comparison.diff_ci_low <= truth <= comparison.diff_ci_high
