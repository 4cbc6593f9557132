"""Per-customer purchase features as of a day, from core.order_lines: the inputs of RFM, the
BG/NBD and Gamma-Gamma models and the seed value score. Nothing after the day is read.

Purchases on one day are one transaction (as in Fader, Hardie & Lee's CDNOW data); refunded
and excluded orders, and lines given free, are not purchases. Time for the CLV models is in weeks.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

from crm_pipeline.core.line_sql import SOLD

# A purchase day of a customer from $start (exclusive; NULL: from the beginning) to the end
# of $as_of, with its value and orders.
PURCHASE_DAYS_SQL = f"""
    SELECT customer_key, CAST(ordered_at AS DATE) AS day, sum(net_amount) AS value,
           count(DISTINCT order_id) AS orders
    FROM core.order_lines
    WHERE customer_key IS NOT NULL
      AND {SOLD}
      AND ordered_at < CAST($as_of AS DATE) + INTERVAL 1 DAY
      AND ($start IS NULL OR ordered_at >= CAST($start AS DATE) + INTERVAL 1 DAY)
    GROUP BY ALL
"""


def _features_sql(days: str) -> str:
    """One row per customer with a purchase among the days `days` gives (up to $as_of)."""
    return f"""
WITH days AS ({days}), per AS (
    SELECT
        customer_key,
        min(day) AS first_day,
        max(day) AS last_day,
        count(*) AS purchase_days,
        sum(orders) AS orders,
        sum(value) AS monetary,
        count(DISTINCT date_trunc('month', day)) AS months_with_purchase
    FROM days
    GROUP BY customer_key
), repeat AS (
    SELECT d.customer_key, avg(d.value) AS repeat_value
    FROM days AS d
    JOIN per AS p USING (customer_key)
    WHERE d.day > p.first_day
    GROUP BY d.customer_key
)
SELECT
    p.customer_key,
    date_diff('day', p.last_day, CAST($as_of AS DATE)) AS recency_days,
    p.orders AS frequency,
    CAST(p.monetary AS DOUBLE) AS monetary,
    p.purchase_days - 1 AS x,
    date_diff('day', p.first_day, p.last_day) / 7.0 AS t_x,
    -- Observed to the end of the as-of day, so a first purchase that day has an age.
    (date_diff('day', p.first_day, CAST($as_of AS DATE)) + 1) / 7.0 AS T,
    CAST(r.repeat_value AS DOUBLE) AS m_x,
    date_diff('month', p.first_day, CAST($as_of AS DATE)) + 1 AS active_months,
    p.months_with_purchase
FROM per AS p
LEFT JOIN repeat AS r USING (customer_key)
ORDER BY p.customer_key
"""


# Purchase days computed once for several days' features (customer_purchase_days).
DAYS_TABLE = "purchase_days"


def customer_purchase_days(conn: duckdb.DuckDBPyConnection, as_of: date) -> None:
    """The temp table DAYS_TABLE: every purchase day up to as_of, so the features of earlier
    days (a holdout's cutoff) and the purchases between them read it instead of every order
    line again."""
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {DAYS_TABLE} AS {PURCHASE_DAYS_SQL}",
        {"as_of": as_of, "start": None},
    )


def _days(read_table: bool) -> str:
    """Purchase days from $start (exclusive) to $as_of: from DAYS_TABLE (it holds every day up
    to a later or the same as-of day), or from the order lines."""
    if not read_table:
        return PURCHASE_DAYS_SQL
    return (
        f"SELECT * FROM {DAYS_TABLE} WHERE day <= CAST($as_of AS DATE) "
        "AND ($start IS NULL OR day > CAST($start AS DATE))"
    )


def customer_features(
    conn: duckdb.DuckDBPyConnection, as_of: date, read_table: bool = False
) -> pd.DataFrame:
    """One row per customer with a purchase on or before as_of, indexed by customer_key
    (read_table: from DAYS_TABLE, see customer_purchase_days)."""
    frame = conn.execute(_features_sql(_days(read_table)), {"as_of": as_of, "start": None}).df()
    return frame.set_index("customer_key")


def purchase_days_between(
    conn: duckdb.DuckDBPyConnection, start: date, end: date, read_table: bool = False
) -> pd.Series:
    """Per customer, the purchase days after `start` up to the end of `end` (customers with
    none are absent)."""
    frame = conn.execute(
        f"SELECT customer_key, count(*) AS days FROM ({_days(read_table)}) GROUP BY 1",
        {"as_of": end, "start": start},
    ).df()
    return frame.set_index("customer_key")["days"]
