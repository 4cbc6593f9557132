"""Next-best products from rules, and the holdout evaluation against the popularity baseline."""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pytest

from crm_pipeline.mining import ranking
from crm_pipeline.mining.evaluation import evaluate
from crm_pipeline.mining.ranking import purchase_lines, purchases, top_products
from crm_pipeline.mining.recommend import _holders, _strongest, recommend
from crm_pipeline.mining.rules import mine_rules
from crm_pipeline.mining.settings import MiningSettings
from crm_pipeline_tests.mining_builder import order_lines

SETTINGS = MiningSettings(min_support=0.01, min_baskets=2, min_confidence=0.1, min_lift=1.0)
CUTOFF, END = date(2025, 3, 31), date(2025, 4, 30)


def _history() -> list[tuple[str, str, list[str]]]:
    """Before the cut-off (110 baskets, 170 lines): milk is in most baskets; bread goes with
    cake; B customers buy bread and buns, S customers milk. After it, B customers buy cake and
    S customers eggs with butter, a product never sold before."""
    baskets = []
    for i in range(40):
        baskets.append((f"M{i}", "2025-02-01", ["milk"]))
        baskets.append((f"M{i}", "2025-02-08", ["milk", "eggs"] if i % 2 else ["milk", "cheese"]))
    for i in range(10):
        baskets.append((f"C{i}", "2025-03-01", ["bread", "cake"]))
        baskets.append((f"B{i}", "2025-03-02", ["bread", "bun"]))
        baskets.append((f"S{i}", "2025-03-04", ["milk"]))
        baskets.append((f"B{i}", "2025-04-10", ["cake"]))
        baskets.append((f"S{i}", "2025-04-11", ["eggs", "butter"]))
    return baskets


DAIRY = {sku: "dairy" for sku in ("milk", "eggs", "cheese", "butter")}
BAKERY = {sku: "bakery" for sku in ("bread", "bun", "cake")}


@pytest.fixture
def conn():
    conn = duckdb.connect()
    order_lines(conn, _history(), category=DAIRY | BAKERY)
    yield conn
    conn.close()


def _recommend(
    conn: duckdb.DuckDBPyConnection, n: int, settings: MiningSettings = SETTINGS, **options
) -> None:
    mine_rules(conn, CUTOFF, settings, {"product": "p_rules", "category": "c_rules"})
    recommend(conn, CUTOFF, "p_rules", "c_rules", n, "recs", **options)


def _of(conn: duckdb.DuckDBPyConnection, customer: str) -> list[tuple]:
    return conn.execute(
        "SELECT sku, score, rule_level, reason FROM recs WHERE customer_key = ? ORDER BY rank",
        [customer],
    ).fetchall()


def test_scores_mix_what_everyone_buys_with_what_the_customers_categories_sell(conn) -> None:
    _recommend(conn, 2)
    # B0 buys only bakery (bread, bun). milk: half its share of all 170 lines; cake: half its
    # share of all lines plus half its share of the 40 bakery lines.
    (milk, milk_score, *_), (cake, cake_score, level, reason) = _of(conn, "B0")
    assert (milk, cake) == ("milk", "cake")
    assert milk_score == pytest.approx(0.5 * 90 / 170)
    assert cake_score == pytest.approx(0.5 * 10 / 170 + 0.5 * 10 / 40)
    # The product rule bread -> cake (10 of the 20 bread baskets) justifies cake.
    assert level == "product"
    assert reason == "Bought BREAD; 50.0% of baskets with it also hold CAKE (lift 5.5)"
    assert _of(conn, "B0")[0][2:] == ("popularity", "A best seller they have not bought")
    # S0 bought milk; milk -> cheese and milk -> eggs (lift 1.2 each) justify the next two.
    assert [(sku, level) for sku, _, level, _ in _of(conn, "S0")] == [
        ("cheese", "product"),
        ("eggs", "product"),
    ]


def test_without_a_rule_the_customers_own_category_is_the_reason(conn) -> None:
    _recommend(conn, 2, MiningSettings(min_support=0.01, min_baskets=2, min_lift=1.5))
    # At lift 1.5 the milk rules are gone: S0 buys only dairy, where cheese and eggs sell
    # best after milk (ties go by SKU).
    assert [(sku, level) for sku, _, level, _ in _of(conn, "S0")] == [
        ("cheese", "affinity"),
        ("eggs", "affinity"),
    ]
    assert _of(conn, "S0")[0][3] == (
        "100% of their order lines are dairy, and CHEESE is among its best sellers"
    )


