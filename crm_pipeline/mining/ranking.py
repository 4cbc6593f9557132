"""Ranking the products a customer has not bought, as of a day.

Score: the estimated chance that a line of the customer's next basket is the product, as an
even mixture of what everyone buys and what the customer's own categories sell:

    score(c, P) = 1/2 share(P)  +  1/2 mix(c, K) share(P | K)

with share(P) P's share of the purchase lines of known customers (an anonymous receipt is
in no share), K = P's category, mix(c, K) the share of c's
lines in K, and share(P | K) P's share of K's lines. Every product the customer has not bought
is a candidate. The popularity baseline is share(P) alone.

Since share(P) = share(K) share(P | K), the score is share(P | K) x (1/2 share(K) + 1/2
mix(c, K)): within a category every customer ranks products the same way, by their share of
it. The top N per customer is therefore a merge of one ranked list per category, a few steps
over (customers x categories), never a customers x products matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np

from crm_pipeline.core.line_sql import SOLD

# Every line of a known customer up to the day, refunded and free ones too: a product bought
# and returned, or given, is no purchase (it counts in no share), but no recommendation either.
PURCHASES = """
    SELECT * FROM core.order_lines
    WHERE customer_key IS NOT NULL
      AND ordered_at < CAST($as_of AS DATE) + INTERVAL 1 DAY
"""
BLOCK = 100_000  # customers ranked at a time: 100,000 x 500 products of owned flags is 50 MB
TIE = 1e-15  # per position in SKU order: equal scores go to the first SKU
EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class Lines:
    """The purchase lines up to a day, by number: customers in key order, products in SKU
    order, and each line's customer, product and day (days since 1970-01-01). Read once, they
    give the purchases as of that day or any day before it."""

    as_of: date
    keys: np.ndarray  # customer keys
    sku: np.ndarray
    category: np.ndarray  # per product; None when unknown
    customer: np.ndarray  # per line
    product: np.ndarray
    day: np.ndarray
    unsold: np.ndarray  # per line: no sale (its order refunded, or the line given free)

    def upto(self, day: date | None) -> np.ndarray:
        """Which lines are on or before `day` (None: all of them)."""
        if day is None:
            return np.ones(len(self.day), bool)
        return self.day <= (day - EPOCH).days


@dataclass(frozen=True)
class Purchases:
    """What was bought up to a day: products in SKU order with their shares, and per customer
    (numbered in key order) the products they own and their mix of categories."""

    keys: np.ndarray  # customer keys, in key order
    customers: np.ndarray  # their numbers in the Lines
    products: np.ndarray  # the products' numbers in the Lines
    sku: np.ndarray
    category: np.ndarray
    share: np.ndarray  # of the known customers' purchase lines
    within: np.ndarray  # of its category's lines
    category_index: np.ndarray  # 0 .. categories - 1
    owned_customer: np.ndarray  # (customer, product) pairs bought, sorted by customer
    owned_product: np.ndarray
    # Per sale line (not refunded, not given free): its customer and product, what a customer
    # can be said to have bought. Owned pairs also hold what they returned or were given.
    sold_customer: np.ndarray
    sold_product: np.ndarray
    mix: np.ndarray  # customers x categories: the share of the customer's lines

    @property
    def category_names(self) -> np.ndarray:
        """Category names by category index, plus a last None (no category)."""
        names = np.empty(self.mix.shape[1] + 1, object)
        names[self.category_index] = self.category
        return names

    def owned_block(self, first: int, last: int) -> np.ndarray:
        """Customers first..last-1 x products (+1 column, never owned, that pads lists)."""
        owned = np.zeros((last - first, len(self.sku) + 1), bool)
        lo, hi = np.searchsorted(self.owned_customer, [first, last])
        owned[self.owned_customer[lo:hi] - first, self.owned_product[lo:hi]] = True
        return owned


def purchase_lines(conn: duckdb.DuckDBPyConnection, as_of: date) -> Lines:
    """Every purchase line of a known customer and product up to the end of `as_of`."""
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE top_lines AS
        SELECT customer_key, sku, category,
               CAST(CAST(ordered_at AS DATE) - DATE '1970-01-01' AS INTEGER) AS day,
               NOT ({SOLD}) AS unsold
        FROM ({PURCHASES}) WHERE sku IS NOT NULL
        """,
        {"as_of": as_of},
    )
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE top_products AS
        SELECT sku, min(category) AS category, row_number() OVER (ORDER BY sku) - 1 AS j
        FROM top_lines GROUP BY sku
        """
    )
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE top_customers AS
        SELECT customer_key, row_number() OVER (ORDER BY customer_key) - 1 AS i
        FROM (SELECT DISTINCT customer_key FROM top_lines)
        """
    )
    products = conn.execute("SELECT sku, category FROM top_products ORDER BY j").df()
    # fetchnumpy: a million keys in a third of the time of a DataFrame.
    keys = conn.execute("SELECT customer_key FROM top_customers ORDER BY i").fetchnumpy()
    numbered = conn.execute(
        """
        SELECT c.i, p.j, l.day, l.unsold
        FROM top_lines AS l
        JOIN top_customers AS c USING (customer_key)
        JOIN top_products AS p USING (sku)
        """
    ).fetchnumpy()
    for temporary in ("top_lines", "top_customers", "top_products"):
        conn.execute(f"DROP TABLE {temporary}")
    category = products["category"].astype(object)
    return Lines(
        as_of=as_of,
        keys=np.asarray(keys["customer_key"], object),
        sku=products["sku"].to_numpy(object),
        category=category.where(category.notna(), None).to_numpy(object),
        customer=np.asarray(numbered["i"], np.int64),  # no copy: already these types
        product=np.asarray(numbered["j"], np.int64),
        day=np.asarray(numbered["day"], np.int32),
        unsold=np.asarray(numbered["unsold"], bool),
    )


