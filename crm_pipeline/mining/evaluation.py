"""The recommender's holdout evaluation: recommendations made as of a cut-off, from purchases up
to it, scored against the products customers then bought for the first time, beside the best
sellers (the popularity baseline)."""

from __future__ import annotations

from datetime import date

import numpy as np

from crm_pipeline.mining.ranking import Lines, Purchases, purchases, top_products, unique_pairs


def _among(sorted_codes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Which of `codes` are in `sorted_codes`."""
    if not len(sorted_codes):
        return np.zeros(len(codes), bool)
    found = np.minimum(np.searchsorted(sorted_codes, codes), len(sorted_codes) - 1)
    return sorted_codes[found] == codes


def _scores(
    bought: Purchases, picks: np.ndarray, new: np.ndarray, products: int
) -> tuple[float, float]:
    """Hit rate (share of the customers with at least one recommended product among the new
    products they bought) and recall (mean share of those new products recommended). `new`:
    the sorted codes customer x `products` + product of the first purchases after the cut-off,
    numbered as in the Lines; every customer of `bought` has one."""
    row, rank = np.nonzero(picks >= 0)
    recommended = bought.customers[row] * products + bought.products[picks[row, rank]]
    hits = np.bincount(row[_among(new, recommended)], minlength=len(bought.keys))
    wanted = np.bincount(np.searchsorted(bought.customers, new // products))
    return float(np.mean(hits > 0)), float(np.mean(hits / wanted))


def evaluate(lines: Lines, cutoff: date, n: int) -> dict:
    """Recommend as of `cutoff` from the lines up to it, and score the top `n` against the
    products each customer bought for the first time after the cut-off (up to the lines' day),
    beside the popularity baseline.

    A customer counts when they bought before the cut-off and bought something new after it.
    Nothing after the cut-off reaches the recommendations: the after-part only selects the
    customers to score and the products to find.
    """
    products = len(lines.sku)
    before = lines.upto(cutoff)
    sold = ~lines.unsold  # a product refunded or given free was owned, but is no purchase to find
    owned = unique_pairs(lines.customer[before], lines.product[before], products)
    after = ~before & sold
    later = unique_pairs(lines.customer[after], lines.product[after], products)
    seen = _among(owned, later)
    earlier_buyer = np.zeros(len(lines.keys), bool)
    earlier_buyer[lines.customer[before & sold]] = True
    new = later[~seen & earlier_buyer[later // products]]
    customers = new // products  # sorted, as `new` is
    customers = customers[np.r_[True, customers[1:] != customers[:-1]]] if len(new) else customers
    bought = purchases(lines, cutoff, customers)
    scores = {}
    for name, half in (("", 0.5), ("baseline_", 0.0)):
        hit_rate, recall = (
            _scores(bought, top_products(bought, n, half), new, products)
            if len(customers)
            else (None, None)
        )
        scores[f"{name}hit_rate_at_{n}"] = hit_rate
        scores[f"{name}recall_at_{n}"] = recall
    return {
        "cutoff": cutoff.isoformat(),
        "end": lines.as_of.isoformat(),
        "customers": len(customers),
        "new_products_bought": len(new),
    } | scores
