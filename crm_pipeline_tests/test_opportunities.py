"""Market opportunities on a hand-made market: whitespace, win-back and their values."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from crm_pipeline.mining.opportunities import opportunities, penetration
from crm_pipeline.mining.settings import MiningSettings
from crm_pipeline_tests.mining_builder import key, order_lines

DAY = date(2025, 6, 30)
SETTINGS = MiningSettings(min_segment_buyers=2, whitespace_ratio=0.7)


@pytest.fixture
def conn():
    """Eight individual customers, four in North and four in South. Everyone buys bread (b);
    in North two of four also buy apples (a) for 10, in South nobody does. N0 spent the most
    and is probably gone. S1 and S3 bought once (BG/NBD gives them no churn risk) and are in
    the top monetary quintile; S3 is overdue by the rule, S1 only late. N0's P(alive) of 0.497
    reads 0.49, not rounded up to the 0.5 it is below."""
    conn = duckdb.connect()
    baskets = [
        (key(f"N{i}"), "2025-03-01", ["bread"] + (["apple"] if i < 2 else [])) for i in range(4)
    ]
    baskets += [(key(f"S{i}"), "2025-03-02", ["bread"]) for i in range(4)]
    baskets += [(key("N0"), "2025-01-10", ["bread"])]
    order_lines(conn, baskets, price=10.0)
    conn.execute(
        """
        CREATE SCHEMA analytics; CREATE SCHEMA mining;
        CREATE TABLE core.stores (store_id VARCHAR, city VARCHAR, region VARCHAR);
        CREATE TABLE analytics.scored_customers AS
        SELECT DISTINCT customer_key, 'individual' AS customer_type,
               CASE WHEN customer_key IN $north THEN 'North' ELSE 'South' END AS region,
               'Town' AS city,
               CASE WHEN customer_key IN ($n0, $s1, $s3) THEN 5 ELSE 3 END AS m_score,
               CASE customer_key WHEN $n0 THEN 0.497 WHEN $s1 THEN 1 WHEN $s3 THEN 1 ELSE 0.9
               END AS p_alive,
               CASE WHEN customer_key NOT IN ($s1, $s3) THEN 1 - p_alive END AS churn_risk,
               CASE customer_key WHEN $s3 THEN 2.4 WHEN $s1 THEN 1.5 ELSE 0.5 END AS gap_ratio,
               CASE customer_key WHEN $s3 THEN 'high' WHEN $s1 THEN 'medium' ELSE 'low'
               END AS rule_churn_tier
        FROM core.order_lines
        """,
        {
            "north": [key(f"N{i}") for i in range(4)],
            "n0": key("N0"),
            "s1": key("S1"),
            "s3": key("S3"),
        },
    )
    conn.execute(
        """
        CREATE TABLE mining.recommendations (
            customer_key VARCHAR, rank BIGINT, sku VARCHAR, category VARCHAR,
            rule_level VARCHAR, confidence DOUBLE, reason VARCHAR
        );
        INSERT INTO mining.recommendations VALUES
            ($s0, 1, 'apple', 'a', 'product', 0.5, 'Bought BREAD; ...'),
            ($s1, 1, 'apple', 'a', 'popularity', NULL, 'A best seller'),
            -- S2's best pick is a product with no price in core.products; its next one counts.
            ($s2, 1, 'ghost', 'g', 'product', 0.9, 'Bought BREAD; ...'),
            ($s2, 2, 'apple', 'a', 'category', 0.4, 'Buys b; ...');
        """,
        {f"s{i}": key(f"S{i}") for i in range(3)},
    )
    yield conn
    conn.close()


def _mine(conn: duckdb.DuckDBPyConnection, settings: MiningSettings = SETTINGS) -> None:
    penetration(conn, DAY, settings, "mining.penetration")
    opportunities(conn, DAY, settings, "opps")


def _found(conn: duckdb.DuckDBPyConnection, kind: str) -> list[tuple]:
    return conn.execute(
        "SELECT target, category, estimated_value, reason, rank FROM opps WHERE type = ? "
        "ORDER BY rank",
        [kind],
    ).fetchall()


def test_whitespace_is_a_segment_far_below_its_customer_type(conn) -> None:
    _mine(conn)
    matrix = conn.execute(
        "SELECT region, category, segment_buyers, category_buyers, penetration, "
        "comparable_penetration, whitespace FROM mining.penetration ORDER BY ALL"
    ).fetchall()
    assert matrix == [
        ("North", "a", 4, 2, 50.0, 25.0, False),
        ("North", "b", 4, 4, 100.0, 100.0, False),
        ("South", "a", 4, 0, 0.0, 25.0, True),
        ("South", "b", 4, 4, 100.0, 100.0, False),
    ]
    # Individuals: 2 of 8 buy apples (25%); South 0% < 0.7 x 25%, North 50% is not.
    # One missing buyer in South, at the 10 an apple buyer spent in the year.
    assert _found(conn, "whitespace") == [
        (
            "individual / South",
            "a",
            pytest.approx(10.0),
            (
                "Individual customers in South: 0.0% buy a against 25.0% of individual "
                "customers everywhere; 1 more buyers at 10 a year each would bring 10"
            ),
            1,
        )
    ]


def test_whitespace_needs_enough_buyers_to_judge_a_segment(conn) -> None:
    _mine(conn, MiningSettings(min_segment_buyers=5))
    assert _found(conn, "whitespace") == []  # four buyers per region: too few to judge


def test_win_back_and_cross_sell_name_their_customer(conn) -> None:
    _mine(conn)
    ((target, _, value, reason, _), one_time) = _found(conn, "win_back")
    # N0 spent 30 over three lines since 10 January: less than a year, so the yearly value
    # is what they spent.
    assert (target, value) == (key("N0"), pytest.approx(30.0))
    assert reason == "Spent 30 in 2 orders; last purchase 121 days ago; P(alive) 0.49"
    # A one-time buyer, whose P(alive) of 1 is the model's assumption, is judged by the rule.
    assert one_time[0] == key("S3") and one_time[2] == pytest.approx(10.0)
    assert one_time[3] == (
        "Spent 10 in 1 order; last purchase 120 days ago; overdue by the rule (gap ratio 2.4)"
    )
    # Figures are cut to the digits shown, exactly: 0.29 reads 0.29 and a gap ratio of 2.96
    # reads 2.9, not the 3.0 rounding gives.
    for column in ("p_alive", "gap_ratio"):  # as scoring writes them
        conn.execute(f"ALTER TABLE analytics.scored_customers ALTER {column} TYPE DOUBLE")
    conn.execute(
        "UPDATE analytics.scored_customers SET p_alive = CASE customer_key WHEN ? THEN 0.29 "
        "ELSE p_alive END, gap_ratio = CASE customer_key WHEN ? THEN 2.96 ELSE gap_ratio END",
        [key("N0"), key("S3")],
    )
    _mine(conn)
    ((_, _, _, reason, _), (_, _, _, one_time_reason, _)) = _found(conn, "win_back")
    assert reason.endswith("; P(alive) 0.29") and one_time_reason.endswith("(gap ratio 2.9)")
    # Only rule-backed recommendations of priced products are cross-sell: S0's, worth 0.5 x 10,
    # and S2's second, worth 0.4 x 10.
    found = [(t, v) for t, _, v, _, _ in _found(conn, "cross_sell")]
    assert found == [(key("S0"), 5.0), (key("S2"), pytest.approx(4.0))]


def test_free_samples_make_no_buyers_and_no_orders(conn) -> None:
    # South is handed free apples, and N0 a free loaf after their last order: no purchase.
    samples = [("S0", "apple", "a"), ("S1", "apple", "a"), ("N0", "bread", "b")]
    for number, (buyer, sku, category) in enumerate(samples):
        conn.execute(
            "INSERT INTO core.order_lines VALUES (?, '2025-06-01 12:00', 'store', ?, 1, 'S9', "
            "'completed', ?, ?, 1, 0, 0, -2.5)",
            [key(buyer), f"G{number}", sku, category],
        )
    _mine(conn)
    assert conn.execute(
        "SELECT category_buyers, whitespace FROM mining.penetration "
        "WHERE region = 'South' AND category = 'a'"
    ).fetchone() == (0, True)
    (target, _, value, reason, _) = _found(conn, "win_back")[0]
    assert (target, value) == (key("N0"), pytest.approx(30.0))
    assert reason == "Spent 30 in 2 orders; last purchase 121 days ago; P(alive) 0.49"


def test_upsell_is_a_repeat_buyer_below_the_median_price(conn) -> None:
    # Cherries (c): U buys at 4 on two days, V at 4 twice on one day, five others once each
    # at 10 to 18. Line prices 4 4 4 4 10 12 14 16 18: median 10, upper quartile 14.
    cherries = [("U", "2025-02-01", 4), ("U", "2025-04-01", 4)]
    cherries += [("V", "2025-05-01", 4), ("V", "2025-05-01 18:00", 4)]
    cherries += [(buyer, "2025-05-02", 10 + 2 * i) for i, buyer in enumerate("WXYZQ")]
    # Free gifts say nothing of what a customer pays: they would lower the median and make
    # Q, who paid 18, a repeat buyer of cherries at 9 on average.
    cherries += [("U", "2025-06-01", 0), ("Q", "2025-06-03", 0)]
    for number, (buyer, at, price) in enumerate(cherries):
        conn.execute(
            "INSERT INTO core.order_lines VALUES (?, ?, 'online', ?, 1, NULL, 'delivered', "
            "'cherry', 'c', 1, ?, ?, NULL)",
            [key(buyer), at, f"C{number}", price, price],
        )
    _mine(conn)
    # U: 2 units at 4, 10 under the upper quartile each, over less than a year of buying.
    assert _found(conn, "upsell") == [
        (
            key("U"),
            "c",
            pytest.approx(20.0),
            (
                "Buys c often (2 days, 2 units) at 4 on average; the upper quarter of c sales "
                "is at 14 or more"
            ),
            1,
        )
    ]


def test_regions_and_their_cities_grow_as_types_of_their_own(conn) -> None:
    # Moved 60 days on, March's baskets fall in the last quarter and N0's January one in the
    # quarter before; S0 bought once more in that earlier quarter. Everyone lives in Town.
    conn.execute("UPDATE core.order_lines SET ordered_at = ordered_at + INTERVAL 60 DAY")
    conn.execute(
        "INSERT INTO core.order_lines SELECT * REPLACE (ordered_at - INTERVAL 100 DAY AS ordered_at) "
        "FROM core.order_lines WHERE customer_key = ?",
        [key("S0")],
    )
    _mine(conn)
    found = conn.execute(
        "SELECT type, target_kind, target, estimated_value, rank FROM opps "
        "WHERE type IN ('regional_growth', 'city_growth') ORDER BY ALL"
    ).fetchall()
    # Each a type of its own, ranked on its own: a type's values add up, no sale counted twice
    # (North 60 against 10, South 40 against 10, their town 100 against 20; a year is x4).
    assert found == [
        ("city_growth", "city", "Town", 320.0, 1),
        ("regional_growth", "region", "North", 200.0, 1),
        ("regional_growth", "region", "South", 120.0, 2),
    ]


def test_customers_of_no_known_region_are_no_whitespace(conn) -> None:
    conn.execute("UPDATE analytics.scored_customers SET region = NULL WHERE region = 'South'")
    _mine(conn)
    assert conn.execute(
        "SELECT region, bool_or(whitespace) FROM mining.penetration GROUP BY 1 ORDER BY 1"
    ).fetchall() == [("(no region)", False), ("North", False)]
