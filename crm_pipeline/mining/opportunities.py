"""Market opportunities as of a day, in DuckDB: where revenue can grow, ranked within each type.

Six types (regional and city growth are two), each with an estimated value (yearly, but for
cross-sell: the one sale) and a reason in plain words, from the lines up to the day that are
sales (not refunded, not given free):
- whitespace: a cell of mining.penetration, a segment (customer type x region) whose share of
  buyers of a category is below `whitespace_ratio` of the same customer type everywhere; value = the missing buyers x what a
  buyer of that category spent in the last 365 days. Segments with fewer than
  `min_segment_buyers` buyers are left out (too small to tell);
- regional_growth: a region or city whose revenue in the last 90 days beat the 90 before;
  value = the quarterly gain x 4 (a year at the new pace);
- win_back: a customer in the top monetary quintile likely lost: P(alive) below 0.5, or, where
  the model gives no churn risk (a one-time buyer, whom BG/NBD holds alive; no usable fit),
  the rule's churn tier high (silent twice their typical gap); value = what a year of them was
  worth (spend per year of their buying life, at least one year);
- cross_sell: a customer's best rule-backed recommendation; value = the rule's confidence x the
  product's price;
- upsell: a customer who bought in a category on 2+ days at a mean unit price below the
  category's median price; value = (the category's
  upper-quartile price - theirs) x their units in the category per year.
"""

from __future__ import annotations

from datetime import date

import duckdb

from crm_pipeline.core.line_sql import SOLD
from crm_pipeline.core.schemas import key_number
from crm_pipeline.mining.settings import MiningSettings

TYPES = ("whitespace", "regional_growth", "city_growth", "win_back", "cross_sell", "upsell")
# A segment of customers whose region is unknown: no place a sales team can go to.
NO_REGION = "(no region)"

# lines: what was bought up to the day (not refunded, not given free: a free gift says nothing
# of what a customer buys or pays); sales: the same with the buyer's type and place.
SALES = f"""
    lines AS (
        SELECT * FROM core.order_lines
        WHERE {SOLD} AND ordered_at < CAST($as_of AS DATE) + INTERVAL 1 DAY
    ), sales AS (
        SELECT l.*, s.customer_type, s.region AS customer_region, s.city AS customer_city
        FROM lines AS l
        LEFT JOIN analytics.scored_customers AS s USING (customer_key)
    )
"""


def _money(expression: str) -> str:
    return f"format('{{:,.0f}}', {expression})"


PENETRATION = f"""
    WITH year AS (
        -- Per customer and category (NULL: none known), their revenue in the year; grouped
        -- before the join, so the customers are looked up once per category, not per line,
        -- by their keys' numbers (cheaper to group and join on than the text).
        SELECT b.*, s.customer_type, coalesce(s.region, '{NO_REGION}') AS customer_region
        FROM (
            SELECT {key_number("customer_key")} AS customer_key, category,
                   sum(net_amount) AS net_amount
            FROM lines
            WHERE ordered_at >= CAST($as_of AS DATE) - INTERVAL 364 DAY
              AND customer_key IS NOT NULL
            GROUP BY ALL
        ) AS b
        JOIN analytics.scored_customers AS s
          ON {key_number("s.customer_key")} = b.customer_key
        WHERE s.customer_type IS NOT NULL
    ), segments AS (
        SELECT customer_type, customer_region AS region, count(DISTINCT customer_key) AS buyers
        FROM year GROUP BY ALL
    ), types AS (
        SELECT customer_type, count(DISTINCT customer_key) AS buyers FROM year GROUP BY ALL
    ), category_buyers AS (
        SELECT customer_type, customer_region AS region, category,
               count(*) AS buyers, sum(net_amount) AS revenue
        FROM year WHERE category IS NOT NULL GROUP BY ALL
    ), by_type AS (
        SELECT customer_type, category, sum(buyers) AS buyers, sum(revenue) AS revenue
        FROM category_buyers GROUP BY ALL
    )
    SELECT s.customer_type, s.region, t.category, s.buyers AS segment_buyers,
           coalesce(c.buyers, 0) AS category_buyers,
           100 * coalesce(c.buyers, 0) / s.buyers AS penetration,
           100 * t.buyers / ty.buyers AS comparable_penetration,
           CAST(t.revenue / t.buyers AS DOUBLE) AS revenue_per_buyer,
           s.buyers >= $min_segment_buyers AND s.region <> '{NO_REGION}'
               AND coalesce(c.buyers, 0) / s.buyers < $whitespace_ratio * t.buyers / ty.buyers
               AS whitespace,
           CAST(greatest(t.buyers / ty.buyers - coalesce(c.buyers, 0) / s.buyers, 0) * s.buyers
                * t.revenue / t.buyers AS DOUBLE) AS gap_value,
           CAST($as_of AS TIMESTAMP) AS as_of
    FROM segments AS s
    JOIN by_type AS t USING (customer_type)
    JOIN types AS ty USING (customer_type)
    LEFT JOIN category_buyers AS c USING (customer_type, region, category)
    ORDER BY s.customer_type, s.region, t.category
"""

