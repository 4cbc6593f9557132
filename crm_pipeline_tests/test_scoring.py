"""Churn tiers: by P(alive) and by the rule on the customer's own purchase rhythm."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crm_pipeline.analytics.scoring import churn_tier, rank_by_value, rule_churn_tier


def test_churn_tiers_by_risk() -> None:
    tiers = churn_tier(pd.Series([0.0, 0.29, 0.3, 0.69, 0.7, 1.0, None]))
    assert tiers.tolist() == ["low", "low", "medium", "medium", "high", "high", None]


def test_rule_tiers_compare_the_wait_with_the_customers_own_gap() -> None:
    # gap_ratio = days since the last purchase / typical days between purchases.
    tiers = rule_churn_tier(pd.Series([0.0, 0.99, 1.0, 1.99, 2.0, 7.5, None]))
    assert tiers.tolist() == ["low", "low", "medium", "medium", "high", "high", None]


def test_value_rank_orders_by_clv_then_score_and_breaks_ties_by_key() -> None:
    scored = pd.DataFrame(
        {
            "clv_12m": [10.0, None, 50.0, 10.0, None, None, -np.inf],
            "value_score": [1.0, 0.0, 0.0, 3.0, 0.0, 2.0, 0.0],
        },
        index=pd.Index(["CB", "CD", "CA", "CC", "CF", "CE", "CG"], name="customer_key"),
    )
    expected = {"CA": 1, "CC": 2, "CB": 3, "CG": 4, "CE": 5, "CD": 6, "CF": 7}
    rng = np.random.default_rng(5)
    for _ in range(5):
        shuffled = scored.iloc[rng.permutation(len(scored))]
        ranked = rank_by_value(shuffled)
        assert ranked["value_rank"].to_dict() == expected
