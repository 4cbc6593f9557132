"""Next-best products per customer, each with the rule that justifies it.

Score: the estimated chance that a line of the customer's next basket is the product, as an
even mixture of what everyone buys and what the customer's own categories sell:

    score(c, P) = 1/2 share(P)  +  1/2 mix(c, K) share(P | K)

with share(P) P's share of all purchase lines, K = P's category, mix(c, K) the share of c's
lines in K, and share(P | K) P's share of K's lines. Candidates are every product the customer
has not bought that is a best seller overall, a best seller of one of their categories, or the
consequent of a rule from a product they bought.

Each recommendation says why, with the strongest evidence found, in this order:
- product: a product rule A -> P from a product A the customer bought (the most confident);
- category: a category rule K -> L from a category they buy, L being P's category;
- affinity: they buy in P's category and P sells best there;
- popularity: P is a best seller.
(Holdout on generated data: association rules alone, ranked by confidence, predicted later
first purchases worse than best sellers; the mixture above does better than both. Rules stay
the explanation and the cross-sell evidence.)
"""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pyarrow as pa

from crm_pipeline.mining.rules import create_table

PURCHASES = """
    SELECT * FROM core.order_lines
    WHERE customer_key IS NOT NULL AND order_status <> 'refunded'
      AND ordered_at < CAST($as_of AS DATE) + INTERVAL 1 DAY
"""
EVIDENCE = ("product", "category", "affinity", "popularity")
BLOCK = 20_000  # customers scored at a time: 20,000 x 500 products is 80 MB per array


def _evidence(rules: str, consequent: str, held: str, item: str) -> str:
    """Per recommendation, the most confident rule from something the customer holds (in
    `held`, by `item`) to it."""
    return f"""
            SELECT s.customer_key, s.sku,
                   arg_max(struct_pack(antecedent := r.antecedent, confidence := r.confidence,
                                       lift := r.lift), (r.confidence, r.antecedent)) AS rule
            FROM scored AS s
            JOIN {rules} AS r ON r.consequent = {consequent}
            SEMI JOIN {held} AS h ON h.customer_key = s.customer_key AND h.{item} = r.antecedent
            WHERE NOT $popularity_only
            GROUP BY ALL
        """


