"""Association rules against a brute-force count on hand-made baskets."""

from __future__ import annotations

from datetime import date
from itertools import permutations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from crm_pipeline.mining import rules
from crm_pipeline.mining.rules import _baskets, mine_rules
from crm_pipeline.mining.settings import MiningSettings
from crm_pipeline_tests.mining_builder import order_lines

BASKETS = [
    ["bread", "butter", "milk"],
    ["bread", "butter"],
    ["bread", "milk"],
    ["bread", "butter", "jam"],
    ["milk", "cereal"],
    ["milk", "cereal", "bread"],
    ["jam"],
    ["bread", "butter", "milk", "jam"],
]
ALL = MiningSettings(min_support=1e-9, min_baskets=1, min_confidence=0, min_lift=0)


def brute_force(baskets: list[list[str]]) -> dict[tuple[str, str], dict[str, float]]:
    n = len(baskets)
    sets = [set(b) for b in baskets]

    def share(*items: str) -> float:
        return sum(all(i in s for i in items) for s in sets) / n

    items = sorted(set().union(*sets))
    out = {}
    for a, c in permutations(items, 2):
        if share(a, c) == 0:
            continue
        confidence = share(a, c) / share(a)
        out[(a, c)] = {
            "support": share(a, c),
            "confidence": confidence,
            "lift": confidence / share(c),
            "leverage": share(a, c) - share(a) * share(c),
            "conviction": (1 - share(c)) / (1 - confidence) if confidence < 1 else None,
        }
    return out


@pytest.fixture
def conn():
    conn = duckdb.connect()
    order_lines(conn, [(f"C{i}", "2025-03-01", b) for i, b in enumerate(BASKETS)])
    yield conn
    conn.close()


def _rules(conn: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], dict[str, float]]:
    frame = conn.execute("FROM rules").df()
    return {
        (r.antecedent, r.consequent): {
            "support": r.support,
            "confidence": r.confidence,
            "lift": r.lift,
            "leverage": r.leverage,
            "conviction": None if r.conviction != r.conviction else r.conviction,
        }
        for r in frame.itertuples()
    }


