"""Association rules over baskets.

A basket is one online order or one store receipt (refunded orders are not baskets). For two
items A and C (products, or categories), over N baskets:

    support(A -> C)    = baskets with A and C / N
    confidence(A -> C) = baskets with A and C / baskets with A        = P(C | A)
    lift(A -> C)       = confidence / support(C)                       (1: independent)
    leverage(A -> C)   = support(A and C) - support(A) support(C)      (0: independent)
    conviction(A -> C) = (1 - support(C)) / (1 - confidence)           (NULL when confidence = 1)

Only items and pairs in at least max(min_baskets, min_support x N) baskets are counted (the
Apriori bound: a pair is never more frequent than either item). DuckDB reads the lines with
their items by number; numpy numbers the baskets, sorts the distinct (basket, item) pairs and
walks them: a basket's items lie side by side, so the pairs at distance d are one vectorised
comparison over the lines that still have a partner d places on. Work and memory grow with the co-purchased pairs (plus
a counter per pair of frequent items when those fit in COUNTERS), never with a
basket-by-item matrix.
"""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crm_pipeline.core.line_sql import SOLD
from crm_pipeline.mining.ranking import unique_pairs
from crm_pipeline.mining.settings import MiningSettings

LEVELS = {"product": "sku", "category": "category"}
COUNTERS = 1 << 22  # pairs of frequent items counted in one array below this (32 MB)


def create_table(table: str) -> str:
    """CREATE OR REPLACE for `table`: a warehouse table when the name has a schema
    (mining.association_rules); otherwise a temporary table of the connection, so intermediate
    results (a holdout's rules) never stay in the warehouse when a run stops halfway."""
    return f"CREATE OR REPLACE {'' if '.' in table else 'TEMP '}TABLE {table}"


def _baskets(channel: pa.ChunkedArray, order: pa.ChunkedArray, key: np.ndarray) -> np.ndarray:
    """Each line's basket: one number per (channel, order id), the lines' position order
    kept where they come grouped. Lines come mostly grouped by order (core.order_lines is
    stored by customer and time), so each run of lines with one (channel, order id) is a
    basket, and the few runs of an order whose lines lie apart are joined: found by their
    hash (`key`), confirmed by their strings (so two orders whose hashes collide stay
    apart). Exact in any order; fast when the lines come grouped."""
    start = np.ones(len(key), bool)
    if len(key) > 1:
        changed = pc.or_(
            pc.not_equal(order[1:], order[:-1]), pc.not_equal(channel[1:], channel[:-1])
        )
        start[1:] = pc.fill_null(changed, True).to_numpy()
    first = np.flatnonzero(start)  # each run's first line
    run = np.cumsum(start) - 1
    keys = np.sort(key[first])
    shared = keys[1:][keys[1:] == keys[:-1]]
    suspects = np.flatnonzero(np.isin(key[first], shared))  # in run order
    basket = np.arange(len(first))
    if len(suspects):
        lines = pa.array(first[suspects])
        names = zip(channel.take(lines).to_pylist(), order.take(lines).to_pylist(), strict=True)
        earliest: dict[tuple, int] = {}
        for number, name in zip(suspects.tolist(), names, strict=True):
            basket[number] = earliest.setdefault(name, number)  # suspects are in run order
    return basket[run]


