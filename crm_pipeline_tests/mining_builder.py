"""A hand-made core.order_lines for the mining tests: baskets of given items on given days."""

from __future__ import annotations

from datetime import datetime

import duckdb

ORDER_LINES = """
CREATE SCHEMA IF NOT EXISTS core;
CREATE OR REPLACE TABLE core.order_lines (
    customer_key VARCHAR, ordered_at TIMESTAMP, channel VARCHAR, order_id VARCHAR,
    line_no BIGINT, store_id VARCHAR, order_status VARCHAR, sku VARCHAR, category VARCHAR,
    quantity INTEGER, unit_price DECIMAL(12, 2), net_amount DECIMAL(14, 2),
    margin DECIMAL(14, 2)
);
CREATE OR REPLACE TABLE core.products (
    sku VARCHAR, name VARCHAR, category VARCHAR, unit_price DECIMAL(12, 2)
);
"""


def key(name: str) -> str:
    """A customer key in the contract's form ('C' + 16 hex digits) for a short readable name:
    its bytes in hex, so key("N0") = 'C0000000000004E30'."""
    return "C" + name.encode().hex().upper().rjust(16, "0")


def order_lines(
    conn: duckdb.DuckDBPyConnection,
    baskets: list[tuple[str, str, list[str]]],
    category: dict[str, str] | None = None,
    price: float = 10.0,
) -> None:
    """baskets: (customer_key, day 'YYYY-MM-DD', skus); each basket one online order. A sku's
    category is `category[sku]`, else its first letter."""
    conn.execute(ORDER_LINES)
    rows = []
    for number, (customer, day, skus) in enumerate(baskets):
        for line, sku in enumerate(skus, start=1):
            rows.append(
                (
                    customer,
                    datetime.fromisoformat(day).replace(hour=12),
                    "online",
                    f"O{number}",
                    line,
                    None,
                    "delivered",
                    sku,
                    (category or {}).get(sku, sku[0]),
                    1,
                    price,
                    price,
                    price / 4,
                )
            )
    conn.executemany(
        "INSERT INTO core.order_lines VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
    )
    conn.execute(
        "INSERT INTO core.products SELECT sku, upper(sku), any_value(category), any_value(unit_price) "
        "FROM core.order_lines GROUP BY sku"
    )
