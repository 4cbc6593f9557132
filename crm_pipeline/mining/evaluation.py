"""The recommender's holdout evaluation: recommendations made as of a cut-off, from rules mined
up to it, scored against the products customers then bought for the first time, beside the
best sellers (the popularity baseline)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import duckdb

from crm_pipeline.mining.recommend import recommend


def _scores(conn: duckdb.DuckDBPyConnection, recommendations: str) -> tuple[float, float]:
    """Hit rate (share of holdout customers with at least one recommended product among the
    new products they bought) and recall (mean share of those new products recommended)."""
    return conn.execute(
        f"""
        SELECT avg(CAST(hits > 0 AS DOUBLE)), avg(hits / new)
        FROM (
            SELECT t.customer_key, t.new, count(h.sku) AS hits
            FROM holdout_targets AS t
            LEFT JOIN (
                SELECT customer_key, sku FROM {recommendations}
                SEMI JOIN holdout_new USING (customer_key, sku)
            ) AS h USING (customer_key)
            GROUP BY ALL
        )
        """
    ).fetchall()[0]


def evaluate(
    conn: duckdb.DuckDBPyConnection,
    cutoff: date,
    end: date,
    mine: Callable[[date, str, str], int],
    n: int,
) -> dict:
    """Recommend as of `cutoff` from rules mined on baskets up to it (`mine(day, level,
    table)` writes them), and score the top `n` against the products each customer bought
    for the first time after the cut-off, up to `end`, beside the popularity baseline.

    A customer counts when they bought before the cut-off and bought something new after it.
    Nothing after the cut-off reaches the rules or the recommendations.
    """
    days = {"cutoff": cutoff, "end": end}
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE holdout_before AS
        SELECT DISTINCT customer_key, sku FROM core.order_lines
        WHERE customer_key IS NOT NULL AND order_status <> 'refunded'
          AND ordered_at < CAST($cutoff AS DATE) + INTERVAL 1 DAY
        """,
        {"cutoff": cutoff},
    )
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE holdout_new AS
        SELECT DISTINCT customer_key, sku
        FROM core.order_lines
        SEMI JOIN (SELECT DISTINCT customer_key FROM holdout_before) USING (customer_key)
        ANTI JOIN holdout_before USING (customer_key, sku)
        WHERE order_status <> 'refunded'
          AND ordered_at >= CAST($cutoff AS DATE) + INTERVAL 1 DAY
          AND ordered_at < CAST($end AS DATE) + INTERVAL 1 DAY
        """,
        days,
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE holdout_targets AS "
        "SELECT customer_key, count(*) AS new FROM holdout_new GROUP BY 1"
    )
    baskets = mine(cutoff, "product", "holdout_product_rules")
    mine(cutoff, "category", "holdout_category_rules")
    rules = conn.execute("SELECT count(*) FROM holdout_product_rules").fetchall()[0][0]
    common = (cutoff, "holdout_product_rules", "holdout_category_rules", n)
    targets = {"customers": "holdout_targets", "explain": False}
    recommend(conn, *common, "holdout_recommended", **targets)
    recommend(conn, *common, "holdout_baseline", popularity_only=True, **targets)
    hit_rate, recall = _scores(conn, "holdout_recommended")
    base_hit_rate, base_recall = _scores(conn, "holdout_baseline")
    customers, new = conn.execute(
        "SELECT count(*), coalesce(sum(new), 0) FROM holdout_targets"
    ).fetchall()[0]
    for table in (
        "holdout_before",
        "holdout_new",
        "holdout_targets",
        "holdout_product_rules",
        "holdout_category_rules",
        "holdout_recommended",
        "holdout_baseline",
    ):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    return {
        "cutoff": cutoff.isoformat(),
        "end": end.isoformat(),
        "baskets_before_cutoff": baskets,
        "product_rules": rules,
        "customers": customers,
        "new_products_bought": int(new),
        f"hit_rate_at_{n}": hit_rate,
        f"recall_at_{n}": recall,
        f"baseline_hit_rate_at_{n}": base_hit_rate,
        f"baseline_recall_at_{n}": base_recall,
    }