def _assert_matches(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for pair, metrics in expected.items():
        for name, value in metrics.items():
            assert got[pair][name] == pytest.approx(value), (pair, name)


def test_every_rule_metric_matches_a_brute_force_count(conn) -> None:
    assert mine_rules(conn, date(2025, 3, 1), ALL, {"product": "rules"}) == {
        "product": len(BASKETS)
    }
    got = _rules(conn)
    _assert_matches(got, brute_force(BASKETS))
    # butter is only ever bought with bread: confidence 1, conviction infinite (NULL).
    assert got[("butter", "bread")]["confidence"] == 1
    assert got[("butter", "bread")]["conviction"] is None


def test_thresholds_keep_only_rules_that_clear_them(conn) -> None:
    strict = MiningSettings(min_support=0.25, min_baskets=1, min_confidence=0.6, min_lift=1.0)
    mine_rules(conn, date(2025, 3, 1), strict, {"product": "rules"})
    expected = {
        pair
        for pair, m in brute_force(BASKETS).items()
        if m["support"] >= 0.25 and m["confidence"] >= 0.6 and m["lift"] >= 1.0
    }
    assert set(_rules(conn)) == expected and expected


def test_category_rules_count_a_basket_once_per_category(conn) -> None:
    mine_rules(conn, date(2025, 3, 1), ALL, {"category": "rules"})
    # bread and butter are both category b: a basket holding both counts once for b.
    baskets = [sorted({sku[0] for sku in b}) for b in BASKETS]
    _assert_matches(_rules(conn), brute_force(baskets))


def test_baskets_after_the_day_are_not_counted(conn) -> None:
    conn.execute(
        "INSERT INTO core.order_lines SELECT * REPLACE (ordered_at + INTERVAL 1 DAY AS ordered_at, "
        "order_id || 'late' AS order_id) FROM core.order_lines"
    )
    assert mine_rules(conn, date(2025, 3, 1), ALL, {"product": "rules"}) == {
        "product": len(BASKETS)
    }
    assert _rules(conn)[("butter", "bread")]["support"] == pytest.approx(4 / 8)


def test_a_line_given_free_is_in_no_basket(conn) -> None:
    # A jam given free with every basket: no choice the customer made, so no rule.
    conn.execute(
        "INSERT INTO core.order_lines SELECT * REPLACE ('jam' AS sku, 'j' AS category, "
        "0 AS unit_price, 0 AS net_amount, 99 AS line_no) FROM core.order_lines "
        "WHERE sku = 'bread'"
    )
    mine_rules(conn, date(2025, 3, 1), ALL, {"product": "rules"})
    _assert_matches(_rules(conn), brute_force(BASKETS))


def test_an_online_order_and_a_store_receipt_with_the_same_id_are_two_baskets(conn) -> None:
    # Every basket again as a store receipt under the same id: twice the baskets, with the
    # same shares. Counted as one basket per id, there would be half as many.
    conn.execute(
        "INSERT INTO core.order_lines SELECT * REPLACE ('store' AS channel) FROM core.order_lines"
    )
    assert mine_rules(conn, date(2025, 3, 1), ALL, {"product": "rules"}) == {
        "product": 2 * len(BASKETS)
    }
    _assert_matches(_rules(conn), brute_force(BASKETS + BASKETS))


def test_both_levels_mined_together_match_each_mined_alone(conn) -> None:
    both = {"product": "product_rules", "category": "category_rules"}
    counts = mine_rules(conn, date(2025, 3, 1), ALL, both)
    for level, table in both.items():
        together = conn.execute(f"FROM {table} ORDER BY ALL").fetchall()
        assert mine_rules(conn, date(2025, 3, 1), ALL, {level: "rules"}) == {level: counts[level]}
        assert conn.execute("FROM rules ORDER BY ALL").fetchall() == together
        assert together


def test_an_order_whose_lines_lie_apart_is_one_basket(conn) -> None:
    # Lines of order O0 at both ends of the table, another order's between them: still one
    # basket (a store receipt across midnight sorts this way).
    conn.execute(
        "INSERT INTO core.order_lines SELECT * REPLACE (line_no + 10 AS line_no, 'jam' AS sku, "
        "'j' AS category) FROM core.order_lines WHERE order_id = 'O0' AND line_no = 1"
    )
    baskets = [list(b) for b in BASKETS]
    baskets[0].append("jam")
    assert mine_rules(conn, date(2025, 3, 1), ALL, {"product": "rules"}) == {
        "product": len(BASKETS)
    }
    _assert_matches(_rules(conn), brute_force(baskets))


def test_orders_whose_hashes_collide_stay_apart() -> None:
    channel = pa.chunked_array([["online", "online", "store", "online", "store"]])
    order = pa.chunked_array([["A", "B", "A", "A", "A"]])
    # One hash for every line: only the strings tell the orders apart.
    basket = _baskets(channel, order, np.zeros(5, np.uint64))
    assert basket.tolist() == [0, 1, 2, 0, 2]


def test_large_and_skewed_baskets_match_a_brute_force_count(monkeypatch) -> None:
    rng = np.random.default_rng(7)
    skus = [f"s{i:02d}" for i in range(40)]
    # One basket with every product, many small ones, a repeated line in some.
    baskets = [skus] + [list(rng.choice(skus, size=rng.integers(1, 6))) for _ in range(300)]
    expected = brute_force(baskets)
    four = MiningSettings(min_support=1e-9, min_baskets=4, min_confidence=0, min_lift=0)
    frequent = {p: m for p, m in expected.items() if m["support"] * len(baskets) >= 4 - 1e-9}
    assert 0 < len(frequent) < len(expected)
    conn = duckdb.connect()
    order_lines(conn, [(f"C{i}", "2025-03-01", b) for i, b in enumerate(baskets)])
    for counters in (1 << 22, 16):  # pairs counted in one array, then as sorted codes
        monkeypatch.setattr(rules, "COUNTERS", counters)
        mine_rules(conn, date(2025, 3, 1), ALL, {"product": "rules"})
        _assert_matches(_rules(conn), expected)
        mine_rules(conn, date(2025, 3, 1), four, {"product": "rules"})
        _assert_matches(_rules(conn), frequent)
    conn.close()