def test_recommendations_never_repeat_a_purchase_and_rank_one_to_n(conn) -> None:
    _recommend(conn, 3)
    assert (
        conn.execute(
            "SELECT count(*) FROM recs JOIN core.order_lines USING (customer_key, sku) "
            "WHERE ordered_at < DATE '2025-04-01'"
        ).fetchall()[0][0]
        == 0
    )
    assert conn.execute(
        "SELECT count(DISTINCT customer_key), bool_and(ranks = [1, 2, 3]) FROM ("
        "SELECT customer_key, list(rank ORDER BY rank) AS ranks FROM recs GROUP BY 1)"
    ).fetchall()[0] == (70, True)
    # Written in customer and rank order, so per-customer queries read few row groups.
    assert conn.execute(
        "SELECT bool_and(rowid = position) FROM "
        "(SELECT rowid, row_number() OVER (ORDER BY customer_key, rank) - 1 AS position FROM recs)"
    ).fetchall()[0][0]


# No sale: the order refunded, or the line given free (a gift says nothing of a choice).
UNSOLD = {
    "returned": "order_status = 'refunded'",
    "given_free": "unit_price = 0, net_amount = 0",
}


@pytest.mark.parametrize("how", list(UNSOLD))
def test_a_product_returned_or_given_free_is_neither_recommended_back_nor_a_sale(
    conn, how: str
) -> None:
    # B0 got a cake before the cut-off, S1 cheese, new to them, after it; neither paid for it.
    returns = [("B0", "2025-03-05", ["cake"]), ("S1", "2025-04-12", ["cheese"])]
    order_lines(conn, _history() + returns, category=DAIRY | BAKERY)
    conn.execute(
        f"UPDATE core.order_lines SET {UNSOLD[how]} WHERE order_id IN (?, ?)",
        [f"O{len(_history())}", f"O{len(_history()) + 1}"],
    )
    _recommend(conn, 2)
    assert [sku for sku, *_ in _of(conn, "B0")] == ["milk", "cheese"]  # not the cake
    # No sale: B1, who bought as B0 did, is scored on the shares of the history without it.
    (_, milk_score, *_), (cake, cake_score, *_) = _of(conn, "B1")
    assert cake == "cake" and milk_score == pytest.approx(0.5 * 90 / 170)
    assert cake_score == pytest.approx(0.5 * 10 / 170 + 0.5 * 10 / 40)
    # Nor a first purchase the holdout looks for.
    order_lines(conn, _history(), category=DAIRY | BAKERY)
    without = evaluate(purchase_lines(conn, END), CUTOFF, 2)
    order_lines(conn, _history() + returns[1:], category=DAIRY | BAKERY)
    conn.execute(
        f"UPDATE core.order_lines SET {UNSOLD[how]} WHERE sku = 'cheese' AND customer_key = 'S1'"
    )
    assert evaluate(purchase_lines(conn, END), CUTOFF, 2) == without


@pytest.mark.parametrize("how", list(UNSOLD))
def test_a_product_returned_or_given_free_is_no_evidence_of_a_purchase(conn, how: str) -> None:
    # R0 paid for milk, but their one loaf of bread was returned, or given to them.
    extra = [("R0", "2025-03-06", ["bread"]), ("R0", "2025-03-07", ["milk"])]
    order_lines(conn, _history() + extra, category=DAIRY | BAKERY)
    conn.execute(
        f"UPDATE core.order_lines SET {UNSOLD[how]} WHERE order_id = ?", [f"O{len(_history())}"]
    )
    _recommend(conn, 6)
    picks = conn.execute(
        "SELECT sku, rule_level, antecedent, reason FROM recs WHERE customer_key = 'R0' "
        "ORDER BY rank"
    ).fetchall()
    # Cake and bun go with bread (rules bread -> cake, bread -> bun), but no rule from bread
    # speaks for R0, and no reason says they bought it.
    assert {"cake", "bun"} <= {sku for sku, *_ in picks}
    assert [pick for pick in picks if pick[2] == "bread" or "bread" in pick[3].lower()] == []


def test_the_baseline_is_the_best_sellers_not_yet_bought(conn) -> None:
    _recommend(conn, 2, popularity_only=True)
    # M0 bought milk and cheese; eggs and bread sell 20 lines each (ties go by SKU).
    assert [(sku, level) for sku, _, level, _ in _of(conn, "M0")] == [
        ("bread", "popularity"),
        ("eggs", "popularity"),
    ]


