"""Writing core.order_lines, the largest core table: whole and sorted, or only the orders a run
changes (see build_order_lines)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import duckdb

from crm_pipeline.core.classify import CoreRules
from crm_pipeline.core.exclusions import excluded_customers, record_exclusions
from crm_pipeline.core.line_sql import (
    EXCLUDED_ORDER,
    NET,
    ORDER_LINES,
    StatusRules,
    drop_temps,
    excluded_lines_sql,
    kept_lines_sql,
    line_types,
    lines_sql,
    margin_sql,
    order_totals_table,
    size_band_sql,
    status_rules,
)

# At most this share of the lines lies outside the table's sort order (see build_order_lines).
REBUILD_SHARE = 0.2


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
    the run staged again), those whose customer key, exclusion, status or number of lines changed
    (a merge, a new staff account, a setting, a line gone from one day of an order spanning two),
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
    statuses = status_rules(config)
    excluded_customers(conn, config)
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
    conn.execute(f"CREATE OR REPLACE TEMP TABLE lines AS {lines_sql(statuses)}")
    order_totals_table(conn)
    line_types(conn)
    conn.execute(f"CREATE OR REPLACE TABLE {ORDER_LINES} AS {kept_lines_sql()}", params)
    record_exclusions(conn, "order_lines", excluded_lines_sql())
    drop_temps(conn, "lines", "order_totals", "bands")
    return Written(True, "written whole, sorted")


def _updatable(conn: duckdb.DuckDBPyConnection, statuses: StatusRules, params: dict) -> bool:
    """Whether core.order_lines exists with the columns, and their types, this code writes."""
    held = conn.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE schema_name = 'core' AND table_name = 'order_lines' ORDER BY column_index"
    ).fetchall()
    if not held:
        return False
    conn.execute(f"CREATE OR REPLACE TEMP VIEW lines AS {lines_sql(statuses)}")
    conn.execute(
        "CREATE OR REPLACE TEMP VIEW order_totals AS "
        "SELECT NULL AS channel, NULL AS order_id, 0 AS order_net"
    )
    conn.execute("CREATE OR REPLACE TEMP VIEW bands AS SELECT 0 AS low, 0 AS high")
    line_types(conn, empty=True)
    written = [
        (c, kind)
        for (c, kind, *_) in conn.execute(f"DESCRIBE {kept_lines_sql()}", params).fetchall()
    ]
    for view in ("lines", "order_totals", "bands"):
        conn.execute(f"DROP VIEW {view}")
    return held == written


def _affected_orders(
    conn: duckdb.DuckDBPyConnection, statuses: StatusRules
) -> tuple[int, int, float]:
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
               CASE WHEN excluded_by IS NULL THEN order_status END AS order_status,
               count(*) AS lines
        FROM ({lines_sql(statuses)})
        GROUP BY ALL
        """
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE affected AS
        WITH held AS (
            SELECT channel, order_id, customer_key, NULL::VARCHAR AS excluded_by, order_status,
                   count(*) AS lines
            FROM {ORDER_LINES}
            GROUP BY ALL
            UNION ALL
            SELECT {EXCLUDED_ORDER}, NULL, rule, NULL, count(*)
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
         AND c.order_status IS NOT DISTINCT FROM h.order_status
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
           OR l.margin IS DISTINCT FROM {margin_sql("l", "p")}
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


def _rewrite_affected(conn: duckdb.DuckDBPyConnection, statuses: StatusRules, params: dict) -> None:
    """Replace the lines of the affected orders, then re-band the orders the new tertiles move
    (rows written now, so they carry the run's loaded_at too)."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE lines AS {lines_sql(statuses, only_affected=True)}")
    affected = "(channel, order_id) IN (SELECT channel, order_id FROM affected)"
    conn.execute(f"DELETE FROM {ORDER_LINES} WHERE {affected}")
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE held_totals AS
        SELECT channel, order_id, {NET} AS order_net, any_value(order_size_band) AS band
        FROM {ORDER_LINES}
        GROUP BY ALL
        """
    )
    order_totals_table(conn, also="SELECT order_net FROM held_totals")
    line_types(conn)
    conn.execute(f"INSERT INTO {ORDER_LINES} BY NAME {kept_lines_sql()}", params)
    conn.execute(
        f"""
        UPDATE {ORDER_LINES} AS l
        SET order_size_band = moved.band, loaded_at = CAST($loaded_at AS TIMESTAMP)
        FROM (
            SELECT channel, order_id, band
            FROM (
                SELECT h.channel, h.order_id, h.band AS held, {size_band_sql("h.order_net")} AS band
                FROM held_totals AS h
                CROSS JOIN bands AS b
            )
            WHERE band <> held
        ) AS moved
        WHERE l.channel = moved.channel AND l.order_id = moved.order_id
        """,
        params,
    )
    record_exclusions(
        conn,
        "order_lines",
        excluded_lines_sql(),
        f"({EXCLUDED_ORDER}) IN (SELECT * FROM affected)",
    )
    drop_temps(conn, "lines", "order_totals", "bands", "held_totals", "affected")
