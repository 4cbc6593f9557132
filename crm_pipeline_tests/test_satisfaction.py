"""CSAT, NPS, complaint rate and the seed's satisfaction score on hand-made answers."""

from __future__ import annotations

import pandas as pd
import pytest

from crm_pipeline.analytics.satisfaction import complaint_rate, csat, nps, satisfaction_scores


def test_csat_is_the_share_of_fours_and_fives() -> None:
    assert csat(pd.Series([5, 4, 3, 1, None])) == pytest.approx(50.0)


def test_nps_is_promoters_minus_detractors() -> None:
    assert nps(pd.Series([10, 9, 8, 7, 6, 0])) == pytest.approx((2 - 2) / 6 * 100)
    assert nps(pd.Series([10, 10, 3])) == pytest.approx(100 / 3)


def test_complaint_rate() -> None:
    assert complaint_rate(pd.Series(["complaint", "pre_sales", "other", "complaint"])) == 50.0


def test_satisfaction_score_multiplies_its_components_and_defaults_silence() -> None:
    customers = pd.Index(["happy", "angry", "silent"], name="customer_key")
    feedback = pd.DataFrame(
        {
            "customer_key": ["happy", "angry"],
            "satisfaction_rating": [5, 1],
            "nps": [10, 0],
        }
    )
    inquiries = pd.DataFrame({"customer_key": ["angry", "angry"], "topic": ["complaint"] * 2})
    scores = satisfaction_scores(customers, feedback, inquiries)
    assert scores.loc["happy", "satisfaction_score"] == pytest.approx(100.0)
    assert scores.loc["angry", "satisfaction_score"] == pytest.approx(0.0)
    assert scores.loc["angry", "complaint_score_component"] == pytest.approx(1 / 3)
    # No survey: the population means (rating 3 -> 0.5, nps 5 -> 0.5), no complaints.
    assert scores.loc["silent", "satisfaction_score"] == pytest.approx(25.0)
