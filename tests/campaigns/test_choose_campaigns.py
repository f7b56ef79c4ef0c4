"""choose_campaigns: which campaigns of a snapshot a customer takes part in, stacking
resolved, evaluating no more eligibility rules than the answer needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from campaigns.services.offers import choose_campaigns

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


@dataclass
class Campaign:
    name: int
    stage_key: str
    stacking: str
    admits: bool
    ended: bool
    evaluated: list[int] = field(default_factory=list)
    starts_at: datetime | None = None

    @property
    def ends_at(self) -> datetime:
        return NOW - timedelta(minutes=1) if self.ended else NOW + timedelta(days=1)

    def eligible(self, attributes: dict[str, object]) -> bool:
        self.evaluated.append(self.name)
        return self.admits


def reference(campaigns: list[Campaign], stage: str | None) -> list[int]:
    """The definition, evaluated in full: every running campaign of the stage that admits
    the customer, then stacking (an exclusive campaign only where nothing came before it,
    and then alone)."""
    candidates = [c for c in campaigns if (stage is None or c.stage_key == stage)
                  and not c.ended and c.admits]
    chosen: list[Campaign] = []
    for campaign in candidates:
        if campaign.stacking == "exclusive":
            if not chosen:
                return [campaign.name]
            continue
        chosen.append(campaign)
    return [campaign.name for campaign in chosen]


campaign_lists = st.lists(st.tuples(st.sampled_from(["pre_sale", "after_sale"]),
                                    st.sampled_from(["exclusive", "stackable"]),
                                    st.booleans(), st.booleans()), max_size=12)


@given(campaign_lists, st.sampled_from([None, "pre_sale", "after_sale"]))
def test_the_same_campaigns_as_evaluating_every_rule(specs, stage) -> None:
    log: list[int] = []
    campaigns = [Campaign(i, *spec, evaluated=log) for i, spec in enumerate(specs)]
    chosen = choose_campaigns(SimpleNamespace(campaigns=tuple(campaigns)), attributes={},
                              stage_key=stage, now=NOW)
    assert [campaign.name for campaign in chosen] == reference(campaigns, stage)
    # No rule of another stage or of an ended campaign is evaluated, none twice.
    assert len(log) == len(set(log))
    assert all(not campaigns[i].ended and stage in (None, campaigns[i].stage_key) for i in log)


def test_rules_past_the_answer_are_not_evaluated() -> None:
    log: list[int] = []
    campaigns = [Campaign(0, "after_sale", "stackable", True, False, log),
                 Campaign(1, "after_sale", "exclusive", True, False, log),  # passed over
                 Campaign(2, "after_sale", "stackable", False, False, log),
                 Campaign(3, "after_sale", "stackable", True, False, log)]
    chosen = choose_campaigns(SimpleNamespace(campaigns=tuple(campaigns)), attributes={},
                              stage_key="after_sale", now=NOW)
    assert [campaign.name for campaign in chosen] == [0, 3]
    assert log == [0, 2, 3]
    log.clear()
    exclusive_first = [Campaign(0, "after_sale", "exclusive", True, False, log),
                       Campaign(1, "after_sale", "stackable", True, False, log)]
    chosen = choose_campaigns(SimpleNamespace(campaigns=tuple(exclusive_first)),
                              attributes={}, stage_key="after_sale", now=NOW)
    assert [campaign.name for campaign in chosen] == [0]
    assert log == [0]  # the first exclusive offer chosen ends the search
