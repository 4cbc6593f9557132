"""SQL of the core model: tables written sorted so per-customer reads prune; order lines, the
largest, rewritten only for the orders a run changes.

Every statement reads staging and the crosswalk only; exclusions (test and staff accounts,
excluded order statuses) are applied here and nowhere else, each excluded row counted in
core.excluded_rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import duckdb

from crm_pipeline.core.classify import CoreRules, channel_preference_sql, lifecycle_sql
from crm_pipeline.raw.tables import table_exists

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
    rows = excluded_customers_sql(config)
    if table_exists(conn, "raw.erased_records"):
        # An erased test or staff account has no email left to tell: its rule was kept.
        rows = f"""
            SELECT customer_key, min(rule) AS rule
            FROM (
                {rows}
                UNION ALL
                SELECT x.customer_key, e.excluded_as
                FROM raw.erased_records AS e
                JOIN {CROSSWALK} AS x USING (source, source_id)
                WHERE e.excluded_as IS NOT NULL
            )
            GROUP BY customer_key
        """
    conn.execute(f"CREATE OR REPLACE TEMP TABLE excluded_customers AS {rows}")


def _record_exclusions(
    conn: duckdb.DuckDBPyConnection, entity: str, rows_sql: str, replacing: str = "TRUE"
) -> None:
    """Replace the excluded rows of one entity (id, rule) in core.excluded_rows: all of them,
    or those whose id meets `replacing`."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS core.excluded_rows "
        "(entity VARCHAR NOT NULL, id VARCHAR NOT NULL, rule VARCHAR NOT NULL)"
    )
    conn.execute(f"DELETE FROM core.excluded_rows WHERE entity = ? AND {replacing}", [entity])
    conn.execute(f"INSERT INTO core.excluded_rows SELECT ?, id, rule FROM ({rows_sql})", [entity])


ORDER_LINES = "core.order_lines"
# The order every write of core.order_lines sorts by: customer, then time.
LINE_ORDER = "customer_key NULLS LAST, ordered_at, channel, order_id, line_no"
# At most this share of the lines lies outside the table's sort order (see build_order_lines).
REBUILD_SHARE = 0.2
# The channel and order of an excluded line's id ('store:R1:2' -> 'store', 'R1').
_EXCLUDED_ORDER = "split_part(id, ':', 1), regexp_extract(id, '^[^:]*:(.*):[^:]*$', 1)"


def _online_exclusion(statuses: str) -> str:
    """Why an online item is excluded (NULL: kept), over i (items), o (its staged order) and
    e (its customer's exclusion)."""
    return (
        "CASE WHEN o.order_id IS NULL THEN 'order_not_staged' "
        "WHEN e.rule IS NOT NULL THEN e.rule "
        f"WHEN o.status IN {statuses} THEN 'order_status_' || o.status END"
    )


def _lines_sql(statuses: str, only_affected: bool = False) -> str:
    """Order lines from both channels with their customer and exclusion, before any amount is
    derived: every line, or the lines of the orders in the temp table `affected`."""
    online_where, store_where = (
        (
            "i.order_id IN (SELECT order_id FROM affected WHERE channel = 'online')",
            "p.receipt_id IN (SELECT order_id FROM affected WHERE channel = 'store')",
        )
        if only_affected
        else ("TRUE", "TRUE")
    )
    return f"""
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
            {_online_exclusion(statuses)} AS excluded_by
        FROM staging.online_order_items AS i
        LEFT JOIN staging.online_orders AS o USING (order_id)
        LEFT JOIN {CROSSWALK} AS x ON x.source = 'online_orders' AND x.source_id = o.order_id
        LEFT JOIN excluded_customers AS e ON e.customer_key = x.customer_key
        WHERE {online_where}
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
        WHERE {store_where}
    """


def _margin_sql(line: str, product: str) -> str:
    return (
        f"CAST(CASE WHEN {line}.order_status = 'refunded' THEN 0 ELSE {line}.quantity * "
        f"{line}.unit_price - {line}.discount - {line}.quantity * {product}.unit_cost "
        "END AS DECIMAL(14,2))"
    )


def _size_band_sql(net: str) -> str:
    """An order's size band by its net amount and the tertiles in b (low, high)."""
    return (
        f"CASE WHEN {net} <= b.low THEN 'small' WHEN {net} <= b.high THEN 'medium' ELSE 'large' END"
    )