def _basket_lines(conn: duckdb.DuckDBPyConnection, as_of: date) -> dict[str, tuple]:
    """Per level: the items by number (names in order), and each line's basket and item
    number (-1 where the line has none). The lines are those up to the end of `as_of` that
    make baskets."""
    where = f"{SOLD} AND ordered_at < CAST($as_of AS DATE) + INTERVAL 1 DAY"
    names = {
        level: [
            row[0]
            for row in conn.execute(
                f"SELECT DISTINCT {column} FROM core.order_lines "
                f"WHERE {where} AND {column} IS NOT NULL ORDER BY 1",
                {"as_of": as_of},
            ).fetchall()
        ]
        for level, column in LEVELS.items()
    }
    for level in LEVELS:
        conn.register(
            f"rule_{level}_numbers",
            pa.table(
                {"item": pa.array(names[level], pa.string()), "number": range(len(names[level]))}
            ),
        )
    lines = conn.sql(
        f"""
        SELECT l.channel, l.order_id, hash(l.channel, l.order_id) AS key,
               coalesce(p.number, -1) AS product, coalesce(c.number, -1) AS category
        FROM core.order_lines AS l
        LEFT JOIN rule_product_numbers AS p ON p.item = l.sku
        LEFT JOIN rule_category_numbers AS c ON c.item = l.category
        WHERE {where}
        """,
        params={"as_of": as_of},
    ).to_arrow_table()
    for level in LEVELS:
        conn.unregister(f"rule_{level}_numbers")
    basket = _baskets(lines["channel"], lines["order_id"], lines["key"].to_numpy())
    return {level: (names[level], basket, lines[level].to_numpy()) for level in LEVELS}


def _pair_counts(
    basket: np.ndarray, item: np.ndarray, items: int, least: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of items (a < c, by number) held together in at least `least` baskets, and
    in how many. basket, item: the distinct (basket, item) pairs sorted by basket then item."""
    frequent = np.bincount(item, minlength=items) >= least
    kept = frequent[item]
    basket = basket[kept]
    number = np.cumsum(frequent) - 1  # frequent items renumbered 0 .. count - 1
    item = number[item[kept]]
    count = int(frequent.sum())
    # Positions with a partner d places on: the same basket, and so a larger item.
    at = np.flatnonzero(basket[:-1] == basket[1:])
    dense = count * count <= COUNTERS
    together = np.zeros(count * count if dense else 0, np.int64)
    found = []
    distance = 1
    while len(at):
        codes = item[at] * count + item[at + distance]
        if dense:
            together += np.bincount(codes, minlength=count * count)
        else:
            found.append(codes)
        distance += 1
        at = at[at + distance < len(basket)]
        at = at[basket[at] == basket[at + distance]]
    if dense:
        codes = np.flatnonzero(together >= least)
        counts = together[codes]
    else:
        codes, counts = np.unique(
            np.concatenate(found or [np.zeros(0, np.int64)]), return_counts=True
        )
        codes, counts = codes[counts >= least], counts[counts >= least]
    originals = np.flatnonzero(frequent)
    return originals[codes // max(count, 1)], originals[codes % max(count, 1)], counts


def _mine_level(
    conn: duckdb.DuckDBPyConnection,
    level: str,
    lines: tuple[list, np.ndarray, np.ndarray],
    settings: MiningSettings,
    table: str,
) -> int:
    """Write the rules at `level` into `table` from its numbered lines; returns the number of
    baskets with an item at that level."""
    names, basket, item = lines
    items = max(len(names), 1)
    known = item >= 0
    codes = unique_pairs(basket[known], item[known], items)  # baskets come mostly in order
    basket, item = codes // items, codes % items
    baskets = int(np.count_nonzero(basket[1:] != basket[:-1])) + 1 if len(basket) else 0
    least = max(settings.min_baskets, settings.min_support * baskets)
    holding = np.bincount(item, minlength=len(names))
    a, c, together = _pair_counts(basket, item, len(names), least)
    conn.register(
        "rule_items",
        pa.table(
            {"item": pa.array(names, pa.string()), "number": range(len(names)), "baskets": holding}
        ),
    )
    conn.register("rule_pairs", pa.table({"a": a, "c": c, "together": together}))
    conn.execute(
        f"""
        {create_table(table)} AS
        WITH directed AS (
            SELECT a AS antecedent, c AS consequent, together FROM rule_pairs
            UNION ALL
            SELECT c, a, together FROM rule_pairs
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
            "n": float(max(baskets, 1)),
            "level": level,
            "min_confidence": settings.min_confidence,
            "min_lift": settings.min_lift,
        },
    )
    conn.unregister("rule_items")
    conn.unregister("rule_pairs")
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
    lines = _basket_lines(conn, as_of)
    return {
        level: _mine_level(conn, level, lines[level], settings, table)
        for level, table in tables.items()
    }
