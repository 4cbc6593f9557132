"""Churn tiers: by P(alive) and by the rule on the customer's own purchase rhythm."""

from __future__ import annotations

import pandas as pd

from crm_pipeline.analytics.scoring import churn_tier, rule_churn_tier


def test_churn_tiers_by_risk() -> None:
    tiers = churn_tier(pd.Series([0.0, 0.29, 0.3, 0.69, 0.7, 1.0, None]))
    assert tiers.tolist() == ["low", "low", "medium", "medium", "high", "high", None]


def test_rule_tiers_compare_the_wait_with_the_customers_own_gap() -> None:
    # gap_ratio = days since the last purchase / typical days between purchases.
    tiers = rule_churn_tier(pd.Series([0.0, 0.99, 1.0, 1.99, 2.0, 7.5, None]))
    assert tiers.tolist() == ["low", "low", "medium", "medium", "high", "high", None]
