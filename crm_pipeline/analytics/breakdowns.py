"""Group-level analysis as of a day, in DuckDB: satisfaction by breakdown and unmet needs.

Every query reads core tables up to the end of $as_of only. A customer's attributes (RFM
segment, type, preferred purchase channel, home store, top category) are those of the day,
so a survey answered in March by a customer who is At Risk on the as-of day counts for At Risk.
"""

from __future__ import annotations

from datetime import date

import duckdb

from crm_pipeline.core.classify import CoreRules, channel_preference_sql
from crm_pipeline.core.line_sql import SOLD
from crm_pipeline.core.model import inquiries_as_of

UNKNOWN = "(unknown)"  # no customer key, or a customer first seen after the day
NO_PRODUCT = "(no product)"
NO_STORE = "(no store purchase)"
NO_PURCHASE = "(no purchase)"
UNTIL = "< CAST($as_of AS DATE) + INTERVAL 1 DAY"
PURCHASES = f"""
    SELECT * FROM core.order_lines
    WHERE customer_key IS NOT NULL AND {SOLD} AND ordered_at {UNTIL}
"""


def customer_dimensions(conn: duckdb.DuckDBPyConnection, as_of: date, rules: CoreRules) -> None:
    """Temp table customer_dims: one row per scored customer with rfm_segment, customer_type,
    purchase_channel (online, store, omnichannel or none, the core rule on orders up to the
    day), home_store (most store purchase days, ties to the lowest id; '(no store purchase)')
    and top_category (most net spend, ties to the first name; '(no purchase)')."""
    preference = channel_preference_sql(rules, "o.online", "o.store")
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE customer_dims AS
        WITH lines AS ({PURCHASES}),
        orders AS (
            SELECT customer_key,
                   count(DISTINCT order_id) FILTER (WHERE channel = 'online') AS online,
                   count(DISTINCT order_id) FILTER (WHERE channel = 'store') AS store
            FROM lines GROUP BY 1
        ),
        store_days AS (
            SELECT customer_key, store_id, count(DISTINCT CAST(ordered_at AS DATE)) AS days
            FROM lines WHERE store_id IS NOT NULL GROUP BY 1, 2
        ),
        -- Ties go to the first store or category by name: its rank among the few distinct
        -- names, joined on, rather than a sort of every (customer, name) row.
        store_ranks AS (
            SELECT store_id, row_number() OVER (ORDER BY store_id) AS rank
            FROM (SELECT DISTINCT store_id FROM store_days)
        ),
        stores AS (
            SELECT customer_key, arg_max(store_id, (days, -rank)) AS home_store
            FROM store_days JOIN store_ranks USING (store_id)
            GROUP BY 1
        ),
        category_spend AS (
            SELECT customer_key, category, sum(net_amount) AS spend
            FROM lines WHERE category IS NOT NULL GROUP BY 1, 2
        ),
        category_ranks AS (
            SELECT category, row_number() OVER (ORDER BY category) AS rank
            FROM (SELECT DISTINCT category FROM category_spend)
        ),
        categories AS (
            SELECT customer_key, arg_max(category, (spend, -rank)) AS top_category
            FROM category_spend JOIN category_ranks USING (category)
            GROUP BY 1
        )
        SELECT s.customer_key, s.rfm_segment, s.customer_type,
               {preference} AS purchase_channel,
               coalesce(h.home_store, '{NO_STORE}') AS home_store,
               coalesce(c.top_category, '{NO_PURCHASE}') AS top_category
        FROM analytics.scored_customers AS s
        LEFT JOIN orders AS o USING (customer_key)
        LEFT JOIN stores AS h USING (customer_key)
        LEFT JOIN categories AS c USING (customer_key)
        """,
        {"as_of": as_of},
    )


def _groups(*breakdowns: tuple[str, str]) -> str:
    """A list of (breakdown, group_value) structs to unnest, one per breakdown."""
    items = ", ".join(
        f"struct_pack(breakdown := '{name}', group_value := coalesce(CAST({value} AS VARCHAR), "
        f"'{UNKNOWN}'))"
        for name, value in breakdowns
    )
    return f"unnest([{items}]) AS g"


CUSTOMER_BREAKDOWNS = (
    ("overall", "'all'"),
    ("rfm_segment", "d.rfm_segment"),
    ("customer_type", "d.customer_type"),
    ("purchase_channel", "d.purchase_channel"),
    ("store", "d.home_store"),
)


def satisfaction_summary(conn: duckdb.DuckDBPyConnection, as_of: date, table: str) -> None:
    """Write `table`: per breakdown and group, survey measures (responses, CSAT, NPS, mean
    rating) beside helpdesk measures (inquiries, complaints, complaint rate, median first
    response and resolution hours). Needs customer_dimensions() first."""
    surveys = _groups(
        *CUSTOMER_BREAKDOWNS,
        ("category", "d.top_category"),
        ("month", "strftime(f.submitted_at, '%Y-%m')"),
    )
    contacts = _groups(
        *CUSTOMER_BREAKDOWNS,
        ("contact_channel", "i.channel"),
        ("category", f"coalesce(i.category, '{NO_PRODUCT}')"),
        ("month", "strftime(i.opened_at, '%Y-%m')"),
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE {table} AS
        WITH survey AS (
            SELECT g.breakdown, g.group_value,
                   count(f.satisfaction_rating) AS responses,
                   -- A comparison with a missing answer is NULL, which avg() skips.
                   avg(CAST(f.satisfaction_rating >= 4 AS DOUBLE)) * 100 AS csat,
                   (avg(CAST(f.nps >= 9 AS DOUBLE)) - avg(CAST(f.nps <= 6 AS DOUBLE))) * 100
                       AS nps,
                   avg(f.satisfaction_rating) AS mean_rating
            FROM (
                SELECT f.*, {surveys}
                FROM core.feedback AS f LEFT JOIN customer_dims AS d USING (customer_key)
                WHERE f.submitted_at {UNTIL}
            ) AS f
            GROUP BY ALL
        ), helpdesk AS (
            SELECT g.breakdown, g.group_value,
                   count(*) AS inquiries,
                   count(*) FILTER (WHERE i.topic = 'complaint') AS complaints,
                   avg(CAST(i.topic = 'complaint' AS DOUBLE)) * 100 AS complaint_rate,
                   median(i.first_response_hours) AS median_first_response_hours,
                   median(i.resolution_hours) AS median_resolution_hours
            FROM (
                SELECT i.*, {contacts}
                FROM ({inquiries_as_of("$as_of")}) AS i
                LEFT JOIN customer_dims AS d USING (customer_key)
            ) AS i
            GROUP BY ALL
        )
        SELECT breakdown, group_value,
               coalesce(s.responses, 0) AS responses, s.csat, s.nps, s.mean_rating,
               coalesce(h.inquiries, 0) AS inquiries, coalesce(h.complaints, 0) AS complaints,
               h.complaint_rate, h.median_first_response_hours, h.median_resolution_hours,
               CAST($as_of AS TIMESTAMP) AS as_of
        FROM survey AS s FULL JOIN helpdesk AS h USING (breakdown, group_value)
        ORDER BY breakdown, group_value
        """,
        {"as_of": as_of},
    )


