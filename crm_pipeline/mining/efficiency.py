"""Sales efficiency as of a day, in DuckDB: where selling works well or badly.

Sales are the order lines up to the day that are not refunded and not given free; an order (an
online order or a store receipt) counts when it holds a sale, and so does a customer. Revenue,
units and margin also sum the lines given free: no revenue, their units and their cost (a gift
is a cost of selling). Revenue is net of discounts and refunds; margin is summed where cost is
known.
"""

from __future__ import annotations

from datetime import date

import duckdb

from crm_pipeline.core.line_sql import SOLD
from crm_pipeline.core.model import inquiries_as_of
from crm_pipeline.core.schemas import key_number

# What left the shelves up to the day (lines not refunded, free ones too), and of it the sales.
SHIPPED = """
    SELECT * FROM core.order_lines
    WHERE order_status <> 'refunded' AND ordered_at < CAST($as_of AS DATE) + INTERVAL 1 DAY
"""
SALES = f"SELECT * FROM ({SHIPPED}) WHERE {SOLD}"
INQUIRIES = inquiries_as_of("$as_of")
BREAKDOWNS = {
    "store": "coalesce(store_id, '(online)')",
    "category": "coalesce(category, '(unknown)')",
    "month": "ordered_at",  # written as YYYY-MM (an order: its first line's)
}  # how a sale is placed; channel is its own column
# Inquiries are placed by the category of the product they name and by their month; they have
# no sales channel or store.
INQUIRY_BREAKDOWNS = {
    "overall": "'all'",
    "category": "coalesce(category, '(no product)')",
    "month": "strftime(opened_at, '%Y-%m')",
}


def _unnest(breakdowns: dict[str, str]) -> str:
    items = ", ".join(
        f"struct_pack(breakdown := '{name}', group_value := {value})"
        for name, value in breakdowns.items()
    )
    return f"unnest([{items}]) AS g"


def sales_efficiency(conn: duckdb.DuckDBPyConnection, as_of: date, table: str) -> None:
    """Write `table`: per breakdown (overall, channel, store, category, month) and group:
    revenue, orders, average order value, units, margin and margin rate, customers and the
    repeat-purchase rate (customers with two or more orders in the group), and for overall,
    category and month the inquiries, their median first-response and resolution hours and
    revenue per inquiry."""
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE {table} AS
        -- Orders and customers are counted from one row per order; sums come straight from
        -- the lines, each in its own store and month. Each reads the sales itself: DuckDB
        -- scans them twice faster than it hands one scan to two consumers.
        WITH by_order AS (
            -- One row per order, with the distinct categories it holds. An order whose lines
            -- disagree (a receipt rung up across midnight) is placed by its first store and
            -- month, and a month with only such lines has revenue and no orders. Customers
            -- are counted by their keys' numbers: the grouping sets below group on them.
            SELECT channel, order_id, min({key_number("customer_key")}) AS customer_key,
                   min({BREAKDOWNS["store"]}) AS store,
                   strftime(min({BREAKDOWNS["month"]}), '%Y-%m') AS month,
                   list_distinct(list({BREAKDOWNS["category"]})) AS categories
            FROM ({SALES}) GROUP BY channel, order_id
        ), by_group AS (
            -- Per group and customer (NULL: anonymous receipts), their orders. An
            -- order has one channel, store and month, so counting rows counts orders.
            SELECT CASE WHEN grouping(channel) = 0 THEN 'channel'
                        WHEN grouping(store) = 0 THEN 'store'
                        WHEN grouping(month) = 0 THEN 'month'
                        ELSE 'overall' END AS breakdown,
                   coalesce(channel, store, month, 'all') AS group_value,
                   customer_key, count(*) AS orders
            FROM by_order
            GROUP BY GROUPING SETS (
                (customer_key), (customer_key, channel), (customer_key, store),
                (customer_key, month)
            )
            UNION ALL
            -- An order counts once in each category it holds.
            SELECT 'category', category, customer_key, count(*)
            FROM (SELECT customer_key, unnest(categories) AS category FROM by_order)
            GROUP BY category, customer_key
        ), totals AS (
            -- Sums need no order: straight from the lines, free ones too. With no sales up
            -- to the day, the overall row sums nothing: no revenue and no units, rather than
            -- unknown.
            SELECT CASE WHEN grouping(channel) = 0 THEN 'channel'
                        WHEN grouping(store) = 0 THEN 'store'
                        WHEN grouping(month) = 0 THEN 'month'
                        WHEN grouping(category) = 0 THEN 'category'
                        ELSE 'overall' END AS breakdown,
                   coalesce(channel, store, month, category, 'all') AS group_value,
                   coalesce(sum(net_amount), 0) AS revenue,
                   CAST(coalesce(sum(quantity), 0) AS BIGINT) AS units,
                   sum(margin) AS margin,
                   sum(CASE WHEN margin IS NOT NULL THEN net_amount END) AS costed_revenue
            FROM (SELECT channel, {BREAKDOWNS["store"]} AS store,
                         strftime({BREAKDOWNS["month"]}, '%Y-%m') AS month,
                         {BREAKDOWNS["category"]} AS category, net_amount, quantity, margin
                  FROM ({SHIPPED}))
            GROUP BY GROUPING SETS ((), (channel), (store), (month), (category))
        ), sales AS (
            SELECT breakdown, group_value, t.revenue, coalesce(o.orders, 0) AS orders,
                   t.units, t.margin, t.costed_revenue
            FROM (SELECT breakdown, group_value, CAST(sum(orders) AS BIGINT) AS orders
                  FROM by_group GROUP BY ALL) AS o
            FULL JOIN totals AS t USING (breakdown, group_value)
        ), repeaters AS (
            SELECT breakdown, group_value, count(*) AS customers,
                   count(*) FILTER (WHERE orders >= 2) AS repeaters
            FROM by_group WHERE customer_key IS NOT NULL
            GROUP BY ALL
        ), helpdesk AS (
            SELECT g.breakdown, g.group_value, count(*) AS inquiries,
                   median(first_response_hours) AS median_first_response_hours,
                   median(resolution_hours) AS median_resolution_hours
            FROM (SELECT *, {_unnest(INQUIRY_BREAKDOWNS)} FROM ({INQUIRIES}))
            GROUP BY ALL
        )
        SELECT s.breakdown, s.group_value,
               CAST(s.revenue AS DOUBLE) AS revenue, s.orders,
               CAST(s.revenue AS DOUBLE) / nullif(s.orders, 0) AS average_order_value,
               s.units, CAST(s.margin AS DOUBLE) AS margin,
               CAST(100 * s.margin / nullif(s.costed_revenue, 0) AS DOUBLE) AS margin_rate,
               coalesce(r.customers, 0) AS customers,
               coalesce(r.repeaters, 0) * 100.0 / nullif(r.customers, 0) AS repeat_purchase_rate,
               h.inquiries, h.median_first_response_hours, h.median_resolution_hours,
               CAST(s.revenue AS DOUBLE) / h.inquiries AS revenue_per_inquiry,
               CAST($as_of AS TIMESTAMP) AS as_of
        FROM sales AS s
        LEFT JOIN repeaters AS r USING (breakdown, group_value)
        LEFT JOIN helpdesk AS h USING (breakdown, group_value)
        ORDER BY s.breakdown, s.group_value
        """,
        {"as_of": as_of},
    )


def cohort_retention(conn: duckdb.DuckDBPyConnection, as_of: date, table: str) -> None:
    """Write `table`: per first-purchase month (cohort) and months since, the cohort's size,
    how many of it bought in that month, and that share (month 0 is 100%)."""
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE {table} AS
        WITH months AS (
            SELECT DISTINCT customer_key, date_trunc('month', ordered_at) AS month
            FROM ({SALES}) WHERE customer_key IS NOT NULL
        ), cohorts AS (
            SELECT customer_key, min(month) AS cohort FROM months GROUP BY 1
        ), sizes AS (
            SELECT cohort, count(*) AS cohort_customers FROM cohorts GROUP BY 1
        )
        SELECT strftime(c.cohort, '%Y-%m') AS cohort_month,
               date_diff('month', c.cohort, m.month) AS months_since,
               any_value(s.cohort_customers) AS cohort_customers,
               count(*) AS active_customers,
               count(*) * 100.0 / any_value(s.cohort_customers) AS retention,
               CAST($as_of AS TIMESTAMP) AS as_of
        FROM months AS m JOIN cohorts AS c USING (customer_key) JOIN sizes AS s USING (cohort)
        GROUP BY ALL
        ORDER BY cohort_month, months_since
        """,
        {"as_of": as_of},
    )


