"""CSAT, NPS, complaint rate and the seed's satisfaction score on hand-made answers, and the
customer attributes answers are grouped by."""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd
import pytest

from crm_pipeline.analytics.breakdowns import NO_PURCHASE, NO_STORE, customer_dimensions
from crm_pipeline.analytics.satisfaction import (
    complaint_rate,
    csat,
    customer_measures,
    nps,
    nps_group,
    satisfaction_scores,
)
from crm_pipeline.core.classify import CoreRules


def test_csat_is_the_share_of_fours_and_fives() -> None:
    assert csat(pd.Series([5, 4, 3, 1, None])) == pytest.approx(50.0)


def test_nps_is_promoters_minus_detractors() -> None:
    assert nps(pd.Series([10, 9, 8, 7, 6, 0])) == pytest.approx((2 - 2) / 6 * 100)
    assert nps(pd.Series([10, 10, 3])) == pytest.approx(100 / 3)


def test_the_complaint_rate_is_the_percentage_of_inquiries_that_are_complaints() -> None:
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


def test_customer_measures_are_their_own_answers_and_contacts() -> None:
    customers = pd.Index(["a", "b", "silent"], name="customer_key")
    feedback = pd.DataFrame(
        {
            "customer_key": ["a", "a", "a", "b"],
            "submitted_at": pd.to_datetime(
                ["2025-01-03", "2025-01-01", "2025-01-02", "2025-01-01"]
            ),
            "satisfaction_rating": [5, 2, None, 4],
            "nps": [6, 10, 9, None],
        }
    )
    inquiries = pd.DataFrame(
        {
            "customer_key": ["a", "a", "a", "b", None],
            "topic": ["complaint", "pre_sales", "complaint", "other", "complaint"],
            "first_response_hours": [1.0, 3.0, 8.0, None, 2.0],
            "resolution_hours": [10.0, 20.0, 30.0, 5.0, 1.0],
        }
    )
    out = customer_measures(customers, feedback, inquiries)
    a, b, silent = (out.loc[k] for k in customers)
    assert (a["surveys"], a["csat"], a["nps_group"]) == (3, 50.0, "detractor")  # latest: 6
    assert (a["inquiries"], a["complaints"]) == (3, 2)
    assert a["complaint_rate"] == pytest.approx(200 / 3)
    assert (a["median_first_response_hours"], a["median_resolution_hours"]) == (3.0, 20.0)
    assert (b["csat"], b["complaint_rate"]) == (100.0, 0.0)
    assert pd.isna(b["nps_group"])  # b never answered the NPS question
    assert (silent["surveys"], silent["inquiries"], silent["complaints"]) == (0, 0, 0)
    assert pd.isna(silent["csat"]) and pd.isna(silent["median_resolution_hours"])


@pytest.mark.parametrize(
    ("score", "group"),
    [
        (10, "promoter"),
        (9, "promoter"),
        (8, "passive"),
        (7, "passive"),
        (6, "detractor"),
        (0, "detractor"),
    ],
)
def test_nine_and_ten_promote_seven_and_eight_are_passive_six_and_under_detract(
    score: int, group: str
) -> None:
    assert nps_group(score) == group


def test_a_customers_home_store_and_top_category_break_ties_by_name_and_ignore_later_days() -> None:
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA core")
    conn.execute("CREATE SCHEMA analytics")
    # (customer, order, channel, store, day, category, net amount, status)
    lines = [
        # Two days in S2 and in S1 each: S1. Tools and Books spend 30 each: Books.
        ("A", "o1", "store", "S2", "2025-01-02", "Tools", 30, "completed"),
        ("A", "o2", "store", "S2", "2025-01-03", "Books", 10, "completed"),
        ("A", "o3", "store", "S1", "2025-01-04", "Books", 20, "completed"),
        ("A", "o4", "store", "S1", "2025-01-05", None, 5, "completed"),
        # The day after: a third day in S2 and more Tools do not count.
        ("A", "o5", "store", "S2", "2025-01-07", "Tools", 99, "completed"),
        # Online only, and a refund is no purchase.
        ("B", "o6", "online", None, "2025-01-02", "Books", 15, "completed"),
        ("B", "o7", "store", "S1", "2025-01-03", "Tools", 50, "refunded"),
        # Nor is a free sample (one unit at 0).
        ("B", "o8", "store", "S2", "2025-01-04", "Garden", 0, "completed"),
    ]
    conn.execute(
        "CREATE TABLE core.order_lines AS SELECT c AS customer_key, o AS order_id, "
        "ch AS channel, s AS store_id, CAST(d AS TIMESTAMP) AS ordered_at, k AS category, "
        "CAST(n AS DECIMAL(12, 2)) AS net_amount, net_amount AS unit_price, "
        "st AS order_status "
        "FROM (SELECT unnest(?, recursive := true))",
        [[dict(zip(("c", "o", "ch", "s", "d", "k", "n", "st"), line)) for line in lines]],
    )
    conn.execute(
        "CREATE TABLE analytics.scored_customers AS SELECT * FROM (VALUES "
        "('A', 'Champions', 'individual'), ('B', 'New', 'individual'), "
        "('C', 'No purchase', 'enterprise')) AS t(customer_key, rfm_segment, customer_type)"
    )
    customer_dimensions(conn, date(2025, 1, 6), CoreRules())
    dims = conn.execute(
        "SELECT customer_key, purchase_channel, home_store, top_category FROM customer_dims "
        "ORDER BY 1"
    ).fetchall()
    assert dims == [
        ("A", "store", "S1", "Books"),
        ("B", "online", NO_STORE, "Books"),
        ("C", "none", NO_STORE, NO_PURCHASE),
    ]