def test_the_holdout_recommender_beats_popularity_and_sees_nothing_after_the_cutoff(conn) -> None:
    figures = evaluate(purchase_lines(conn, END), CUTOFF, 2)
    # B customers bought cake (1 new product), S customers eggs and butter (2).
    assert (figures["customers"], figures["new_products_bought"]) == (20, 30)
    assert figures["hit_rate_at_2"] == 1.0
    assert figures["recall_at_2"] == pytest.approx((10 * 1 + 10 * 0.5) / 20)
    # The best sellers after milk (bread, cheese; eggs ties with them) miss every purchase.
    assert figures["baseline_hit_rate_at_2"] == 0.0
    assert figures["baseline_recall_at_2"] == 0.0
    # What is recommended as of the cut-off is the same without the purchases after it, and
    # butter, first sold after the cut-off, is never recommended.
    bought = purchases(purchase_lines(conn, END), CUTOFF)
    as_of_cutoff = _ranked(bought)
    assert "butter" not in bought.sku
    conn.execute("DELETE FROM core.order_lines WHERE ordered_at >= DATE '2025-04-01'")
    assert _ranked(purchases(purchase_lines(conn, END))) == as_of_cutoff
    assert _ranked(purchases(purchase_lines(conn, CUTOFF))) == as_of_cutoff


def _ranked(bought) -> list[tuple[str, list[str]]]:
    """Each customer's top 2 skus, for both rankings, by customer key."""
    return [
        (key, [bought.sku[p] for p in row if p >= 0] + [bought.sku[p] for p in base if p >= 0])
        for key, row, base in zip(
            bought.keys, top_products(bought, 2, 0.5), top_products(bought, 2, 0.0), strict=True
        )
    ]


def test_customers_ranked_in_many_small_blocks_get_what_one_block_gives(
    conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At scale customers are ranked 100,000 at a time, two blocks at once on threads; here 7
    # at a time, so every block boundary and both threads are crossed.
    _recommend(conn, 3)
    whole = conn.execute("FROM recs ORDER BY customer_key, rank").fetchall()
    figures = evaluate(purchase_lines(conn, END), CUTOFF, 2)
    monkeypatch.setattr(ranking, "BLOCK", 7)
    _recommend(conn, 3)
    assert conn.execute("FROM recs ORDER BY customer_key, rank").fetchall() == whole
    assert evaluate(purchase_lines(conn, END), CUTOFF, 2) == figures
    assert len({row[0] for row in whole}) > 7 * 4


def test_without_any_rule_every_pick_is_an_affinity_or_a_best_seller(conn) -> None:
    # Thresholds no pair reaches, as in a young warehouse: no rules at either level.
    _recommend(conn, 2, MiningSettings(min_support=1.0, min_baskets=2))
    assert conn.execute("SELECT count(*) FROM p_rules").fetchall() == [(0,)]
    levels = dict(conn.execute("SELECT rule_level, count(*) FROM recs GROUP BY 1").fetchall())
    assert set(levels) == {"affinity", "popularity"}
    assert sum(levels.values()) == 70 * 2
    assert conn.execute(
        "SELECT count(*) FROM recs WHERE reason IS NULL OR (rule_level = 'affinity') <> "
        "(reason LIKE '%of their order lines are%')"
    ).fetchall() == [(0,)]


def test_each_pick_cites_the_most_confident_rule_whose_antecedent_the_customer_bought() -> None:
    # Brute force on random holdings and rules: 61 customers (not a whole number of bytes of
    # bits), 9 products, up to 5 rules into each, most confident first.
    rng = np.random.default_rng(7)
    owns = rng.random((61, 9)) < 0.3
    rules = [(a, c) for c in range(9) for a in rng.permutation(9)[: rng.integers(0, 6)] if a != c]
    antecedents = np.array([a for a, _ in rules])
    sizes = np.bincount([c for _, c in rules], minlength=10)
    by_consequent = np.full((10, sizes.max()), -1)
    for number, (_, c) in enumerate(rules):
        by_consequent[c, np.argmax(by_consequent[c] < 0)] = number
    customer, item = np.nonzero(~owns)
    cited = _strongest(
        by_consequent, antecedents, _holders(*np.nonzero(owns), 9, 61), customer, item
    )
    expected = [
        next((r for r in by_consequent[i] if r >= 0 and owns[c, antecedents[r]]), -1)
        for c, i in zip(customer, item, strict=True)
    ]
    assert cited.tolist() == expected
    assert 0 < (cited >= 0).sum() < len(cited)