def inquiry_conversion(conn: duckdb.DuckDBPyConnection, as_of: date, days: int, table: str) -> None:
    """Write `table`: per inquiry topic and contact channel, the inquiries of known customers,
    how many were followed by an order of the customer within `days` days of opening (any
    channel; in the same category when the inquiry names a product), the conversion rate, the
    revenue of the lines that converted them in the window (of that category, when named),
    revenue per inquiry and the median response times.
    Only inquiries whose window has closed by the day count, so recent ones are not counted
    as lost."""
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE {table} AS
        WITH asked AS (
            SELECT * FROM ({INQUIRIES})
            WHERE customer_key IS NOT NULL
              AND opened_at + to_days(CAST($days AS INTEGER)) < CAST($as_of AS DATE) + INTERVAL 1 DAY
        ), followed AS (
            SELECT a.inquiry_id,
                   count(DISTINCT l.channel || ':' || l.order_id) AS orders,
                   sum(l.net_amount) AS revenue
            FROM asked AS a
            JOIN ({SALES}) AS l
              ON l.customer_key = a.customer_key
             AND l.ordered_at >= a.opened_at
             AND l.ordered_at < a.opened_at + to_days(CAST($days AS INTEGER))
             AND (a.category IS NULL OR l.category = a.category)
            GROUP BY 1
        )
        SELECT a.topic, a.channel,
               count(*) AS inquiries,
               count(f.inquiry_id) AS converted,
               count(f.inquiry_id) * 100.0 / count(*) AS conversion_rate,
               coalesce(CAST(sum(f.revenue) AS DOUBLE), 0) AS revenue,
               coalesce(CAST(sum(f.revenue) AS DOUBLE), 0) / count(*) AS revenue_per_inquiry,
               median(a.first_response_hours) AS median_first_response_hours,
               median(a.resolution_hours) AS median_resolution_hours,
               CAST($days AS INTEGER) AS window_days,
               CAST($as_of AS TIMESTAMP) AS as_of
        FROM asked AS a LEFT JOIN followed AS f USING (inquiry_id)
        GROUP BY ALL
        ORDER BY a.topic, a.channel
        """,
        {"as_of": as_of, "days": days},
    )