# Text columns of few distinct values that core.order_lines' sort carries as ENUMs (one or
# two bytes a row instead of a string), each with the query giving its values. A narrower
# row sorts without spilling at the step's memory limit: at 9 M lines the step takes 3 s less.
_CARRIED_AS_ENUM = {
    "channel": "SELECT DISTINCT channel FROM lines",
    "store_id": "SELECT DISTINCT store_id FROM lines",
    "order_status": "SELECT DISTINCT order_status FROM lines",
    "payment_method": "SELECT DISTINCT payment_method FROM lines",
    "order_size_band": "SELECT unnest(['small', 'medium', 'large'])",
    "sku": "SELECT DISTINCT sku FROM lines",
    "category": "SELECT DISTINCT category FROM staging.products",
    "subcategory": "SELECT DISTINCT subcategory FROM staging.products",
    "product_kind": "SELECT DISTINCT kind FROM staging.products",
    "source_file": "SELECT DISTINCT source_file FROM lines",
}


def _line_types(conn: duckdb.DuckDBPyConnection, empty: bool = False) -> None:
    """The ENUM types _kept_lines_sql sorts by, with the values of the temp table `lines`
    (temporary: gone with the connection, never in the warehouse); `empty`, without values:
    enough to describe the query."""
    kept = "FALSE" if empty else "v IS NOT NULL"
    for column, values in _CARRIED_AS_ENUM.items():
        conn.execute(
            f"CREATE OR REPLACE TEMP TYPE line_{column} AS ENUM "
            f"(SELECT v FROM ({values}) AS t(v) WHERE {kept})"
        )


def _kept_lines_sql() -> str:
    """core.order_lines' rows for the kept lines of the temp table `lines` (as _lines_sql
    gives them), with their order's net in `order_totals`, banded by `bands` (low, high),
    loaded at $loaded_at; sorted.

    The sort carries only what the row is made of, its few-valued text as the ENUMs of
    _line_types; amounts are derived, and text restored, after it. An outer SELECT over one
    ordered subquery keeps its order (DuckDB's documented order preservation)."""

    def carried(column: str, value: str) -> str:
        return f"CAST({value} AS line_{column}) AS {column}"

    def restored(column: str) -> str:
        return f"CAST(k.{column} AS VARCHAR) AS {column}"

    return f"""
        SELECT
            k.customer_key,
            k.ordered_at,
            {restored("channel")},
            k.order_id,
            k.line_no,
            {restored("store_id")},
            {restored("order_status")},
            {restored("payment_method")},
            {restored("order_size_band")},
            {restored("sku")},
            {restored("category")},
            {restored("subcategory")},
            {restored("product_kind")},
            k.quantity,
            k.unit_price,
            k.discount,
            CAST(k.quantity * k.unit_price AS DECIMAL(14,2)) AS gross_amount,
            CAST(CASE WHEN k.order_status = 'refunded' THEN k.quantity * k.unit_price - k.discount
                      ELSE 0 END AS DECIMAL(14,2)) AS refund_amount,
            CAST(CASE WHEN k.order_status = 'refunded' THEN 0
                      ELSE k.quantity * k.unit_price - k.discount END AS DECIMAL(14,2)) AS net_amount,
            {_margin_sql("k", "k")} AS margin,
            {restored("source_file")},
            k.source_line,
            CAST($loaded_at AS TIMESTAMP) AS loaded_at
        FROM (
            SELECT
                k.customer_key,
                k.ordered_at,
                {carried("channel", "k.channel")},
                k.order_id,
                k.line_no,
                {carried("store_id", "k.store_id")},
                {carried("order_status", "k.order_status")},
                {carried("payment_method", "k.payment_method")},
                {carried("order_size_band", _size_band_sql("o.order_net"))},
                {carried("sku", "k.sku")},
                {carried("category", "p.category")},
                {carried("subcategory", "p.subcategory")},
                {carried("product_kind", "p.kind")},
                k.quantity,
                k.unit_price,
                k.discount,
                p.unit_cost,
                {carried("source_file", "k.source_file")},
                k.source_line
            FROM lines AS k
            JOIN order_totals AS o USING (channel, order_id)
            CROSS JOIN bands AS b
            LEFT JOIN staging.products AS p USING (sku)
            WHERE k.excluded_by IS NULL
            ORDER BY {LINE_ORDER}
        ) AS k
    """


class Written(NamedTuple):
    """How a table was written: whole, or only in part (then its rows written now carry the
    run's loaded_at)."""

    whole: bool
    summary: str