WHITESPACE = f"""
    SELECT 'whitespace' AS type, 'segment' AS target_kind,
           customer_type || ' / ' || region AS target, category, gap_value AS estimated_value,
           upper(customer_type[1]) || customer_type[2:] || ' customers in ' || region || ': '
               || round(penetration, 1) || '% buy ' || category || ' against '
               || round(comparable_penetration, 1) || '% of ' || customer_type
               || ' customers everywhere; '
               || CAST(round((comparable_penetration - penetration) / 100 * segment_buyers)
                       AS INTEGER)
               || ' more buyers at ' || {_money("revenue_per_buyer")} || ' a year each would bring '
               || {_money("gap_value")} AS reason
    FROM mining.penetration
    WHERE whitespace
"""

# Regions and their cities hold the same sales: each kind is a type of its own (regional_growth,
# city_growth), so a type's values add up.
GROWTH = f"""
    WITH quarters AS (
        SELECT kind, place,
               sum(net_amount) FILTER (
                   WHERE ordered_at >= CAST($as_of AS DATE) - INTERVAL 89 DAY) AS recent,
               sum(net_amount) FILTER (
                   WHERE ordered_at < CAST($as_of AS DATE) - INTERVAL 89 DAY
                     AND ordered_at >= CAST($as_of AS DATE) - INTERVAL 179 DAY) AS before
        FROM (
            SELECT l.*, p.kind, p.place
            FROM sales AS l
            LEFT JOIN core.stores AS st USING (store_id),
            LATERAL (SELECT unnest([
                struct_pack(kind := 'region', place := coalesce(st.region, l.customer_region)),
                struct_pack(kind := 'city', place := coalesce(st.city, l.customer_city))
            ]) AS p) AS u(p)
            WHERE l.ordered_at >= CAST($as_of AS DATE) - INTERVAL 179 DAY
        ) WHERE place IS NOT NULL
        GROUP BY ALL
    )
    SELECT CASE kind WHEN 'region' THEN 'regional_growth' ELSE 'city_growth' END, kind, place, NULL,
           CAST((recent - before) * 4 AS DOUBLE),
           'Revenue in ' || place || ' grew ' || round((recent / before - 1) * 100, 1)
               || '% (last 90 days ' || {_money("recent")} || ' against '
               || {_money("before")} || ' in the 90 before); a year at this pace adds '
               || {_money("(recent - before) * 4")}
    FROM quarters
    WHERE recent > before AND before > 0
    QUALIFY row_number() OVER (PARTITION BY kind ORDER BY (recent - before) DESC, place)
        <= $per_type
"""

WIN_BACK = f"""
    WITH fading AS (
        -- Only these customers' spending is summed.
        SELECT customer_key, p_alive, churn_risk, gap_ratio FROM analytics.scored_customers
        WHERE m_score = 5
          AND (p_alive < 0.5 OR (churn_risk IS NULL AND rule_churn_tier = 'high'))
    ), spend AS (
        SELECT customer_key, sum(net_amount) AS spent, count(DISTINCT order_id) AS orders,
               min(ordered_at) AS first_at, max(ordered_at) AS last_at
        FROM lines WHERE customer_key IN (SELECT customer_key FROM fading) GROUP BY 1
    )
    SELECT 'win_back', 'customer', s.customer_key, NULL,
           CAST(p.spent / greatest(date_diff('day', p.first_at, CAST($as_of AS DATE)) / 365.25, 1)
                AS DOUBLE),
           'Spent ' || {_money("p.spent")} || ' in ' || p.orders
               || CASE WHEN p.orders = 1 THEN ' order' ELSE ' orders' END || '; last purchase '
               || date_diff('day', p.last_at, CAST($as_of AS DATE)) || ' days ago; '
               -- Figures cut, not rounded, to what is shown: a P(alive) of 0.497 reads 0.49,
               -- below the 0.5 that selected it (0.29 x 100 is 28.999..., so the cut is of
               -- the product rounded to 9 places first).
               || CASE WHEN s.churn_risk IS NULL
                       THEN 'overdue by the rule (gap ratio '
                            || format('{{:.1f}}', floor(round(s.gap_ratio * 10, 9)) / 10) || ')'
                       ELSE 'P(alive) ' || format('{{:.2f}}', floor(round(s.p_alive * 100, 9)) / 100) END
    FROM fading AS s JOIN spend AS p USING (customer_key)
"""

CROSS_SELL = """
    WITH first AS (
        -- Each customer's best recommendation that a rule backs, of a product with a price.
        SELECT r.customer_key, min(r.rank) AS rank
        FROM mining.recommendations AS r JOIN core.products AS p USING (sku)
        WHERE r.rule_level IN ('product', 'category') GROUP BY 1
    )
    SELECT 'cross_sell', 'customer', r.customer_key, r.category,
           CAST(r.confidence * p.unit_price AS DOUBLE), r.reason
    FROM mining.recommendations AS r
    JOIN first USING (customer_key, rank)
    JOIN core.products AS p USING (sku)
"""

