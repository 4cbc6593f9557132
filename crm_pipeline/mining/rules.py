"""Association rules over baskets, counted in DuckDB.

A basket is one online order or one store receipt (refunded orders are not baskets). For two
items A and C (products, or categories), over N baskets:

    support(A -> C)    = baskets with A and C / N
    confidence(A -> C) = baskets with A and C / baskets with A        = P(C | A)
    lift(A -> C)       = confidence / support(C)                       (1: independent)
    leverage(A -> C)   = support(A and C) - support(A) support(C)      (0: independent)
    conviction(A -> C) = (1 - support(C)) / (1 - confidence)           (NULL when confidence = 1)

Only items and pairs in at least max(min_baskets, min_support x N) baskets are counted (the
Apriori bound: a pair is never more frequent than either item), and pairs are counted by a
self-join on the basket id, so memory grows with distinct frequent pairs, never with a
basket-by-item matrix.
"""

from __future__ import annotations

from datetime import date

import duckdb

from crm_pipeline.mining.settings import MiningSettings

LEVELS = {"product": "sku", "category": "category"}


def create_table(table: str) -> str:
    """CREATE OR REPLACE for `table`: a warehouse table when the name has a schema
    (mining.association_rules); otherwise a temporary table of the connection, so intermediate
    results (a holdout's rules) never stay in the warehouse when a run stops halfway."""
    return f"CREATE OR REPLACE {'' if '.' in table else 'TEMP '}TABLE {table}"


def _basket_lines(conn: duckdb.DuckDBPyConnection, as_of: date) -> None:
    """TEMP TABLE rule_lines: the lines up to the end of `as_of` that make baskets, each with
    its basket by number (the first row of its order), so that pairs are joined on an integer,
    not on (channel, order id) strings."""
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE rule_lines AS
        SELECT min(rowid) OVER (PARTITION BY channel, order_id) AS basket, sku, category
        FROM core.order_lines
        WHERE order_status <> 'refunded' AND ordered_at < CAST($as_of AS DATE) + INTERVAL 1 DAY
        """,
        {"as_of": as_of},
    )


def _mine_level(
    conn: duckdb.DuckDBPyConnection, level: str, settings: MiningSettings, table: str
) -> int:
    """Write the rules at `level` from rule_lines into `table`; returns the number of baskets
    with an item at that level."""
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE rule_baskets AS "
        f"SELECT DISTINCT basket, {LEVELS[level]} AS item FROM rule_lines "
        f"WHERE {LEVELS[level]} IS NOT NULL"
    )
    baskets = conn.execute("SELECT count(DISTINCT basket) FROM rule_baskets").fetchall()[0][0]
    least = max(settings.min_baskets, settings.min_support * baskets)
    # Frequent items by number, so that the pair join and count run on integers.
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE rule_items AS
        SELECT item, row_number() OVER (ORDER BY item) AS number, count(*) AS baskets
        FROM rule_baskets GROUP BY item HAVING count(*) >= $least
        """,
        {"least": least},
    )
    conn.execute(
        f"""
        {create_table(table)} AS
        WITH frequent AS (
            SELECT basket, number FROM rule_baskets JOIN rule_items USING (item)
        ), pairs AS (
            SELECT x.number AS a, y.number AS c, count(*) AS together
            FROM frequent AS x JOIN frequent AS y ON x.basket = y.basket AND x.number < y.number
            GROUP BY 1, 2
            HAVING count(*) >= $least
        ), directed AS (
            SELECT a AS antecedent, c AS consequent, together FROM pairs
            UNION ALL
            SELECT c, a, together FROM pairs
        ), measured AS (
            SELECT ia.item AS antecedent, ic.item AS consequent, d.together AS baskets,
                   d.together / $n AS support,
                   ia.baskets / $n AS antecedent_support,
                   ic.baskets / $n AS consequent_support,
                   d.together / ia.baskets AS confidence
            FROM directed AS d
            JOIN rule_items AS ia ON ia.number = d.antecedent
            JOIN rule_items AS ic ON ic.number = d.consequent
        )
        SELECT $level AS level, antecedent, consequent, baskets, support,
               antecedent_support, consequent_support, confidence,
               confidence / consequent_support AS lift,
               support - antecedent_support * consequent_support AS leverage,
               CASE WHEN confidence < 1 THEN (1 - consequent_support) / (1 - confidence) END
                   AS conviction,
               row_number() OVER (
                   PARTITION BY antecedent ORDER BY confidence DESC, lift DESC, consequent
               ) AS antecedent_rank
        FROM measured
        WHERE confidence >= $min_confidence AND confidence / consequent_support >= $min_lift
        ORDER BY antecedent, antecedent_rank
        """,
        {
            "least": least,
            "n": float(max(baskets, 1)),
            "level": level,
            "min_confidence": settings.min_confidence,
            "min_lift": settings.min_lift,
        },
    )
    conn.execute("DROP TABLE rule_baskets")
    conn.execute("DROP TABLE rule_items")
    return baskets


def mine_rules(
    conn: duckdb.DuckDBPyConnection,
    as_of: date,
    settings: MiningSettings,
    tables: dict[str, str],
) -> dict[str, int]:
    """Write the rules of each level in `tables` ('product' or 'category' -> table) from
    baskets up to `as_of`; returns the number of baskets per level. The lines are read once
    for every level."""
    _basket_lines(conn, as_of)
    baskets = {level: _mine_level(conn, level, settings, table) for level, table in tables.items()}
    conn.execute("DROP TABLE rule_lines")
    return baskets