def build_order_lines(
    conn: duckdb.DuckDBPyConnection, config: CoreRules, loaded_at: datetime
) -> Written:
    """Order lines from both channels, exclusions applied; says how the table was written.

    A run after an earlier one rewrites only the orders whose lines may differ from what the
    table holds: those with a staged row loaded since the table was last written (the days
    the run staged again), those whose customer key, exclusion or number of lines changed (a
    merge, a new staff account, a setting, a line gone from one day of an order spanning two),
    and those with a product whose attributes changed. Rewritten
    orders are appended, sorted among themselves: per-customer reads prune on the lines of the
    last whole write. So when the share of the orders to rewrite and the share of the lines
    written since the last whole write add up to more than REBUILD_SHARE (a full load; a
    backfill; enough days since), or the table is new or of other columns, it is written
    whole, sorted. The rows are the same either way. Size bands split the kept orders into
    tertiles of their net amount; a rewrite moves the orders whose band the new tertiles
    change. The excluded lines are listed in core.excluded_rows (items whose order was never
    staged among them).
    """
    statuses = _in_list([s.lower() for s in config.excluded_statuses])
    _excluded_customers(conn, config)
    params = {"loaded_at": loaded_at}
    if _updatable(conn, statuses, params):
        orders, affected, unsorted = _affected_orders(conn, statuses)
        if affected / max(orders, 1) + unsorted <= REBUILD_SHARE:
            _rewrite_affected(conn, statuses, params)
            return Written(
                False,
                f"rewrote the lines of {affected} of {orders} orders; "
                f"{unsorted:.1%} of the lines were written after the last whole write",
            )
    conn.execute(f"CREATE OR REPLACE TEMP TABLE lines AS {_lines_sql(statuses)}")
    _order_totals(conn)
    _line_types(conn)
    conn.execute(f"CREATE OR REPLACE TABLE {ORDER_LINES} AS {_kept_lines_sql()}", params)
    _record_exclusions(conn, "order_lines", _excluded_lines_sql())
    _drop(conn, "lines", "order_totals", "bands")
    return Written(True, "written whole, sorted")


def _updatable(conn: duckdb.DuckDBPyConnection, statuses: str, params: dict) -> bool:
    """Whether core.order_lines exists with the columns, and their types, this code writes."""
    held = conn.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE schema_name = 'core' AND table_name = 'order_lines' ORDER BY column_index"
    ).fetchall()
    if not held:
        return False
    conn.execute(f"CREATE OR REPLACE TEMP VIEW lines AS {_lines_sql(statuses)}")
    conn.execute(
        "CREATE OR REPLACE TEMP VIEW order_totals AS "
        "SELECT NULL AS channel, NULL AS order_id, 0 AS order_net"
    )
    conn.execute("CREATE OR REPLACE TEMP VIEW bands AS SELECT 0 AS low, 0 AS high")
    _line_types(conn, empty=True)
    written = [
        (c, kind)
        for (c, kind, *_) in conn.execute(f"DESCRIBE {_kept_lines_sql()}", params).fetchall()
    ]
    for view in ("lines", "order_totals", "bands"):
        conn.execute(f"DROP VIEW {view}")
    return held == written


def _affected_orders(conn: duckdb.DuckDBPyConnection, statuses: str) -> tuple[int, int, float]:
    """The orders whose lines may differ from core.order_lines' as the temp table `affected`
    (channel, order_id); returns how many orders there are, how many are affected, and the
    share of the lines written after the table's last whole write (outside its sort order)."""
    # Per order: its customer (when kept), why it is excluded, and how many lines it has (a
    # line gone from one day of an order that spans several shows in the count).
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE current_orders AS
        SELECT channel, order_id,
               CASE WHEN excluded_by IS NULL THEN customer_key END AS customer_key, excluded_by,
               count(*) AS lines
        FROM ({_lines_sql(statuses)})
        GROUP BY ALL
        """
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE affected AS
        WITH held AS (
            SELECT channel, order_id, customer_key, NULL::VARCHAR AS excluded_by,
                   count(*) AS lines
            FROM {ORDER_LINES}
            GROUP BY ALL
            UNION ALL
            SELECT {_EXCLUDED_ORDER}, NULL, rule, count(*)
            FROM core.excluded_rows
            WHERE entity = 'order_lines'
            GROUP BY ALL
        ), since AS (
            SELECT coalesce(max(loaded_at), TIMESTAMP '-infinity') AS written FROM {ORDER_LINES}
        )
        -- An order whose rows (customer, exclusion, lines) differ on either side: one join on
        -- the order, where two EXCEPTs would hash every column twice (1.1 s against 1.7-2.7 s
        -- at 1M customers).
        SELECT coalesce(c.channel, h.channel) AS channel, coalesce(c.order_id, h.order_id) AS order_id
        FROM current_orders AS c
        FULL JOIN held AS h
          ON c.channel = h.channel AND c.order_id = h.order_id
         AND c.customer_key IS NOT DISTINCT FROM h.customer_key
         AND c.excluded_by IS NOT DISTINCT FROM h.excluded_by
         AND c.lines = h.lines
        WHERE c.order_id IS NULL OR h.order_id IS NULL
        UNION
        SELECT 'online', order_id FROM staging.online_order_items
        WHERE loaded_at > (SELECT written FROM since)
        UNION
        SELECT 'online', order_id FROM staging.online_orders
        WHERE loaded_at > (SELECT written FROM since)
        UNION
        SELECT 'store', receipt_id FROM staging.store_purchases
        WHERE loaded_at > (SELECT written FROM since)
        UNION
        SELECT l.channel, l.order_id
        FROM {ORDER_LINES} AS l
        LEFT JOIN staging.products AS p USING (sku)
        WHERE (l.category, l.subcategory, l.product_kind)
                  IS DISTINCT FROM (p.category, p.subcategory, p.kind)
           OR l.margin IS DISTINCT FROM {_margin_sql("l", "p")}
        """
    )
    orders, affected, unsorted = conn.execute(
        f"""
        SELECT
            (SELECT count(*) FROM current_orders),
            (SELECT count(*) FROM affected),
            (SELECT coalesce(avg(CAST(loaded_at > first AS INTEGER)), 0)
             FROM {ORDER_LINES}, (SELECT min(loaded_at) AS first FROM {ORDER_LINES}))
        """
    ).fetchall()[0]
    conn.execute("DROP TABLE current_orders")
    return orders, affected, unsorted


