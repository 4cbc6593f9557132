"""Sales efficiency, cohort retention and inquiry conversion on hand-made sales."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from crm_pipeline.mining.efficiency import cohort_retention, inquiry_conversion, sales_efficiency
from crm_pipeline_tests.mining_builder import key, order_lines

DAY = date(2025, 3, 31)
A, B = key("A"), key("B")  # customer keys in the contract's form


@pytest.fixture
def conn():
    conn = duckdb.connect()
    order_lines(
        conn,
        [
            (A, "2025-01-05", ["apple", "avocado"]),  # two lines, one order
            (A, "2025-03-02", ["bread"]),
            (B, "2025-02-10", ["apple"]),
            (B, "2025-04-02", ["bread"]),  # after the day
        ],
        price=10.0,
    )
    # B's February order was a store receipt; one more order of A was refunded.
    conn.execute(
        "UPDATE core.order_lines SET channel = 'store', store_id = 'S1' WHERE order_id = 'O2'"
    )
    conn.execute(
        "INSERT INTO core.order_lines SELECT * REPLACE ('O9' AS order_id, 'refunded' AS order_status)"
        " FROM core.order_lines WHERE order_id = 'O1'"
    )
    conn.execute(
        """
        CREATE TABLE core.inquiries (
            customer_key VARCHAR, opened_at TIMESTAMP, inquiry_id VARCHAR, channel VARCHAR,
            topic VARCHAR, sku VARCHAR, category VARCHAR, first_response_at TIMESTAMP,
            closed_at TIMESTAMP, first_response_hours DOUBLE, resolution_hours DOUBLE
        );
        INSERT INTO core.inquiries VALUES
            -- B asks about apples on 3 Feb and buys apples on 10 Feb: converted in 14 days.
            ($b, '2025-02-03 09:00', 'I1', 'chat', 'pre_sales', 'apple', 'a', NULL, NULL, 1, 5),
            -- A asks about apples on 20 Feb but buys bread on 2 Mar: another category.
            ($a, '2025-02-20 09:00', 'I2', 'chat', 'pre_sales', 'apple', 'a', NULL, NULL, 3, 7),
            -- A asks in general on 25 Feb and buys on 2 Mar: any order counts.
            ($a, '2025-02-25 09:00', 'I3', 'email', 'other', NULL, NULL, NULL, NULL, 2, 4),
            -- Its window ends after the day: not counted yet.
            ($a, '2025-03-25 09:00', 'I4', 'chat', 'pre_sales', 'bread', 'b', NULL, NULL, 1, 1),
            -- Nobody we know.
            (NULL, '2025-02-01 09:00', 'I5', 'chat', 'pre_sales', 'apple', 'a', NULL, NULL, 1, 1);
        """,
        {"a": A, "b": B},
    )
    yield conn
    conn.close()


def _row(conn: duckdb.DuckDBPyConnection, table: str, where: str) -> dict:
    frame = conn.execute(f"FROM {table} WHERE {where}").df()
    assert len(frame) == 1, frame
    return frame.iloc[0].to_dict()


def test_sales_efficiency_by_channel_and_overall(conn) -> None:
    sales_efficiency(conn, DAY, "eff")
    overall = _row(conn, "eff", "breakdown = 'overall'")
    # Three orders, four lines of 10 each (refunded and later orders left out).
    assert (overall["orders"], overall["revenue"], overall["units"]) == (3, 40.0, 4)
    assert overall["average_order_value"] == pytest.approx(40 / 3)
    assert overall["margin_rate"] == pytest.approx(25.0)  # a %, as every rate
    assert overall["repeat_purchase_rate"] == pytest.approx(50.0)  # A ordered twice, B once
    assert overall["inquiries"] == 5 and overall["revenue_per_inquiry"] == pytest.approx(8.0)
    store = _row(conn, "eff", "breakdown = 'store'  AND group_value = 'S1'")
    assert (store["orders"], store["customers"], store["repeat_purchase_rate"]) == (1, 1, 0.0)
    online = _row(conn, "eff", "breakdown = 'channel' AND group_value = 'online'")
    assert (online["orders"], online["revenue"]) == (2, 30.0)
    assert online["inquiries"] is None or online["inquiries"] != online["inquiries"]  # NaN
    apples = _row(conn, "eff", "breakdown = 'category' AND group_value = 'a'")
    assert (apples["revenue"], apples["inquiries"]) == (30.0, 3)
    # A's first order holds two apple-category lines: one order, so no repeat purchase.
    assert (apples["orders"], apples["customers"], apples["repeat_purchase_rate"]) == (2, 2, 0.0)


def test_cohort_retention_counts_the_months_after_the_first_purchase(conn) -> None:
    cohort_retention(conn, DAY, "ret")
    rows = conn.execute(
        "SELECT cohort_month, months_since, cohort_customers, active_customers, retention "
        "FROM ret ORDER BY ALL"
    ).fetchall()
    assert rows == [
        ("2025-01", 0, 1, 1, 100.0),
        ("2025-01", 2, 1, 1, 100.0),
        ("2025-02", 0, 1, 1, 100.0),
    ]


def test_an_inquiry_converts_with_an_order_in_its_window_and_category(conn) -> None:
    inquiry_conversion(conn, DAY, 14, "conv")
    pre_sales = _row(conn, "conv", "topic = 'pre_sales' AND channel = 'chat'")
    # I1 converted, I2 did not (bread is not apples), I4's window is open, I5 is anonymous.
    assert (pre_sales["inquiries"], pre_sales["converted"]) == (2, 1)
    assert pre_sales["conversion_rate"] == 50.0 and pre_sales["revenue"] == 10.0
    other = _row(conn, "conv", "topic = 'other'")
    assert (other["converted"], other["revenue_per_inquiry"]) == (1, 10.0)
    inquiry_conversion(conn, DAY, 3, "conv")
    assert _row(conn, "conv", "topic = 'other'")["converted"] == 0  # 5 days later: too late


def test_a_receipt_across_midnight_counts_once_and_its_lines_keep_their_months() -> None:
    conn = duckdb.connect()
    order_lines(conn, [(A, "2025-01-31", ["apple", "bread"])], price=10.0)
    conn.execute(
        """
        UPDATE core.order_lines SET channel = 'store', store_id = 'S1',
            ordered_at = CASE line_no WHEN 1 THEN TIMESTAMP '2025-01-31 23:59'
                                      ELSE TIMESTAMP '2025-02-01 00:01' END;
        CREATE TABLE core.inquiries (
            customer_key VARCHAR, opened_at TIMESTAMP, inquiry_id VARCHAR, channel VARCHAR,
            topic VARCHAR, sku VARCHAR, category VARCHAR, first_response_at TIMESTAMP,
            closed_at TIMESTAMP, first_response_hours DOUBLE, resolution_hours DOUBLE
        );
        """
    )
    sales_efficiency(conn, DAY, "eff")
    months = conn.execute(
        "SELECT group_value, revenue, orders, average_order_value FROM eff "
        "WHERE breakdown = 'month' ORDER BY 1"
    ).fetchall()
    # The order is placed in the month of its first line; each line's revenue in its own.
    assert months == [("2025-01", 10.0, 1, 10.0), ("2025-02", 10.0, 0, None)]
    overall = _row(conn, "eff", "breakdown = 'overall'")
    assert (overall["orders"], overall["revenue"]) == (1, 20.0)


def test_lines_given_free_are_no_orders_purchases_or_conversions_but_cost(conn) -> None:
    sales_efficiency(conn, DAY, "eff_before")
    cohort_retention(conn, DAY, "ret_before")
    inquiry_conversion(conn, DAY, 14, "conv_before")
    # Free samples: C's only receipt, B's only visit in March, and an apple for A two days
    # after A asked about apples (I2): a gift says nothing of what anyone chose to buy.
    conn.execute(
        """
        INSERT INTO core.order_lines VALUES
            ($c, '2025-03-10 12:00', 'store', 'G1', 1, 'S1', 'completed', 'apple', 'a',
             1, 0, 0, -2.5),
            ($b, '2025-03-11 12:00', 'online', 'G2', 1, NULL, 'delivered', 'apple', 'a',
             2, 0, 0, -5),
            ($a, '2025-02-22 12:00', 'online', 'G3', 1, NULL, 'delivered', 'apple', 'a',
             1, 0, 0, -2.5)
        """,
        {"a": A, "b": B, "c": key("C")},
    )
    sales_efficiency(conn, DAY, "eff")
    cohort_retention(conn, DAY, "ret")
    inquiry_conversion(conn, DAY, 14, "conv")
    for breakdown, group in (("overall", "all"), ("category", "a"), ("store", "S1")):
        where = f"breakdown = '{breakdown}' AND group_value = '{group}'"
        before, after = _row(conn, "eff_before", where), _row(conn, "eff", where)
        counted = ("orders", "customers", "repeat_purchase_rate", "revenue")
        assert {c: after[c] for c in counted} == {c: before[c] for c in counted}, breakdown
    before, after = (
        _row(conn, "eff_before", "breakdown = 'overall'"),
        _row(conn, "eff", "breakdown = 'overall'"),
    )
    # Their units left the shelves and their cost is a cost of selling.
    assert (after["units"], after["margin"]) == (before["units"] + 4, before["margin"] - 10)
    for table in ("ret", "conv"):
        assert conn.execute(f"FROM {table} EXCEPT ALL FROM {table}_before").fetchall() == []
        assert conn.execute(f"FROM {table}_before EXCEPT ALL FROM {table}").fetchall() == []