def _top_products(
    conn: duckdb.DuckDBPyConnection, as_of: date, n: int, customers: str | None, half: float
) -> pa.Table:
    """The top `n` products per customer by score, ties to the first SKU, in customer order.

    Scored in numpy, a block of customers at a time against every product: memory is bounded
    by the block (customers x products), never by baskets.
    """
    chosen = f"SEMI JOIN {customers} USING (customer_key)" if customers else ""
    days = {"as_of": as_of}
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE top_lines AS
        SELECT customer_key, sku, category FROM ({PURCHASES}) WHERE sku IS NOT NULL
        """,
        days,
    )
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE top_categories AS
        SELECT category, row_number() OVER (ORDER BY category NULLS LAST) - 1 AS k
        FROM (SELECT DISTINCT category FROM top_lines)
        """
    )
    products = conn.execute(
        """
        SELECT l.sku, l.category, count(*) / sum(count(*)) OVER () AS share,
               count(*) / sum(count(*)) OVER (PARTITION BY l.category) AS category_share,
               any_value(c.k) AS category_index
        FROM top_lines AS l JOIN top_categories AS c ON c.category IS NOT DISTINCT FROM l.category
        GROUP BY l.sku, l.category ORDER BY l.sku
        """
    ).df()
    # The customers, numbered in key order, and what each bought and in which categories.
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE top_customers AS
        SELECT customer_key, row_number() OVER (ORDER BY customer_key) - 1 AS i
        FROM (SELECT DISTINCT customer_key FROM top_lines {chosen})
        """
    )
    keys = conn.execute("SELECT customer_key FROM top_customers ORDER BY i").df()["customer_key"]
    owned = conn.execute(
        """
        SELECT DISTINCT c.i, p.j
        FROM top_lines AS l
        JOIN top_customers AS c USING (customer_key)
        JOIN (SELECT sku, row_number() OVER (ORDER BY sku) - 1 AS j
              FROM (SELECT DISTINCT sku FROM top_lines)) AS p USING (sku)
        ORDER BY c.i
        """
    ).fetchnumpy()
    owned_customer = owned["i"].astype(np.int64)
    owned_product = owned["j"].astype(np.int64)
    categories = int(products["category_index"].max()) + 1 if len(products) else 0
    mix = np.zeros((len(keys), categories))
    rows = conn.execute(
        """
        SELECT c.i, k.k, count(*) / sum(count(*)) OVER (PARTITION BY c.i) AS share
        FROM top_lines AS l
        JOIN top_customers AS c USING (customer_key)
        JOIN top_categories AS k ON k.category IS NOT DISTINCT FROM l.category
        GROUP BY c.i, k.k
        """
    ).df()
    mix[rows["i"].to_numpy(np.int64), rows["k"].to_numpy(np.int64)] = rows["share"].to_numpy()
    for temporary in ("top_lines", "top_customers", "top_categories"):
        conn.execute(f"DROP TABLE {temporary}")

    share = products["share"].to_numpy(float)
    within = products["category_share"].to_numpy(float)
    product_category = products["category_index"].to_numpy(np.int64)
    # Products are in SKU order, so a tiny penalty by position breaks ties to the first SKU.
    base = (1 - half) * share - np.arange(len(products)) * 1e-15
    take = min(n, len(products))
    out_customer, out_product, out_score, out_mix = [], [], [], []
    for first in range(0, len(keys), BLOCK):
        last = min(first + BLOCK, len(keys))
        block_mix = mix[first:last][:, product_category]
        ranked = block_mix * (half * within)
        ranked += base
        lo, hi = np.searchsorted(owned_customer, [first, last])
        ranked[owned_customer[lo:hi] - first, owned_product[lo:hi]] = -np.inf
        best = np.argpartition(-ranked, take - 1, axis=1)[:, :take] if take else ranked[:, :0]
        best_ranked = np.take_along_axis(ranked, best, axis=1)
        best = np.take_along_axis(best, np.argsort(-best_ranked, axis=1, kind="stable"), axis=1)
        rows_index = np.repeat(np.arange(last - first), take)
        picked = best.ravel()
        keep = np.isfinite(ranked[rows_index, picked])  # a customer who bought everything
        out_customer.append((rows_index + first)[keep])
        out_product.append(picked[keep])
        picked_score = (1 - half) * share[picked] + half * block_mix[rows_index, picked] * within[
            picked
        ]
        out_score.append(picked_score[keep])
        out_mix.append(block_mix[rows_index, picked][keep])
    customer = np.concatenate(out_customer) if out_customer else np.zeros(0, np.int64)
    product = np.concatenate(out_product) if out_product else np.zeros(0, np.int64)
    rank = np.ones(len(customer), np.int64)
    if len(customer):
        starts = np.r_[0, np.flatnonzero(np.diff(customer)) + 1]
        rank = (
            np.arange(len(customer)) - np.repeat(starts, np.diff(np.r_[starts, len(customer)])) + 1
        )
    mixes = np.concatenate(out_mix) if out_mix else np.zeros(0)
    return pa.table(
        {
            "customer_index": customer,
            "customer_key": pa.array(keys.to_numpy(object)[customer], pa.string()),
            "rank": rank,
            "sku": pa.array(products["sku"].to_numpy(object)[product], pa.string()),
            "category": pa.array(products["category"].to_numpy(object)[product], pa.string()),
            "score": np.concatenate(out_score) if out_score else np.zeros(0),
            "category_mix": pa.array(np.where(mixes > 0, mixes, np.nan), from_pandas=True),
        }
    )


def recommend(
    conn: duckdb.DuckDBPyConnection,
    as_of: date,
    product_rules: str,
    category_rules: str,
    n: int,
    table: str,
    customers: str | None = None,
    popularity_only: bool = False,
    explain: bool = True,
) -> None:
    """Write `table`: the top `n` products per customer (from the customers in the table named
    `customers`, else every buyer up to the day), from purchases and rules up to the same day.
    popularity_only gives the baseline: the best sellers the customer has not bought. Without
    `explain`, only customer_key, rank and sku (enough to evaluate)."""
    top = _top_products(conn, as_of, n, customers, 0.0 if popularity_only else 0.5)
    conn.register("top_products", top)
    if not explain:
        conn.execute(
            f"{create_table(table)} AS "
            "SELECT customer_key, rank, sku FROM top_products ORDER BY customer_index, rank"
        )
        conn.unregister("top_products")
        return
    conn.execute(
        f"""
        {create_table(table)} AS
        WITH lines AS ({PURCHASES}),
        owned AS (SELECT DISTINCT customer_key, sku FROM lines),
        mix AS (SELECT DISTINCT customer_key, category FROM lines),
        scored AS (SELECT * FROM top_products),
        product_evidence AS ({_evidence(product_rules, "s.sku", "owned", "sku")}),
        category_evidence AS ({_evidence(category_rules, "s.category", "mix", "category")}),
        explained AS (
            SELECT s.*,
                   CASE WHEN pe.rule IS NOT NULL THEN 'product'
                        WHEN ce.rule IS NOT NULL THEN 'category'
                        WHEN s.category_mix > 0 AND NOT $popularity_only THEN 'affinity'
                        ELSE 'popularity' END AS rule_level,
                   coalesce(pe.rule, ce.rule) AS rule
            FROM scored AS s
            LEFT JOIN product_evidence AS pe USING (customer_key, sku)
            LEFT JOIN category_evidence AS ce USING (customer_key, sku)
        )
        SELECT e.customer_key,
               e.rank,
               e.sku, p.name AS product, e.category, e.score, e.rule_level,
               CASE WHEN e.rule_level = 'affinity' THEN e.category ELSE e.rule.antecedent END
                   AS antecedent,
               CASE e.rule_level WHEN 'product' THEN e.sku WHEN 'popularity' THEN NULL
                    ELSE e.category END AS consequent,
               CASE WHEN e.rule_level = 'affinity' THEN e.category_mix
                    ELSE e.rule.confidence END AS confidence,
               e.rule.lift AS lift,
               CASE e.rule_level
                   WHEN 'product' THEN
                       'Bought ' || coalesce(a.name, e.rule.antecedent) || '; '
                       || round(e.rule.confidence * 100, 1) || '% of baskets with it also hold '
                       || coalesce(p.name, e.sku) || ' (lift ' || round(e.rule.lift, 1) || ')'
                   WHEN 'category' THEN
                       'Buys ' || e.rule.antecedent || '; ' || round(e.rule.confidence * 100, 1)
                       || '% of ' || e.rule.antecedent || ' baskets also hold ' || e.category
                       || ' (lift ' || round(e.rule.lift, 1) || '), where '
                       || coalesce(p.name, e.sku) || ' sells well'
                   WHEN 'affinity' THEN
                       CAST(round(e.category_mix * 100) AS INTEGER) || '% of their purchases are ' || e.category
                       || ', and ' || coalesce(p.name, e.sku) || ' is among its best sellers'
                   ELSE 'A best seller they have not bought'
               END AS reason,
               CAST($as_of AS TIMESTAMP) AS as_of
        FROM explained AS e
        LEFT JOIN core.products AS p USING (sku)
        LEFT JOIN core.products AS a ON e.rule_level = 'product' AND a.sku = e.rule.antecedent
        ORDER BY e.customer_index, e.rank
        """,
        {"as_of": as_of, "popularity_only": popularity_only},
    )
    conn.unregister("top_products")
