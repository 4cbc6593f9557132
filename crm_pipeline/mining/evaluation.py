"""The recommender's holdout evaluation: recommendations made as of a cut-off, from purchases up
to it, scored against the products customers then bought for the first time, beside the best
sellers (the popularity baseline)."""

from __future__ import annotations

from datetime import date

import duckdb
import pyarrow as pa

from crm_pipeline.mining.ranking import purchases, ranked


def _scores(conn: duckdb.DuckDBPyConnection, recommended: pa.Table) -> tuple[float, float]:
    """Hit rate (share of holdout customers with at least one recommended product among the
    new products they bought) and recall (mean share of those new products recommended)."""
    conn.register("holdout_recommended", recommended)
    scores = conn.execute(
        """
        SELECT avg(CAST(hits > 0 AS DOUBLE)), avg(hits / new)
        FROM (
            SELECT t.customer_key, t.new, count(h.sku) AS hits
            FROM holdout_targets AS t
            LEFT JOIN (
                SELECT customer_key, sku FROM holdout_recommended
                SEMI JOIN holdout_new USING (customer_key, sku)
            ) AS h USING (customer_key)
            GROUP BY ALL
        )
        """
    ).fetchall()[0]
    conn.unregister("holdout_recommended")
    return scores


def evaluate(conn: duckdb.DuckDBPyConnection, cutoff: date, end: date, n: int) -> dict:
    """Recommend as of `cutoff` from purchases up to it, and score the top `n` against the
    products each customer bought for the first time after the cut-off, up to `end`, beside
    the popularity baseline.

    A customer counts when they bought before the cut-off and bought something new after it.
    Nothing after the cut-off reaches the recommendations: the after-part only selects the
    customers to score and the products to find.
    """
    days = {"cutoff": cutoff, "end": end}
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE holdout_new AS
        WITH lines AS (
            SELECT customer_key, sku, ordered_at < CAST($cutoff AS DATE) + INTERVAL 1 DAY AS before
            FROM core.order_lines
            WHERE customer_key IS NOT NULL AND sku IS NOT NULL AND order_status <> 'refunded'
              AND ordered_at < CAST($end AS DATE) + INTERVAL 1 DAY
        )
        SELECT customer_key, sku FROM lines
        GROUP BY ALL
        HAVING NOT bool_or(before)
           AND customer_key IN (SELECT customer_key FROM lines WHERE before)
        """,
        days,
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE holdout_targets AS "
        "SELECT customer_key, count(*) AS new FROM holdout_new GROUP BY 1"
    )
    bought = purchases(conn, cutoff, "holdout_targets")
    hit_rate, recall = _scores(conn, ranked(bought, n))
    base_hit_rate, base_recall = _scores(conn, ranked(bought, n, popularity_only=True))
    customers, new = conn.execute(
        "SELECT count(*), coalesce(sum(new), 0) FROM holdout_targets"
    ).fetchall()[0]
    for table in ("holdout_new", "holdout_targets"):
        conn.execute(f"DROP TABLE {table}")
    return {
        "cutoff": cutoff.isoformat(),
        "end": end.isoformat(),
        "customers": customers,
        "new_products_bought": int(new),
        f"hit_rate_at_{n}": hit_rate,
        f"recall_at_{n}": recall,
        f"baseline_hit_rate_at_{n}": base_hit_rate,
        f"baseline_recall_at_{n}": base_recall,
    }