UPSELL = f"""
    WITH paid AS (
        SELECT * FROM lines WHERE category IS NOT NULL
    ), bought AS (
        -- Per customer and category: their units, mean price and first and last day.
        SELECT customer_key, category, sum(quantity) AS units,
               sum(unit_price * quantity) / sum(quantity) AS price,
               min(CAST(ordered_at AS DATE)) AS first_at, max(CAST(ordered_at AS DATE)) AS last_at
        FROM paid WHERE customer_key IS NOT NULL GROUP BY ALL
    ), prices AS (
        SELECT category, median(unit_price) AS median_price,
               quantile_cont(unit_price, 0.75) AS upper_price
        FROM paid GROUP BY 1
    ), best AS (
        -- Bought on two days or more (a first day before the last), below the median
        -- price. Only the top few can be kept, so only they get their days counted.
        SELECT b.*, p.upper_price,
               CAST((p.upper_price - b.price) * b.units
                    / greatest(date_diff('day', b.first_at, CAST($as_of AS DATE)) / 365.25, 1)
                    AS DOUBLE) AS value
        FROM bought AS b JOIN prices AS p USING (category)
        WHERE b.first_at < b.last_at AND b.price < p.median_price
        ORDER BY value DESC, customer_key, category LIMIT $per_type
    ), days AS (
        SELECT customer_key, category, count(DISTINCT CAST(ordered_at AS DATE)) AS days
        FROM paid WHERE (customer_key, category) IN (SELECT (customer_key, category) FROM best)
        GROUP BY ALL
    )
    SELECT 'upsell', 'customer', b.customer_key, b.category, b.value,
           'Buys ' || b.category || ' often (' || d.days || ' days, ' || b.units || ' units) at '
               || {_money("b.price")} || ' on average; the upper quarter of ' || b.category
               || ' sales is at ' || {_money("b.upper_price")} || ' or more'
    FROM best AS b JOIN days AS d USING (customer_key, category)
"""


def penetration(
    conn: duckdb.DuckDBPyConnection, as_of: date, settings: MiningSettings, table: str
) -> None:
    """Write `table`: the segment-by-category penetration matrix of the last 365 days up to the
    day, with each cell's comparable penetration (the customer type everywhere), whitespace
    flag and the value of closing the gap."""
    conn.execute(
        f"CREATE OR REPLACE TABLE {table} AS WITH {SALES} SELECT * FROM ({PENETRATION})",
        {
            "as_of": as_of,
            "whitespace_ratio": settings.whitespace_ratio,
            "min_segment_buyers": settings.min_segment_buyers,
        },
    )


def opportunities(
    conn: duckdb.DuckDBPyConnection, as_of: date, settings: MiningSettings, table: str
) -> None:
    """Write `table`: the top `opportunities_per_type` of each kind by estimated value, ranked
    within the kind. Needs analytics.scored_customers, mining.penetration and
    mining.recommendations of the day."""
    parameters = {
        "as_of": as_of,
        "whitespace_ratio": settings.whitespace_ratio,
        "min_segment_buyers": settings.min_segment_buyers,
    }
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE found_opportunities (type VARCHAR, target_kind VARCHAR, "
        "target VARCHAR, category VARCHAR, estimated_value DOUBLE, reason VARCHAR)"
    )
    # One kind at a time: each reads the sales on its own, so memory holds one kind's work,
    # and keeps only its top rows (the order of the ranking below), not every customer's.
    # GROWTH finds two types (regions, cities) in one read of the sales.
    for query, types in ((WHITESPACE, 1), (GROWTH, 2), (WIN_BACK, 1), (CROSS_SELL, 1), (UPSELL, 1)):
        used = {name: value for name, value in parameters.items() if f"${name}" in query}
        used["as_of"] = as_of  # the sales read up to the day
        if "$per_type" in query:
            used["per_type"] = settings.opportunities_per_type
        used["kept"] = types * settings.opportunities_per_type
        conn.execute(
            f"INSERT INTO found_opportunities WITH {SALES} "
            f"SELECT * FROM ({query}) AS found (type, target_kind, target, category, "
            "estimated_value, reason) WHERE estimated_value > 0 "
            "ORDER BY estimated_value DESC, target, category LIMIT $kept",
            used,
        )
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE {table} AS
        SELECT *,
               row_number() OVER (PARTITION BY type ORDER BY estimated_value DESC, target,
                                  category) AS rank,
               CAST($as_of AS TIMESTAMP) AS as_of
        FROM found_opportunities
        QUALIFY rank <= $per_type
        ORDER BY type, rank
        """,
        {"as_of": as_of, "per_type": settings.opportunities_per_type},
    )
    conn.execute("DROP TABLE found_opportunities")
