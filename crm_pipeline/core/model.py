"""SQL of the core model's tables but order lines (crm_pipeline/core/order_lines.py): the
customers' golden records, products, stores, inquiries and feedback, written sorted so
per-customer reads prune.

Every statement reads staging and the crosswalk only; exclusions (test and staff accounts)
are applied through crm_pipeline/core/exclusions.py, each excluded row counted in
core.excluded_rows.
"""

from __future__ import annotations

import duckdb

from crm_pipeline.core.classify import CoreRules, channel_preference_sql, lifecycle_sql
from crm_pipeline.core.exclusions import CROSSWALK, excluded_customers, record_exclusions
from crm_pipeline.core.line_sql import SOLD


def _latest(column: str) -> str:
    """SQL for a column's most recently seen non-null value; on a tie in time, the greatest, so
    a re-run picks the same."""
    return (
        f"max(struct_pack(t := seen_at, v := {column})) "
        f"FILTER (WHERE {column} IS NOT NULL AND seen_at IS NOT NULL).v"
    )


def build_customers(conn: duckdb.DuckDBPyConnection, config: CoreRules) -> None:
    """The golden record: one row per customer key, survivorship documented per column."""
    day = (
        config.as_of_date()
        or conn.execute(
            "SELECT coalesce(CAST(max(ordered_at) AS DATE), current_date) FROM core.order_lines"
        ).fetchall()[0][0]
    )
    # A date object rendered by Python, never text from a user, goes into the SQL.
    as_of = f"DATE '{day.isoformat()}'"
    excluded_customers(conn, config)
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE core.customers AS
        WITH profiles AS (
            SELECT x.customer_key, 'online_accounts' AS source, a.created_at AS seen_at,
                   a.full_name, a.email, a.phone, a.birth_date, a.address, a.city,
                   a.customer_type, a.company_name, a.income, a.gender
            FROM staging.online_accounts AS a
            JOIN {CROSSWALK} AS x ON x.source = 'online_accounts' AND x.source_id = a.account_id
            UNION ALL
            SELECT x.customer_key, 'loyalty_members', CAST(m.joined_at AS TIMESTAMP),
                   m.full_name, m.email, m.phone, m.birth_date,
                   split_part(m.address, ', ', 1), nullif(split_part(m.address, ', ', 2), ''),
                   NULL, NULL, m.income, NULL
            FROM staging.loyalty_members AS m
            JOIN {CROSSWALK} AS x ON x.source = 'loyalty_members' AND x.source_id = m.card_no
        ), contacts AS (
            SELECT customer_key, seen_at, email, phone FROM profiles
            UNION ALL
            SELECT x.customer_key, i.opened_at, i.email, i.phone
            FROM staging.inquiries AS i
            JOIN {CROSSWALK} AS x ON x.source = 'inquiries' AND x.source_id = i.inquiry_id
            UNION ALL
            SELECT x.customer_key, f.submitted_at, f.email, f.phone
            FROM staging.feedback AS f
            JOIN {CROSSWALK} AS x ON x.source = 'feedback' AND x.source_id = f.response_id
        ), golden AS (
            SELECT
                customer_key,
                {_latest("full_name")} AS full_name,
                {_latest("birth_date")} AS birth_date,
                {_latest("gender")} AS gender,
                -- The longest address; on a tie the latest, then the first in text order.
                arg_max(
                    struct_pack(a := address, c := city),
                    struct_pack(
                        n := length(address),
                        t := coalesce(seen_at, TIMESTAMP '-infinity'),
                        a := address,
                        c := coalesce(city, '')
                    )
                ) FILTER (WHERE address IS NOT NULL) AS place,
                {_latest("customer_type")} AS customer_type,
                {_latest("company_name")} AS company_name,
                {_latest("income")} AS income,
                bool_or(source = 'online_accounts') AS has_online_account,
                bool_or(source = 'loyalty_members') AS has_loyalty_card
            FROM profiles
            GROUP BY customer_key
        ), latest_contact AS (
            SELECT
                customer_key,
                {_latest("email")} AS email,
                {_latest("phone")} AS phone
            FROM contacts
            GROUP BY customer_key
        ), keys AS (
            SELECT customer_key, min(seen_at) AS first_seen_at, min(key_since) AS key_since,
                   count(*) AS source_records
            FROM {CROSSWALK}
            GROUP BY customer_key
        ), orders AS (
            -- One row per order first: counting orders is then counting rows, cheaper than
            -- counting distinct order ids per customer.
            SELECT
                customer_key,
                channel,
                min(ordered_at) AS first_at,
                max(ordered_at) AS last_at,
                max(struct_pack(t := ordered_at, s := store_id))
                    FILTER (WHERE store_id IS NOT NULL AND ordered_at IS NOT NULL) AS latest_store
            FROM core.order_lines
            WHERE customer_key IS NOT NULL
              AND CAST(ordered_at AS DATE) <= {as_of}
              AND {SOLD}
            GROUP BY customer_key, channel, order_id
        ), purchases AS (
            SELECT
                customer_key,
                min(first_at) AS first_purchase_at,
                max(last_at) AS last_purchase_at,
                count(*) FILTER (WHERE channel = 'online') AS online_orders,
                count(*) FILTER (WHERE channel = 'store') AS store_orders,
                -- The store of the latest in-store purchase (the greatest store id on a tie).
                max(latest_store).s AS a_store
            FROM orders
            GROUP BY customer_key
        )
        SELECT
            k.customer_key,
            coalesce(g.customer_type, 'individual') AS customer_type,
            g.full_name,
            c.email,
            c.phone,
            g.birth_date,
            g.gender,
            g.place.a AS address,
            coalesce(g.place.c, s.city) AS city,
            r.region,
            g.company_name,
            g.income,
            coalesce(g.has_online_account, FALSE) AS has_online_account,
            coalesce(g.has_loyalty_card, FALSE) AS has_loyalty_card,
            k.source_records,
            k.first_seen_at,
            k.key_since,
            p.first_purchase_at,
            p.last_purchase_at,
            coalesce(p.online_orders, 0) AS online_orders,
            coalesce(p.store_orders, 0) AS store_orders,
            {lifecycle_sql(config, "CAST(p.first_purchase_at AS DATE)", "CAST(p.last_purchase_at AS DATE)", as_of)}
                AS lifecycle_stage,
            {channel_preference_sql(config, "p.online_orders", "p.store_orders")} AS channel_preference,
            CAST({as_of} AS TIMESTAMP) AS as_of  -- as every table's as-of day: its midnight
        FROM keys AS k
        LEFT JOIN golden AS g USING (customer_key)
        LEFT JOIN latest_contact AS c USING (customer_key)
        LEFT JOIN purchases AS p USING (customer_key)
        LEFT JOIN staging.stores AS s ON s.store_id = p.a_store
        LEFT JOIN (
            SELECT city, min(region) AS region FROM staging.stores GROUP BY city
        ) AS r ON r.city = coalesce(g.place.c, s.city)
        ANTI JOIN excluded_customers AS e USING (customer_key)
        ORDER BY k.customer_key
        """
    )
    record_exclusions(conn, "customers", "SELECT customer_key AS id, rule FROM excluded_customers")


def build_products(conn: duckdb.DuckDBPyConnection) -> None:
    """Products with their margin rate and a price band by tertile of list price."""
    conn.execute(
        """
        CREATE OR REPLACE TABLE core.products AS
        WITH bands AS (
            SELECT quantile_cont(unit_price, 1 / 3) AS low, quantile_cont(unit_price, 2 / 3) AS high
            FROM staging.products
        )
        SELECT
            p.sku, p.name, p.category, p.subcategory, p.kind, p.unit_price, p.unit_cost,
            CASE WHEN p.unit_cost IS NOT NULL AND p.unit_price > 0
                 THEN round(100 * (p.unit_price - p.unit_cost) / p.unit_price, 2) END AS margin_rate,
            CASE WHEN p.unit_price <= b.low THEN 'budget'
                 WHEN p.unit_price <= b.high THEN 'mid'
                 ELSE 'premium' END AS price_band
        FROM staging.products AS p
        CROSS JOIN bands AS b
        ORDER BY p.sku
        """
    )


def build_stores(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(
        """
        CREATE OR REPLACE TABLE core.stores AS
        SELECT store_id, city, region
        FROM staging.stores
        ORDER BY store_id
        """
    )


def inquiries_as_of(day: str) -> str:
    """SQL for core.inquiries as they stood at the end of a day (`day`: SQL for it, such as a
    parameter): those opened by then, a response or a closing after it not yet happened (its
    time and hours NULL), so a look back, or today's marts, never use what came later."""
    end = f"CAST({day} AS DATE) + INTERVAL 1 DAY"
    return f"""
        SELECT * REPLACE (
            CASE WHEN first_response_at < {end} THEN first_response_at END AS first_response_at,
            CASE WHEN first_response_at < {end} THEN first_response_hours END
                AS first_response_hours,
            CASE WHEN closed_at < {end} THEN closed_at END AS closed_at,
            CASE WHEN closed_at < {end} THEN resolution_hours END AS resolution_hours
        )
        FROM core.inquiries
        WHERE opened_at < {end}
    """


