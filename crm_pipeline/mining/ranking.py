"""Ranking the products a customer has not bought, as of a day.

Score: the estimated chance that a line of the customer's next basket is the product, as an
even mixture of what everyone buys and what the customer's own categories sell:

    score(c, P) = 1/2 share(P)  +  1/2 mix(c, K) share(P | K)

with share(P) P's share of all purchase lines, K = P's category, mix(c, K) the share of c's
lines in K, and share(P | K) P's share of K's lines. Every product the customer has not bought
is a candidate. The popularity baseline is share(P) alone.

Since share(P) = share(K) share(P | K), the score is share(P | K) x (1/2 share(K) + 1/2
mix(c, K)): within a category every customer ranks products the same way, by their share of
it. The top N per customer is therefore a merge of one ranked list per category, a few steps
over (customers x categories), never a customers x products matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np
import pyarrow as pa

PURCHASES = """
    SELECT * FROM core.order_lines
    WHERE customer_key IS NOT NULL AND order_status <> 'refunded'
      AND ordered_at < CAST($as_of AS DATE) + INTERVAL 1 DAY
"""
BLOCK = 100_000  # customers ranked at a time: 100,000 x 500 products of owned flags is 50 MB
TIE = 1e-15  # per position in SKU order: equal scores go to the first SKU


@dataclass(frozen=True)
class Purchases:
    """What was bought up to a day: products in SKU order with their shares, and per customer
    (numbered in key order) the products they own and their mix of categories."""

    keys: np.ndarray  # customer keys, in key order
    sku: np.ndarray
    category: np.ndarray
    share: np.ndarray  # of all purchase lines
    within: np.ndarray  # of its category's lines
    category_index: np.ndarray  # 0 .. categories - 1
    owned_customer: np.ndarray  # (customer, product) pairs bought, sorted by customer
    owned_product: np.ndarray
    mix: np.ndarray  # customers x categories: the share of the customer's lines

    def owned_block(self, first: int, last: int) -> np.ndarray:
        """Customers first..last-1 x products (+1 column, never owned, that pads lists)."""
        owned = np.zeros((last - first, len(self.sku) + 1), bool)
        lo, hi = np.searchsorted(self.owned_customer, [first, last])
        owned[self.owned_customer[lo:hi] - first, self.owned_product[lo:hi]] = True
        return owned


def purchases(conn: duckdb.DuckDBPyConnection, as_of: date, customers: str | None) -> Purchases:
    """Purchases up to `as_of`. Shares count every buyer's lines; customers are those in the
    table named `customers`, else every buyer."""
    chosen = f"SEMI JOIN {customers} USING (customer_key)" if customers else ""
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE top_lines AS
        SELECT customer_key, sku, category FROM ({PURCHASES}) WHERE sku IS NOT NULL
        """,
        {"as_of": as_of},
    )
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE top_products AS
        SELECT sku, category, count(*) / sum(count(*)) OVER () AS share,
               count(*) / sum(count(*)) OVER (PARTITION BY category) AS category_share,
               dense_rank() OVER (ORDER BY category NULLS LAST) - 1 AS category_index,
               row_number() OVER (ORDER BY sku) - 1 AS j
        FROM top_lines GROUP BY sku, category
        """
    )
    products = conn.execute("SELECT * FROM top_products ORDER BY j").df()
    products["category"] = (
        products["category"].astype(object).where(products["category"].notna(), None)
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE top_customers AS
        SELECT customer_key, row_number() OVER (ORDER BY customer_key) - 1 AS i
        FROM (SELECT DISTINCT customer_key FROM top_lines {chosen})
        """
    )
    keys = conn.execute("SELECT customer_key FROM top_customers ORDER BY i").df()["customer_key"]
    # Every line by number (customer, product): what each owns and their mix of categories.
    lines = conn.execute(
        """
        SELECT c.i, p.j
        FROM top_lines AS l
        JOIN top_customers AS c USING (customer_key)
        JOIN top_products AS p USING (sku)
        """
    ).fetchnumpy()
    for temporary in ("top_lines", "top_customers", "top_products"):
        conn.execute(f"DROP TABLE {temporary}")
    customer, product = lines["i"].astype(np.int64), lines["j"].astype(np.int64)
    category_index = products["category_index"].to_numpy(np.int64)
    # Sorted by customer; np.sort, then dropping repeats, is ten times faster than np.unique.
    owned = np.sort(customer * len(products) + product)
    owned = owned[np.r_[True, owned[1:] != owned[:-1]]] if len(owned) else owned
    categories = int(category_index.max()) + 1 if len(products) else 0
    counts = np.bincount(
        customer * categories + category_index[product], minlength=len(keys) * categories
    ).reshape(len(keys), categories)
    return Purchases(
        keys=keys.to_numpy(object),
        sku=products["sku"].to_numpy(object),
        category=products["category"].to_numpy(object),
        share=products["share"].to_numpy(float),
        within=products["category_share"].to_numpy(float),
        category_index=category_index,
        owned_customer=owned // max(len(products), 1),
        owned_product=owned % max(len(products), 1),
        mix=counts / np.maximum(counts.sum(axis=1, keepdims=True), 1),
    )


