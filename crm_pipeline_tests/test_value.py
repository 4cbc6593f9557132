"""The seed's value score on hand-made customers: each component as documented."""

from __future__ import annotations

import pandas as pd
import pytest

from crm_pipeline.analytics.value import value_scores

CUSTOMERS = pd.DataFrame(
    {
        "customer_type": ["individual", "individual", "individual", "enterprise"],
        "income": [60_000, 40_000, None, None],
        "orders": [12, 2, 6, 24],
        "active_months": [12, 12, 6, 0],
        "months_with_purchase": [12, 2, 3, 1],
        "tenure_days": [3 * 365.25, 365.25, 0, 30],
    },
    index=["loyal", "occasional", "new", "company"],
)


def test_each_component_follows_its_definition() -> None:
    scores = value_scores(CUSTOMERS)
    assert scores.loc["loyal", "purchase_frequency"] == 1.0
    assert scores.loc["loyal", "loyalty"] == 1.0  # three years, bought every month
    assert scores.loc["occasional", "loyalty"] == pytest.approx(0.5 / 3 + 0.5 * 2 / 12)
    assert scores.loc["new", "income_used"] == 50_000  # median of individuals
    assert scores.loc["new", "income_imputed"]
    assert scores.loc["company", "income_used"] == 50_000  # no enterprise income: everyone's
    assert scores.loc["company", "purchase_frequency"] == 24  # active months at least 1


def test_the_score_is_a_percentile_so_the_best_scores_100() -> None:
    scores = value_scores(CUSTOMERS)["value_score"]
    assert scores.max() == 100.0 and scores.idxmax() == "company"
    assert scores.between(0, 100).all()
    assert scores["loyal"] > scores["occasional"]


def test_a_customer_who_never_bought_scores_0_not_the_percentile_of_a_tie() -> None:
    prospects = pd.DataFrame(
        {
            "customer_type": ["individual"] * 3,
            "income": [90_000, 70_000, None],
            "orders": [0, 0, 0],
            "active_months": [0, 0, 0],
            "months_with_purchase": [0, 0, 0],
            "tenure_days": [400, 20, 0],
        },
        index=["p1", "p2", "p3"],
    )
    scores = value_scores(pd.concat([CUSTOMERS, prospects]))["value_score"]
    assert (scores[prospects.index] == 0).all()
    # Buyers keep their percentile among everyone: the least valuable of four is above 3/7.
    assert scores[CUSTOMERS.index].min() == pytest.approx(100 * 4 / 7, abs=0.01)