def build_inquiries(conn: duckdb.DuckDBPyConnection, config: CoreRules) -> None:
    excluded_customers(conn, config)
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE core.inquiries AS
        SELECT
            x.customer_key,
            i.opened_at,
            i.inquiry_id,
            i.channel,
            i.topic,
            i.sku,
            p.category,
            i.first_response_at,
            i.closed_at,
            round(date_diff('second', i.opened_at, i.first_response_at) / 3600, 3)
                AS first_response_hours,
            round(date_diff('second', i.opened_at, i.closed_at) / 3600, 3) AS resolution_hours
        FROM staging.inquiries AS i
        LEFT JOIN {CROSSWALK} AS x ON x.source = 'inquiries' AND x.source_id = i.inquiry_id
        LEFT JOIN staging.products AS p USING (sku)
        ANTI JOIN excluded_customers AS e USING (customer_key)
        ORDER BY x.customer_key NULLS LAST, i.opened_at, i.inquiry_id
        """
    )
    record_exclusions(
        conn,
        "inquiries",
        f"""
        SELECT i.inquiry_id AS id, e.rule
        FROM staging.inquiries AS i
        JOIN {CROSSWALK} AS x ON x.source = 'inquiries' AND x.source_id = i.inquiry_id
        JOIN excluded_customers AS e USING (customer_key)
        """,
    )


def build_feedback(conn: duckdb.DuckDBPyConnection, config: CoreRules) -> None:
    excluded_customers(conn, config)
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE core.feedback AS
        SELECT
            x.customer_key,
            f.submitted_at,
            f.response_id,
            f.satisfaction_rating,
            f.nps,
            CASE WHEN f.nps >= 9 THEN 'promoter'
                 WHEN f.nps >= 7 THEN 'passive'
                 WHEN f.nps >= 0 THEN 'detractor' END AS nps_group,
            f.comment
        FROM staging.feedback AS f
        LEFT JOIN {CROSSWALK} AS x ON x.source = 'feedback' AND x.source_id = f.response_id
        ANTI JOIN excluded_customers AS e USING (customer_key)
        ORDER BY x.customer_key NULLS LAST, f.submitted_at, f.response_id
        """
    )
    record_exclusions(
        conn,
        "feedback",
        f"""
        SELECT f.response_id AS id, e.rule
        FROM staging.feedback AS f
        JOIN {CROSSWALK} AS x ON x.source = 'feedback' AND x.source_id = f.response_id
        JOIN excluded_customers AS e USING (customer_key)
        """,
    )


def build_feedback_needs(conn: duckdb.DuckDBPyConnection, dimensions: tuple[str, ...]) -> None:
    """One row per response and need dimension that was answered."""
    parts = " UNION ALL ".join(
        f"""
        SELECT f.response_id, '{d}' AS dimension,
               s.need_{d}_importance AS importance, s.need_{d}_satisfaction AS satisfaction
        FROM staging.feedback AS s JOIN core.feedback AS f USING (response_id)
        WHERE s.need_{d}_importance IS NOT NULL OR s.need_{d}_satisfaction IS NOT NULL
        """
        for d in dimensions
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE core.feedback_needs AS
        SELECT f.customer_key, f.submitted_at, n.response_id, n.dimension, n.importance,
               n.satisfaction
        FROM ({parts}) AS n
        JOIN core.feedback AS f USING (response_id)
        ORDER BY f.customer_key NULLS LAST, f.submitted_at, n.response_id, n.dimension
        """
    )