def _ranked_lists(bought: Purchases) -> tuple[np.ndarray, np.ndarray]:
    """Per category, its products best first (by share of the category, then SKU), padded to
    one length plus one with the never-owned column; and their shares (-inf as padding)."""
    products = len(bought.sku)
    categories = bought.mix.shape[1]
    order = np.lexsort((np.arange(products), -bought.within, bought.category_index))
    sizes = np.bincount(bought.category_index, minlength=categories)
    depth = np.arange(products) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    lists = np.full((categories, sizes.max(initial=0) + 1), products)
    lists[bought.category_index[order], depth] = order
    shares = np.full(lists.shape, -np.inf)
    shares[bought.category_index[order], depth] = bought.within[order]
    return lists, shares


def _past_owned(
    heads: np.ndarray, lists: np.ndarray, owned: np.ndarray, row: np.ndarray, category: np.ndarray
) -> None:
    """Move the heads (row, category) of the category lists past the products their customer
    bought; only the heads that still point at one are touched again."""
    while len(row):
        bought_it = owned[row, lists[category, heads[row, category]]]
        row, category = row[bought_it], category[bought_it]
        heads[row, category] += 1


def top_products(bought: Purchases, n: int, half: float) -> np.ndarray:
    """customers x n: the product numbers of each customer's top `n` not yet bought, best
    first (-1 past the last product they have not bought), for score (1 - half) share(P) +
    half mix(c, K) share(P | K), with 0 <= half < 1 (every category keeps a weight)."""
    if not 0 <= half < 1:
        raise ValueError(f"half must be at least 0 and below 1, not {half}")
    lists, shares = _ranked_lists(bought)
    category_share = np.bincount(
        bought.category_index, weights=bought.share, minlength=lists.shape[0]
    )
    picks = np.full((len(bought.keys), n), -1)
    for first in range(0, len(bought.keys), BLOCK):
        last = min(first + BLOCK, len(bought.keys))
        owned = bought.owned_block(first, last)
        weight = (1 - half) * category_share + half * bought.mix[first:last]
        rows = np.arange(last - first)[:, None]
        heads = np.zeros(weight.shape, np.int64)  # per customer and category: the next product
        column = np.arange(lists.shape[0])[None, :]
        _past_owned(heads, lists, owned, *np.nonzero(np.ones(weight.shape, bool)))
        for rank in range(n):
            product = lists[column, heads]
            score = weight * shares[column, heads] - product * TIE
            best = score.argmax(axis=1)
            found = np.isfinite(score[rows[:, 0], best])
            picks[first:last, rank] = np.where(found, product[rows[:, 0], best], -1)
            heads[rows[found, 0], best[found]] += 1
            _past_owned(heads, lists, owned, rows[found, 0], best[found])
    return picks


def ranked(bought: Purchases, n: int, popularity_only: bool = False) -> pa.Table:
    """customer_key, rank, sku: the top `n` per customer (best sellers only, for the
    baseline), enough to evaluate."""
    picks = top_products(bought, n, 0.0 if popularity_only else 0.5)
    customer, rank = np.nonzero(picks >= 0)
    return pa.table(
        {
            "customer_key": pa.array(bought.keys[customer], pa.string()),
            "rank": rank + 1,
            "sku": pa.array(bought.sku[picks[customer, rank]], pa.string()),
        }
    )