def unmet_needs(conn: duckdb.DuckDBPyConnection, as_of: date, table: str) -> None:
    """Write `table`: pre-sales questions and complaints per product category, with their share
    of the topic, against the category's buyers, and the median time to close."""
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE {table} AS
        WITH asked AS (
            SELECT topic, coalesce(category, '{NO_PRODUCT}') AS category,
                   count(*) AS inquiries,
                   count(DISTINCT customer_key) AS customers,
                   median(resolution_hours) AS median_resolution_hours
            FROM ({inquiries_as_of("$as_of")})
            WHERE topic IN ('pre_sales', 'complaint')
            GROUP BY ALL
        ), buyers AS (
            SELECT category, count(DISTINCT customer_key) AS buyers
            FROM ({PURCHASES}) GROUP BY 1
        )
        SELECT a.topic, a.category, a.inquiries, a.customers,
               a.inquiries * 100.0 / sum(a.inquiries) OVER (PARTITION BY a.topic)
                   AS share_of_topic,
               coalesce(b.buyers, 0) AS buyers,
               a.inquiries * 100.0 / nullif(b.buyers, 0) AS per_100_buyers,
               a.median_resolution_hours,
               row_number() OVER (PARTITION BY a.topic ORDER BY a.inquiries DESC, a.category)
                   AS topic_rank,
               CAST($as_of AS TIMESTAMP) AS as_of
        FROM asked AS a LEFT JOIN buyers AS b USING (category)
        ORDER BY a.topic, topic_rank
        """,
        {"as_of": as_of},
    )
