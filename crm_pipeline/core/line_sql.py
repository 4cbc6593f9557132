"""The SQL of core.order_lines' rows: the lines of both channels with their customer and why
they are excluded, each order's net and the size bands, and the sorted write of the kept lines.
"""

from __future__ import annotations

from typing import NamedTuple

import duckdb

from crm_pipeline.core.classify import CoreRules
from crm_pipeline.core.exclusions import CROSSWALK, in_list

ORDER_LINES = "core.order_lines"
# The order every write of core.order_lines sorts by: customer, then time.
LINE_ORDER = "customer_key NULLS LAST, ordered_at, channel, order_id, line_no"
# The channel and order of an excluded line's id ('store:R1:2' -> 'store', 'R1').
EXCLUDED_ORDER = "split_part(id, ':', 1), regexp_extract(id, '^[^:]*:(.*):[^:]*$', 1)"


class StatusRules(NamedTuple):
    """core_rules' order statuses as SQL lists (settings, never data): left out, and refunds."""

    excluded: str
    refunds: str


def status_rules(config: CoreRules) -> StatusRules:
    return StatusRules(
        in_list([s.lower() for s in config.excluded_statuses]),
        in_list([s.lower() for s in config.refund_statuses]),
    )


def _online_exclusion(statuses: str) -> str:
    """Why an online item is excluded (NULL: kept), over i (items), o (its staged order) and
    e (its customer's exclusion)."""
    return (
        "CASE WHEN o.order_id IS NULL THEN 'order_not_staged' "
        "WHEN e.rule IS NOT NULL THEN e.rule "
        f"WHEN o.status IN {statuses} THEN 'order_status_' || o.status END"
    )


def lines_sql(statuses: StatusRules, only_affected: bool = False) -> str:
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
            CASE WHEN o.status IN {statuses.refunds} THEN 'refunded' ELSE o.status END
                AS order_status,
            o.payment_method,
            i.sku,
            i.quantity,
            i.unit_price,
            i.discount,
            i.source_file,
            i.source_line,
            {_online_exclusion(statuses.excluded)} AS excluded_by
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


def margin_sql(line: str, product: str) -> str:
    return (
        f"CAST(CASE WHEN {line}.order_status = 'refunded' THEN 0 ELSE {line}.quantity * "
        f"{line}.unit_price - {line}.discount - {line}.quantity * {product}.unit_cost "
        "END AS DECIMAL(14,2))"
    )


def size_band_sql(net: str) -> str:
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


def line_types(conn: duckdb.DuckDBPyConnection, empty: bool = False) -> None:
    """The ENUM types kept_lines_sql sorts by, with the values of the temp table `lines`
    (temporary: gone with the connection, never in the warehouse); `empty`, without values:
    enough to describe the query."""
    kept = "FALSE" if empty else "v IS NOT NULL"
    for column, values in _CARRIED_AS_ENUM.items():
        conn.execute(
            f"CREATE OR REPLACE TEMP TYPE line_{column} AS ENUM "
            f"(SELECT v FROM ({values}) AS t(v) WHERE {kept})"
        )


def kept_lines_sql() -> str:
    """core.order_lines' rows for the kept lines of the temp table `lines` (as lines_sql
    gives them), with their order's net in `order_totals`, banded by `bands` (low, high),
    loaded at $loaded_at; sorted.

    The sort carries only what the row is made of, its few-valued text as the ENUMs of
    line_types; amounts are derived, and text restored, after it. An outer SELECT over one
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
            {margin_sql("k", "k")} AS margin,
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
                {carried("order_size_band", size_band_sql("o.order_net"))},
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


# An order's net amount before refunds, over its kept lines: what size bands split.
NET = "sum(quantity * unit_price - discount)"
# An order line that is a sale: its order not refunded, and not given free (a gift says nothing
# of a choice the customer made). A line that is no sale still tells what the customer owns.
SOLD = "order_status <> 'refunded' AND unit_price > 0"


def order_totals_table(conn: duckdb.DuckDBPyConnection, also: str | None = None) -> None:
    """The net of each kept order of `lines` (order_totals), and the tertiles of the nets of
    these orders and of the orders `also` gives (bands: low, high)."""
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE order_totals AS
        SELECT channel, order_id, {NET} AS order_net
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


def excluded_lines_sql() -> str:
    return (
        "SELECT channel || ':' || order_id || ':' || line_no AS id, excluded_by AS rule "
        "FROM lines WHERE excluded_by IS NOT NULL"
    )


def drop_temps(conn: duckdb.DuckDBPyConnection, *temps: str) -> None:
    for temp in temps:
        conn.execute(f"DROP TABLE IF EXISTS {temp}")