def _rewrite_affected(conn: duckdb.DuckDBPyConnection, statuses: str, params: dict) -> None:
    """Replace the lines of the affected orders, then re-band the orders the new tertiles move
    (rows written now, so they carry the run's loaded_at too)."""
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE lines AS {_lines_sql(statuses, only_affected=True)}"
    )
    affected = "(channel, order_id) IN (SELECT channel, order_id FROM affected)"
    conn.execute(f"DELETE FROM {ORDER_LINES} WHERE {affected}")
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE held_totals AS
        SELECT channel, order_id, {_NET} AS order_net, any_value(order_size_band) AS band
        FROM {ORDER_LINES}
        GROUP BY ALL
        """
    )
    _order_totals(conn, also="SELECT order_net FROM held_totals")
    _line_types(conn)
    conn.execute(f"INSERT INTO {ORDER_LINES} BY NAME {_kept_lines_sql()}", params)
    conn.execute(
        f"""
        UPDATE {ORDER_LINES} AS l
        SET order_size_band = moved.band, loaded_at = CAST($loaded_at AS TIMESTAMP)
        FROM (
            SELECT channel, order_id, band
            FROM (
                SELECT h.channel, h.order_id, h.band AS held, {_size_band_sql("h.order_net")} AS band
                FROM held_totals AS h
                CROSS JOIN bands AS b
            )
            WHERE band <> held
        ) AS moved
        WHERE l.channel = moved.channel AND l.order_id = moved.order_id
        """,
        params,
    )
    _record_exclusions(
        conn,
        "order_lines",
        _excluded_lines_sql(),
        f"({_EXCLUDED_ORDER}) IN (SELECT * FROM affected)",
    )
    _drop(conn, "lines", "order_totals", "bands", "held_totals", "affected")


# An order's net amount before refunds, over its kept lines: what size bands split.
_NET = "sum(quantity * unit_price - discount)"


def _order_totals(conn: duckdb.DuckDBPyConnection, also: str | None = None) -> None:
    """The net of each kept order of `lines` (order_totals), and the tertiles of the nets of
    these orders and of the orders `also` gives (bands: low, high)."""
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE order_totals AS
        SELECT channel, order_id, {_NET} AS order_net
        FROM lines
        WHERE excluded_by IS NULL
        GROUP BY ALL
        """
    )
    nets = "SELECT order_net FROM order_totals" + (f" UNION ALL {also}" if also else "")
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE bands AS
        SELECT quantile_cont(order_net, 1 / 3) AS low, quantile_cont(order_net, 2 / 3) AS high
        FROM ({nets})
        """
    )


def _excluded_lines_sql() -> str:
    return (
        "SELECT channel || ':' || order_id || ':' || line_no AS id, excluded_by AS rule "
        "FROM lines WHERE excluded_by IS NOT NULL"
    )


def _drop(conn: duckdb.DuckDBPyConnection, *temps: str) -> None:
    for temp in temps:
        conn.execute(f"DROP TABLE IF EXISTS {temp}")


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
              AND order_status <> 'refunded'
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
