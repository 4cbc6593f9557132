"""The core model over the tiny landing zone: exclusions are applied in one place and counted,
keys survive a re-run and a new day, and every core check passes."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pandera.pandas as pa
import pytest
from pandera.typing import Series

from crm_pipeline.checked import contract_digest
from crm_pipeline.contracts import validate_query
from crm_pipeline.core.assets import TABLES, _contract_check, _keys_check
from crm_pipeline.core.classify import CoreRules
from crm_pipeline.core.model import build_customers, inquiries_as_of
from crm_pipeline.core.order_lines import build_order_lines
from crm_pipeline.core.quality import build_quality_report
from crm_pipeline.core.schemas import CORE_MODELS
from crm_pipeline.definitions import defs
from crm_pipeline.run import range_tags
from crm_pipeline.staging.build import ensure_tables
from crm_pipeline.staging.rules import SOURCES as STAGING_SOURCES
from crm_pipeline_tests.conftest import bind
from crm_pipeline_tests.landing_builder import DAY1, DAY2

ASSETS = list(defs.assets)


def _run(zone: Path, warehouse: Path, last: str, rules: CoreRules | None = None):
    result = dg.materialize(
        ASSETS,
        resources=bind(zone, warehouse, rules),
        tags=range_tags(DAY1, last),
        raise_on_error=False,
    )
    assert result.success
    return result


def _keys(warehouse: Path) -> dict[tuple[str, str], str]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        rows = conn.execute(
            "SELECT source, source_id, customer_key FROM core.customer_crosswalk"
        ).fetchall()
    return {(s, i): k for s, i, k in rows}


def _rows(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def everything_kept(tiny_zone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    warehouse = tmp_path_factory.mktemp("core") / "warehouse.duckdb"
    result = _run(tiny_zone, warehouse, DAY2, CoreRules(test_account_domains=[]))
    failed = [
        (e.asset_key.to_user_string(), e.check_name)
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    assert failed == []
    return warehouse


def test_one_customer_for_ann_across_account_card_receipts_and_survey(everything_kept) -> None:
    keys = _keys(everything_kept)
    ann = keys["online_accounts", "A1"]
    assert keys["loyalty_members", "C1"] == ann  # same phone, same name
    assert keys["store_purchases", "R1"] == ann  # her card
    assert keys["store_purchases", "R2"] == ann  # her phone, typed another way
    assert keys["feedback", "F1"] == ann  # her account id
    assert keys["feedback", "F2"] == keys["online_accounts", "A2"]  # Bo's email
    assert ann != keys["online_accounts", "A2"]


def test_orders_of_an_account_not_staged_or_in_another_currency_are_flagged(
    everything_kept: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(everything_kept, copy)
    with duckdb.connect(str(copy)) as conn:
        assert _flagged(conn) == []  # every tiny order's account is staged, in dollars
        conn.execute(
            "INSERT INTO staging.online_orders BY NAME "
            "SELECT * REPLACE ('O7' AS order_id, 'A9' AS account_id) "
            "FROM staging.online_orders WHERE order_id = 'O2'"
        )
        conn.execute(
            "INSERT INTO staging.online_orders BY NAME "
            "SELECT * REPLACE ('O8' AS order_id, 'EUR' AS currency) "
            "FROM staging.online_orders WHERE order_id = 'O2'"
        )
        build_quality_report(conn, list(STAGING_SOURCES))
        assert _flagged(conn) == [
            ("online_orders", date(2025, 1, 2), "other_currency", 1),
            ("online_orders", date(2025, 1, 2), "unknown_account", 1),
        ]


def test_a_line_given_free_adds_its_units_and_no_revenue_and_makes_no_order(
    everything_kept: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "warehouse.duckdb"
    shutil.copyfile(everything_kept, copy)
    loaded = datetime.now(UTC).replace(tzinfo=None)
    rules = CoreRules(test_account_domains=[])
    ann = _keys(everything_kept)["online_accounts", "A1"]
    with duckdb.connect(str(copy)) as conn:

        def ann_purchases() -> tuple:
            return conn.execute(
                "SELECT store_orders, first_purchase_at, last_purchase_at FROM core.customers "
                "WHERE customer_key = ?",
                [ann],
            ).fetchone()

        # Ann's receipts: R1 in the morning, R2 at noon, both of day 1.
        assert ann_purchases() == (2, datetime(2025, 1, 1, 9), datetime(2025, 1, 1, 12))
        # R2's one line given free instead (the POS prints it at 0.00), staged again.
        conn.execute(
            "UPDATE staging.store_purchases SET unit_price = 0, loaded_at = ? "
            "WHERE receipt_id = 'R2'",
            [loaded],
        )
        build_order_lines(conn, rules, loaded)
        assert conn.execute(
            "SELECT quantity, unit_price, gross_amount, net_amount FROM core.order_lines "
            "WHERE order_id = 'R2'"
        ).fetchall() == [(1, 0, 0, 0)]
        # A receipt of free lines is no purchase: one store receipt left, and her last
        # purchase is her online order of 10:00.
        build_customers(conn, rules)
        assert ann_purchases() == (1, datetime(2025, 1, 1, 9), datetime(2025, 1, 1, 10))
        outcome = validate_query(
            conn, "SELECT * FROM core.order_lines", [], CORE_MODELS["order_lines"]
        )
        assert outcome.passed and outcome.rows == len(
            conn.execute("SELECT * FROM core.order_lines").fetchall()
        )


def _flagged(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return conn.execute(
        "SELECT source, partition_date, rule, rows FROM core.quality_report "
        "WHERE stage = 'flagged' AND rule IN ('unknown_account', 'other_currency') ORDER BY ALL"
    ).fetchall()


def test_a_products_margin_rate_is_a_percentage(everything_kept) -> None:
    # The kettle lists at 10.0 and costs 6.0; the setup call 5.0 and 1.0.
    assert _rows(everything_kept, "SELECT sku, margin_rate FROM core.products ORDER BY 1") == [
        ("SKU1", 40.0),
        ("SKU2", 80.0),
    ]


def test_order_lines_are_unified_and_net(everything_kept) -> None:
    lines = _rows(
        everything_kept,
        "SELECT channel, order_id, line_no, quantity, net_amount FROM core.order_lines "
        "ORDER BY channel, order_id, line_no",
    )
    assert ("online", "O1", 1, 2, 20) in lines and ("online", "O2", 1, 1, 12.5) in lines
    assert ("store", "R1", 2, 2, 10) in lines
    # Ann's lines come first: the table is sorted by customer and time.
    first = _rows(everything_kept, "SELECT customer_key FROM core.order_lines LIMIT 1")[0][0]
    assert first == min(
        k for (k,) in _rows(everything_kept, "SELECT customer_key FROM core.customers")
    )


def test_order_lines_are_stored_in_customer_and_time_order_with_text_columns(
    everything_kept,
) -> None:
    # A scan of one table returns its rows in stored order: per-customer reads prune on it.
    stored = _rows(everything_kept, "SELECT customer_key, ordered_at FROM core.order_lines")
    assert len(stored) > 5 and len({key for key, _ in stored}) > 2  # so the order shows
    # By customer (customers' lines together, keys ascending, no key last), then by time.
    assert stored == sorted(stored, key=lambda line: (line[0] is None, line[0] or "", line[1]))
    # Ann's 9:00 receipt R1 before her 10:00 online order O1, though O1 sorts first by id.
    ann = _rows(
        everything_kept,
        "SELECT order_id FROM core.order_lines WHERE customer_key = "
        "(SELECT any_value(customer_key) FROM core.order_lines WHERE order_id = 'O1')",
    )
    assert [order for (order,) in ann].index("R1") < [order for (order,) in ann].index("O1")
    # The sort carries few-valued text as ENUMs; the table holds it as text.
    types = dict(
        _rows(
            everything_kept,
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = 'core' AND table_name = 'order_lines'",
        )
    )
    assert {types[c] for c in ("channel", "sku", "category", "source_file")} == {"VARCHAR"}
    assert not _rows(
        everything_kept,
        "SELECT * FROM duckdb_types() WHERE NOT internal AND type_name LIKE 'line_%'",
    )


def test_ids_a_real_column_or_a_spreadsheet_wrote_as_decimals_are_the_same_ids(
    tiny_zone: Path, tmp_path: Path, everything_kept: Path
) -> None:
    # The shop's items declaring order_id REAL (1.0 for the orders' 1) set every online line
    # aside; its orders declaring account_id REAL doubled every customer; a survey's account
    # id saved through a spreadsheet ('1.0') made a customer of its own.
    zone = tmp_path / "zone"
    shutil.copytree(tiny_zone, zone)
    with sqlite3.connect(zone / "online_shop.sqlite") as db:
        for table, real in (
            ("accounts", ""),
            ("orders", "account_id"),
            ("order_items", "order_id"),
        ):
            names = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
            ids = {"account_id", "order_id"} & set(names)
            declared = ", ".join(
                f"{n} {'REAL' if n == real else 'INTEGER' if n in ids else 'TEXT'}" for n in names
            )
            values = ", ".join(f"CAST(substr({n}, 2) AS INTEGER)" if n in ids else n for n in names)
            db.execute(f"CREATE TABLE numbered ({declared})")
            db.execute(f"INSERT INTO numbered SELECT {values} FROM {table} ORDER BY rowid")
            db.execute(f"DROP TABLE {table}")
            db.execute(f"ALTER TABLE numbered RENAME TO {table}")
    for survey, spelled in (
        (zone / "feedback" / DAY1 / "survey.csv", ",A1,"),
        (zone / "feedback" / DAY2 / "survey.csv", ",A2,"),
    ):
        text = survey.read_text(encoding="utf-8")
        assert spelled in text
        survey.write_text(text.replace(spelled, f",{spelled[2]}.0,"), encoding="utf-8")
    warehouse = tmp_path / "warehouse.duckdb"
    _run(zone, warehouse, DAY2, CoreRules(test_account_domains=[]))
    counts = """
        SELECT (SELECT count(*) FROM core.customers),
               (SELECT count(*) FROM core.order_lines WHERE channel = 'online'),
               (SELECT count(*) FROM core.feedback WHERE customer_key IS NOT NULL),
               (SELECT count(DISTINCT customer_key) FROM core.feedback)
    """
    assert _rows(warehouse, counts) == _rows(everything_kept, counts)
    assert (
        _rows(warehouse, "SELECT count(*) FROM core.order_lines WHERE channel = 'online'")[0][0] > 0
    )


def test_keys_survive_a_rerun_and_a_new_day(tiny_zone: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    rules = CoreRules(test_account_domains=[])
    _run(tiny_zone, warehouse, DAY1, rules)
    day_one = _keys(warehouse)
    _run(tiny_zone, warehouse, DAY2, rules)
    both_days = _keys(warehouse)
    assert {k: both_days[k] for k in day_one} == day_one
    assert len(both_days) > len(day_one)
    _run(tiny_zone, warehouse, DAY2, rules)
    assert _keys(warehouse) == both_days


def test_test_accounts_are_excluded_everywhere_and_counted(tiny_zone: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.rmtree(tmp_path / "unused", ignore_errors=True)
    _run(tiny_zone, warehouse, DAY2)  # default rules: example.com addresses are test accounts
    excluded = dict(
        _rows(warehouse, "SELECT entity, count(*) FROM core.excluded_rows GROUP BY ALL")
    )
    kept = _rows(warehouse, "SELECT DISTINCT order_id FROM core.order_lines ORDER BY 1")
    # Ann's and Bo's orders and Ann's receipts are left out; anonymous receipts stay.
    assert kept == [("R3",), ("R5",)]
    assert excluded == {"customers": 2, "order_lines": 6, "feedback": 2}
    assert _rows(warehouse, "SELECT count(*) FROM core.customers") == [(0,)]


def test_failed_key_and_contract_checks_name_the_rows_and_the_reason(
    everything_kept: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(everything_kept.read_bytes())
    with duckdb.connect(str(copy)) as conn:
        order_id, line_no = conn.execute(
            "SELECT order_id, line_no FROM core.order_lines ORDER BY ALL LIMIT 1"
        ).fetchall()[0]
        conn.execute(
            "INSERT INTO core.order_lines SELECT * FROM core.order_lines "
            "WHERE order_id = ? AND line_no = ?",
            [order_id, line_no],
        )
        conn.execute(
            "UPDATE core.order_lines SET sku = 'SKU404', quantity = -1 "
            "WHERE order_id = ? AND line_no = ?",
            [order_id, line_no],
        )
        # Another line sells a product the last products.csv gave at a negative price.
        conn.execute(
            "UPDATE core.order_lines SET sku = 'SKU405' WHERE (order_id, line_no) = "
            "(SELECT (order_id, line_no) FROM core.order_lines ORDER BY ALL DESC LIMIT 1)"
        )
        conn.execute(
            "INSERT INTO quarantine.staging_rejects VALUES ('products', NULL, "
            "'reference/products.csv', 9, 'negative_unit_price', 'unit_price -1 is negative', "
            """'{"sku": " sku405 ", "unit_price": "-1"}', now())"""
        )
        keys = _keys_check(conn, TABLES["order_lines"])
        contract = _contract_check(conn, "order_lines")
    assert not keys.passed and not contract.passed
    assert f"order_id={order_id}, line_no={line_no} (2 rows)" in keys.description
    assert f"order_id={order_id}, line_no={line_no}, sku=SKU404" in keys.description
    assert "have a sku not in core.products" in keys.description
    # Why, and what to do: each product set aside from the reference file, or not in it.
    assert keys.description.endswith(
        "(core.products is built from reference/products.csv: SKU405 set aside in "
        "quarantine.staging_rejects (negative_unit_price); SKU404 not in the file). "
        "Deliver products.csv again with these sku values, correct, then re-materialize "
        "raw.products, staging.products, core.products and what follows"
    )
    # A line of the file raw could not read might have held it: said as a possibility.
    with duckdb.connect(str(copy)) as conn:
        conn.execute(
            "INSERT INTO quarantine.raw_rejects (source, source_file, source_line, reason, "
            "detail, raw_text, loaded_at) VALUES ('products', 'reference/products.csv', 7, "
            "'malformed_line', 'a quote left open', 'SKU404,\"Lamp', now())"
        )
        keys = _keys_check(conn, TABLES["order_lines"])
    assert (
        "SKU404 not staged (not in the file, or on one of its 1 line(s) set aside in "
        "quarantine.raw_rejects)" in keys.description
    )
    assert "SKU404" in keys.metadata["failing_rows"].value
    assert f"order_id={order_id}, line_no={line_no}: column quantity" in contract.description
    assert order_id in contract.metadata["failing_rows"].value


def _staged_warehouse() -> duckdb.DuckDBPyConnection:
    """An empty warehouse with every staging table, the crosswalk and the order lines."""
    conn = duckdb.connect()
    for source in STAGING_SOURCES.values():
        ensure_tables(conn, source)
    conn.execute("CREATE SCHEMA core")
    conn.execute(
        "CREATE TABLE core.customer_crosswalk (source VARCHAR, source_id VARCHAR, "
        "customer_key VARCHAR, match_rule VARCHAR, confidence DOUBLE, seen_at TIMESTAMP, "
        "key_since TIMESTAMP)"
    )
    conn.execute(
        "CREATE TABLE core.order_lines (customer_key VARCHAR, ordered_at TIMESTAMP, "
        "channel VARCHAR, order_id VARCHAR, store_id VARCHAR, order_status VARCHAR, "
        "unit_price DECIMAL(12, 2) DEFAULT 1)"
    )
    return conn


def test_golden_record_ties_go_to_the_greatest_value_whatever_the_row_order() -> None:
    conn = _staged_warehouse()
    opened = "2025-03-01 10:00:00"
    # Two accounts of one customer opened at the same instant; C2 has no address.
    accounts = [
        ("A1", "Anna Berg", "Main St 2", "Berlin", "C1"),
        ("A2", "Anna Bergström", "Main St 1", "Hamburg", "C1"),
        ("A3", "Ben Ode", None, None, "C2"),
    ]
    for line, (account, name, address, city, key) in enumerate(accounts):
        conn.execute(
            "INSERT INTO staging.online_accounts (account_id, full_name, address, city, "
            "created_at, source_file, source_line, loaded_at) VALUES (?, ?, ?, ?, ?, 'a', ?, ?)",
            [account, name, address, city, opened, line, opened],
        )
        conn.execute(
            "INSERT INTO core.customer_crosswalk VALUES ('online_accounts', ?, ?, 'account_id', "
            "1, ?, ?)",
            [account, key, opened, opened],
        )
    for store, city in (("S2", "Munich"), ("S1", "Cologne")):
        conn.execute(
            "INSERT INTO staging.stores (store_id, city, region, source_file, source_line, "
            "loaded_at) VALUES (?, ?, 'south', 's', 1, ?)",
            [store, city, opened],
        )
    # C2 bought in two stores at the same instant.
    for store in ("S2", "S1"):
        conn.execute(
            "INSERT INTO core.order_lines (customer_key, ordered_at, channel, order_id, "
            "store_id, order_status) VALUES ('C2', ?, 'store', ?, ?, 'completed')",
            [opened, f"R-{store}", store],
        )
    build_customers(conn, CoreRules(test_account_domains=[], staff_email_domains=[]))
    rows = conn.execute(
        "SELECT customer_key, full_name, address, city FROM core.customers ORDER BY 1"
    ).fetchall()
    assert rows == [
        ("C1", "Anna Bergström", "Main St 2", "Berlin"),
        ("C2", "Ben Ode", None, "Munich"),
    ]


def test_a_contracts_digest_changes_with_any_rule_of_a_column() -> None:
    def model(low: int, nullable: bool) -> type[pa.DataFrameModel]:
        class Lines(pa.DataFrameModel):
            quantity: Series[int] = pa.Field(ge=low, nullable=nullable)

        return Lines

    assert contract_digest(model(1, False)) == contract_digest(model(1, False))
    assert contract_digest(model(1, False)) != contract_digest(model(0, False))
    assert contract_digest(model(1, False)) != contract_digest(model(1, True))


def test_inquiries_as_of_a_day_know_no_response_or_closing_after_it() -> None:
    conn = duckdb.connect()
    conn.execute(
        """
        CREATE SCHEMA core;
        CREATE TABLE core.inquiries AS
        SELECT * FROM (VALUES
            ('I1', TIMESTAMP '2025-06-30 09:00', TIMESTAMP '2025-06-30 10:00',
             TIMESTAMP '2025-06-30 21:00', 1.0, 12.0),
            ('I2', TIMESTAMP '2025-06-30 18:00', TIMESTAMP '2025-06-30 23:00',
             TIMESTAMP '2025-07-03 18:00', 5.0, 72.0),
            ('I3', TIMESTAMP '2025-06-30 22:00', TIMESTAMP '2025-07-01 08:00',
             NULL, 10.0, NULL),
            ('I4', TIMESTAMP '2025-07-01 08:00', NULL, NULL, NULL, NULL)
        ) AS t(inquiry_id, opened_at, first_response_at, closed_at, first_response_hours,
               resolution_hours)
        """
    )
    known = conn.execute(
        f"SELECT inquiry_id, first_response_hours, resolution_hours, closed_at IS NULL "
        f"FROM ({inquiries_as_of('$day')}) ORDER BY 1",
        {"day": "2025-06-30"},
    ).fetchall()
    # I2 was answered that day but closed later; I3 answered the next morning; I4 opened then.
    assert known == [("I1", 1.0, 12.0, False), ("I2", 5.0, None, True), ("I3", None, None, True)]