def in_blocks(count: int, work: Callable[[int, int], None]) -> None:
    """work(first, last) over blocks of BLOCK customers, two blocks at a time: numpy's loops
    release the GIL, so two blocks share the two cores. Each block writes its own rows."""
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda first: work(first, min(first + BLOCK, count)), range(0, count, BLOCK)))


def unique_pairs(customer: np.ndarray, product: np.ndarray, products: int) -> np.ndarray:
    """The distinct (customer, product) pairs as sorted codes customer x products + product;
    np.sort, then dropping repeats, is ten times faster than np.unique. The lines come mostly
    in customer order (core.order_lines is stored by customer), and the stable sort (a merge
    sort that finds runs) uses that: 0.4 s against 0.7 s for 8.6M lines."""
    codes = np.sort(customer * products + product, kind="stable")
    return codes[np.r_[True, codes[1:] != codes[:-1]]] if len(codes) else codes


def purchases(
    lines: Lines, upto: date | None = None, customers: np.ndarray | None = None
) -> Purchases:
    """The purchases in `lines` up to the end of `upto` (default: all of them). Shares count
    every buyer's lines; customers are those numbered in `customers` (sorted, distinct) that bought
    by then, else every buyer. Products never bought by then are not candidates. A line
    refunded or given free is no purchase, but its product is owned (never recommended back)."""
    held = lines.upto(upto)
    kept = held & ~lines.unsold
    customer, product = lines.customer[kept], lines.product[kept]
    returned_customer, returned_product = lines.customer[held], lines.product[held]
    counts = np.bincount(product, minlength=len(lines.sku))
    products = np.flatnonzero(counts)
    if len(products) < len(lines.sku):
        counts = counts[products]
        product = np.searchsorted(products, product)  # renumbered among the products kept
        sold = np.isin(returned_product, products)
        returned_customer = returned_customer[sold]
        returned_product = np.searchsorted(products, returned_product[sold])
    category = lines.category[products]
    names = sorted({c for c in category if c is not None})
    position = {name: i for i, name in enumerate(names)}
    category_index = np.array([position.get(c, len(names)) for c in category], np.int64)
    categories = int(category_index.max()) + 1 if len(products) else 0
    in_category = np.bincount(category_index, weights=counts, minlength=categories)
    bought = np.bincount(customer, minlength=len(lines.keys)) > 0
    chosen = np.flatnonzero(bought) if customers is None else customers[bought[customers]]
    if len(chosen) < len(lines.keys):  # renumbered among the customers chosen
        number = np.full(len(lines.keys), -1)
        number[chosen] = np.arange(len(chosen))
        customer = number[customer]
        mine = customer >= 0
        customer, product = customer[mine], product[mine]
        returned_customer = number[returned_customer]
        mine = returned_customer >= 0
        returned_customer, returned_product = returned_customer[mine], returned_product[mine]
    owned = unique_pairs(returned_customer, returned_product, len(products))
    by_category = np.bincount(
        customer * categories + category_index[product], minlength=len(chosen) * categories
    ).reshape(len(chosen), categories)
    return Purchases(
        keys=lines.keys[chosen],
        customers=chosen,
        products=products,
        sku=lines.sku[products],
        category=category,
        share=counts / max(counts.sum(), 1),
        within=counts / in_category[category_index],
        category_index=category_index,
        owned_customer=owned // max(len(products), 1),
        owned_product=owned % max(len(products), 1),
        sold_customer=customer,
        sold_product=product,
        mix=by_category / np.maximum(by_category.sum(axis=1, keepdims=True), 1),
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

    def rank_block(first: int, last: int) -> None:
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

    in_blocks(len(bought.keys), rank_block)
    return picks
