"""Customer features as of a day: the CLV inputs are right, and later data changes nothing."""

from __future__ import annotations

from datetime import date, datetime

import duckdb
import pandas as pd
import pytest

from crm_pipeline.analytics.features import (
    customer_features,
    customer_purchase_days,
    purchase_days_between,
)

AS_OF = date(2025, 3, 31)


def _warehouse(lines: list[tuple]) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA core")
    conn.execute(
        "CREATE TABLE core.order_lines (customer_key VARCHAR, ordered_at TIMESTAMP, "
        "order_id VARCHAR, order_status VARCHAR, net_amount DECIMAL(14,2), "
        "unit_price DECIMAL(12,2) DEFAULT 1)"
    )
    conn.executemany(
        "INSERT INTO core.order_lines (customer_key, ordered_at, order_id, order_status, "
        "net_amount) VALUES (?, ?, ?, ?, ?)",
        lines,
    )
    return conn


LINES = [
    ("C1", datetime(2025, 1, 1, 9), "O1", "completed", 10),
    ("C1", datetime(2025, 1, 1, 17), "O2", "completed", 5),  # same day: one transaction
    ("C1", datetime(2025, 1, 15, 9), "O3", "completed", 20),
    ("C1", datetime(2025, 3, 12, 9), "O4", "completed", 40),
    ("C1", datetime(2025, 2, 1, 9), "O5", "refunded", 99),  # refunded: no purchase
    ("C2", datetime(2025, 3, 31, 23), "O6", "completed", 7),  # the as-of day counts
    (None, datetime(2025, 2, 1), "R1", "completed", 3),  # anonymous
]


def test_a_line_given_free_is_no_purchase() -> None:
    conn = _warehouse(LINES)
    before = customer_features(conn, AS_OF)
    # C1 picks up a free sample on a day of its own; C3 only ever got one.
    for customer, order in (("C1", "G1"), ("C3", "G2")):
        conn.execute(
            "INSERT INTO core.order_lines VALUES (?, TIMESTAMP '2025-03-20 10:00', ?, "
            "'completed', 0, 0)",
            [customer, order],
        )
    after = customer_features(conn, AS_OF)
    assert "C3" not in after.index
    pd.testing.assert_frame_equal(after, before)


def test_clv_inputs_merge_same_day_purchases_and_count_in_weeks() -> None:
    features = customer_features(_warehouse(LINES), AS_OF)
    c1 = features.loc["C1"]
    assert c1["x"] == 2  # three purchase days, the first one is not a repeat
    assert c1["t_x"] == pytest.approx(70 / 7)
    assert c1["T"] == pytest.approx(90 / 7)  # to the end of the as-of day
    assert c1["m_x"] == pytest.approx(30.0)  # mean of the repeat days (20, 40)
    assert (c1["frequency"], c1["monetary"], c1["recency_days"]) == (4, 75.0, 19)
    assert (c1["active_months"], c1["months_with_purchase"]) == (3, 2)
    assert features.loc["C2", "x"] == 0 and features.loc["C2", "recency_days"] == 0
    assert set(features.index) == {"C1", "C2"}


def test_data_after_the_as_of_day_changes_nothing() -> None:
    before = customer_features(_warehouse(LINES), AS_OF)
    later = [
        ("C1", datetime(2025, 4, 1, 0, 0, 1), "O7", "completed", 500),
        ("C3", datetime(2025, 6, 1), "O8", "completed", 1),
    ]
    after = customer_features(_warehouse(LINES + later), AS_OF)
    assert after.equals(before)


def test_features_read_from_a_later_days_purchase_days_are_the_same() -> None:
    later = [
        ("C1", datetime(2025, 4, 1, 0, 0, 1), "O7", "completed", 500),
        ("C3", datetime(2025, 6, 1), "O8", "completed", 1),
        ("C2", datetime(2025, 6, 30, 23), "O9", "completed", 2),
    ]
    conn = _warehouse(LINES + later)
    customer_purchase_days(conn, date(2025, 6, 30))
    for day in (AS_OF, date(2025, 6, 30)):
        assert customer_features(conn, day, read_table=True).equals(customer_features(conn, day))
    between = purchase_days_between(conn, AS_OF, date(2025, 6, 30), read_table=True)
    assert between.to_dict() == {"C1": 1, "C2": 1, "C3": 1}
    direct = purchase_days_between(conn, AS_OF, date(2025, 6, 30))
    assert between.sort_index().equals(direct.sort_index())
