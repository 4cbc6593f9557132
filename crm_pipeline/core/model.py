"""SQL of the core model: one statement per table, written sorted so per-customer reads prune.

Every statement reads staging and the crosswalk only; exclusions (test and staff accounts,
excluded order statuses) are applied here and nowhere else, each excluded row counted in
core.excluded_rows.
"""

from __future__ import annotations

import duckdb

from crm_pipeline.core.classify import CoreRules, channel_preference_sql, lifecycle_sql

CROSSWALK = "core.customer_crosswalk"


def _in_list(values: list[str]) -> str:
    """A SQL list of literals for settings (never data): quotes doubled."""
    if not values:
        return "(NULL)"
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def excluded_customers_sql(config: CoreRules) -> str:
    """Customer keys of test and staff accounts (one row per key), with the excluding rule."""
    test = _in_list([d.lower() for d in config.test_account_domains])
    staff = _in_list([d.lower() for d in config.staff_email_domains])
    return f"""
        SELECT x.customer_key,
               min(CASE WHEN split_part(a.email, '@', 2) IN {test} THEN 'test_account'
                        ELSE 'staff_account' END) AS rule
        FROM staging.online_accounts AS a
        JOIN {CROSSWALK} AS x ON x.source = 'online_accounts' AND x.source_id = a.account_id
        WHERE split_part(a.email, '@', 2) IN {test} OR split_part(a.email, '@', 2) IN {staff}
        GROUP BY x.customer_key
    """


def _excluded_customers(conn: duckdb.DuckDBPyConnection, config: CoreRules) -> None:
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE excluded_customers AS {excluded_customers_sql(config)}"
    )


def _record_exclusions(conn: duckdb.DuckDBPyConnection, entity: str, rows_sql: str) -> None:
    """Replace the excluded rows of one entity (id, rule) in core.excluded_rows."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS core.excluded_rows "
        "(entity VARCHAR NOT NULL, id VARCHAR NOT NULL, rule VARCHAR NOT NULL)"
    )
    conn.execute("DELETE FROM core.excluded_rows WHERE entity = ?", [entity])
    conn.execute(f"INSERT INTO core.excluded_rows SELECT ?, id, rule FROM ({rows_sql})", [entity])


def build_order_lines(conn: duckdb.DuckDBPyConnection, config: CoreRules) -> None:
    """Order lines from both channels, exclusions applied, one sorted write.

    The lines are assembled once into a temporary table; the kept ones are written sorted,
    the excluded ones listed in core.excluded_rows (items whose order was never staged among
    them). Size bands split the kept orders into tertiles of their net amount.
    """
    statuses = _in_list([s.lower() for s in config.excluded_statuses])
    _excluded_customers(conn, config)
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE all_lines AS
        SELECT
            'online' AS channel,
            i.order_id,
            i.line_no,
            x.customer_key,
            NULL::VARCHAR AS store_id,
            o.ordered_at,
            o.status AS order_status,
            o.payment_method,
            i.sku,
            i.quantity,
            i.unit_price,
            i.discount,
            i.source_file,
            i.source_line,
            CASE WHEN o.order_id IS NULL THEN 'order_not_staged'
                 WHEN e.rule IS NOT NULL THEN e.rule
                 WHEN o.status IN {statuses} THEN 'order_status_' || o.status END AS excluded_by
        FROM staging.online_order_items AS i
        LEFT JOIN staging.online_orders AS o USING (order_id)
        LEFT JOIN {CROSSWALK} AS x ON x.source = 'online_orders' AND x.source_id = o.order_id
        LEFT JOIN excluded_customers AS e ON e.customer_key = x.customer_key
        UNION ALL
        SELECT
            'store',
            p.receipt_id,
            row_number() OVER (PARTITION BY p.receipt_id ORDER BY p.source_file, p.source_line),
            x.customer_key,
            p.store_id,
            p.purchased_at,
            'completed',
            p.payment_method,
            p.sku,
            p.quantity,
            p.unit_price,
            0,
            p.source_file,
            p.source_line,
            e.rule
        FROM staging.store_purchases AS p
        LEFT JOIN {CROSSWALK} AS x ON x.source = 'store_purchases' AND x.source_id = p.receipt_id
        LEFT JOIN excluded_customers AS e ON e.customer_key = x.customer_key
        """
    )
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE order_totals AS
        SELECT channel, order_id, sum(quantity * unit_price - discount) AS order_net
        FROM all_lines
        WHERE excluded_by IS NULL
        GROUP BY ALL
        """
    )
    conn.execute(
        """
        CREATE OR REPLACE TABLE core.order_lines AS
        WITH bands AS (
            SELECT quantile_cont(order_net, 1 / 3) AS low, quantile_cont(order_net, 2 / 3) AS high
            FROM order_totals
        )
        SELECT
            k.customer_key,
            k.ordered_at,
            k.channel,
            k.order_id,
            k.line_no,
            k.store_id,
            k.order_status,
            k.payment_method,
            CASE WHEN o.order_net <= b.low THEN 'small'
                 WHEN o.order_net <= b.high THEN 'medium'
                 ELSE 'large' END AS order_size_band,
            k.sku,
            p.category,
            p.subcategory,
            p.kind AS product_kind,
            k.quantity,
            k.unit_price,
            k.discount,
            CAST(k.quantity * k.unit_price AS DECIMAL(14,2)) AS gross_amount,
            CAST(CASE WHEN k.order_status = 'refunded' THEN k.quantity * k.unit_price - k.discount
                      ELSE 0 END AS DECIMAL(14,2)) AS refund_amount,
            CAST(CASE WHEN k.order_status = 'refunded' THEN 0
                      ELSE k.quantity * k.unit_price - k.discount END AS DECIMAL(14,2)) AS net_amount,
            CAST(CASE WHEN k.order_status = 'refunded' THEN 0
                      ELSE k.quantity * k.unit_price - k.discount - k.quantity * p.unit_cost
                 END AS DECIMAL(14,2)) AS margin,
            k.source_file,
            k.source_line
        FROM all_lines AS k
        JOIN order_totals AS o USING (channel, order_id)
        CROSS JOIN bands AS b
        LEFT JOIN staging.products AS p USING (sku)
        WHERE k.excluded_by IS NULL
        ORDER BY k.customer_key NULLS LAST, k.ordered_at, k.channel, k.order_id, k.line_no
        """
    )
    _record_exclusions(
        conn,
        "order_lines",
        "SELECT channel || ':' || order_id || ':' || line_no AS id, excluded_by AS rule "
        "FROM all_lines WHERE excluded_by IS NOT NULL",
    )
    conn.execute("DROP TABLE all_lines")
    conn.execute("DROP TABLE order_totals")


def _latest(column: str) -> str:
    """SQL for a column's most recently seen non-null value; on a tie in time, the greatest, so
    a re-run picks the same."""
    return (
        f"arg_max({column}, struct_pack(t := seen_at, v := {column})) "
        f"FILTER (WHERE {column} IS NOT NULL AND seen_at IS NOT NULL)"
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
    _excluded_customers(conn, config)
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
        ), purchases AS (
            SELECT
                customer_key,
                min(ordered_at) AS first_purchase_at,
                max(ordered_at) AS last_purchase_at,
                count(DISTINCT order_id) FILTER (WHERE channel = 'online') AS online_orders,
                count(DISTINCT order_id) FILTER (WHERE channel = 'store') AS store_orders,
                -- The store of the latest in-store purchase (the greatest store id on a tie).
                arg_max(store_id, struct_pack(t := ordered_at, s := store_id))
                    FILTER (WHERE store_id IS NOT NULL AND ordered_at IS NOT NULL) AS a_store
            FROM core.order_lines
            WHERE customer_key IS NOT NULL
              AND CAST(ordered_at AS DATE) <= {as_of}
              AND order_status <> 'refunded'
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
            {as_of} AS as_of
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
    _record_exclusions(conn, "customers", "SELECT customer_key AS id, rule FROM excluded_customers")


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
            CASE WHEN p.unit_cost IS NOT NULL
                 THEN round((p.unit_price - p.unit_cost) / p.unit_price, 4) END AS margin_rate,
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


def build_inquiries(conn: duckdb.DuckDBPyConnection, config: CoreRules) -> None:
    _excluded_customers(conn, config)
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
    _record_exclusions(
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
    _excluded_customers(conn, config)
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
    _record_exclusions(
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
