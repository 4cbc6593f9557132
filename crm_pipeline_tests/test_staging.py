"""Staging rules on hand-made raw rows: each defect class lands where its rule says, and every
raw row is conserved (staged, quarantined or merged), checked and failing when one is lost."""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from crm_pipeline import landing
from crm_pipeline.failures import ActionableError
from crm_pipeline.raw.tables import ensure_raw_tables
from crm_pipeline.resources import WarehouseResource
from crm_pipeline.staging.build import clear, ensure_tables, stage
from crm_pipeline.staging.checks import conserved_result, contract_result
from crm_pipeline.staging.rules import SOURCES, TIME_FORMATS
from crm_pipeline.staging.schemas import EMAIL, WHITESPACE

LOADED = datetime(2025, 3, 1, 6, 0)
DAY = "2025-03-01"
PRODUCTS = [
    ["SKU1", "Lamp", "Home", "Lighting", "physical", "20.00", "12.50"],
    ["SKU2", "Setup", "Services", "Install", "service", "0", "0"],
]
STORES = [["S1", "Berlin", "Europe"]]
# receipt, store, time, card, phone, sku, qty, price, payment
RECEIPTS = [
    ["R1", "S1", "2025-03-01 10:00:00", "lc1", "", "SKU1", "2", "20.00", "Card"],
    ["R1", "S1", "2025-03-01 10:00:00", "lc1", "", "SKU1", "2", "20.00", "Card"],  # repeated
    ["R2", "S1", "2025-03-01 11:00:00", "", "030 1234567", "SKU1", "1", "-20.00", "cash"],
    ["R3", "S1", "2029-03-01 11:00:00", "", "", "SKU1", "1", "20.00", "cash"],  # future
    ["R4", "S1", "2025-03-01 12:00:00", "", "", "SKU9", "1", "20.00", "cash"],  # unknown sku
    ["", "S1", "2025-03-01 12:00:00", "", "", "SKU1", "1", "20.00", "cash"],  # no receipt id
    ["R5", "S1", "yesterday", "", "", "SKU1", "1", "20.00", "cash"],  # not a timestamp
    ["R6", "S9", "2025-03-01 13:00:00", "", "", "SKU1", "1", "20.00", "cash"],  # unknown store
    ["R7", "S1", "2025-03-01 14:00:00", "", "+49 30 1234567", "SKU1", "3", "20.00", "card"],
]


def _insert(
    conn,
    table: str,
    columns: tuple[str, ...],
    rows: list[list[str]],
    day: str | None,
    file: str | None = None,
):
    ensure_raw_tables(conn, table, columns)
    for line, row in enumerate(rows, start=2):
        values = [v if v != "" else None for v in row]
        conn.execute(
            f"INSERT INTO raw.{table} VALUES ({', '.join('?' * len(values))}, NULL, ?, ?, 1, ?, ?)",
            [*values, file or f"{table}.csv", line, day, LOADED],
        )


def _stage(conn, name: str, columns: tuple[str, ...], days: list[str] | None) -> None:
    ensure_tables(conn, SOURCES[name])
    stage(conn, SOURCES[name], columns, days, LOADED)


@pytest.fixture()
def staged(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    _insert(conn, "products", landing.PRODUCTS.columns, PRODUCTS, None)
    _insert(conn, "stores", landing.STORES.columns, STORES, None)
    _insert(conn, "store_purchases", landing.STORE_PURCHASES.columns, RECEIPTS, DAY)
    _stage(conn, "products", landing.PRODUCTS.columns, None)
    _stage(conn, "stores", landing.STORES.columns, None)
    _stage(conn, "store_purchases", landing.STORE_PURCHASES.columns, [DAY])
    yield conn
    conn.close()


def _rules(conn, source: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT record, rule, reason FROM quarantine.staging_rejects WHERE source = ?", [source]
    ).fetchall()
    return {
        (json.loads(r)["receipt_id"] if source == "store_purchases" else json.loads(r)["sku"])
        or "": (rule, reason)
        for r, rule, reason in rows
    }


def test_each_defect_class_goes_to_quarantine_under_its_rule(staged) -> None:
    rules = _rules(staged, "store_purchases")
    assert rules["R2"] == ("negative_unit_price", "unit_price -20.00 is negative")
    assert rules["R3"][0] == "future_timestamp" and "after its delivery" in rules["R3"][1]
    assert rules["R4"] == ("unknown_sku", "sku SKU9 is not in staging.products")
    assert rules[""] == ("missing_required", "receipt_id is missing")
    assert rules["R5"] == (
        "invalid_value",
        f'purchased_at "yesterday" is not a valid timestamp ({TIME_FORMATS})',
    )
    assert rules["R6"] == ("unknown_store", "store_id S9 is not in staging.stores")
    assert rules.keys() == {"R2", "R3", "R4", "", "R5", "R6"}


def _receipts_staged(
    tmp_path: Path, receipts: list[list[str]], products: list[list[str]] = PRODUCTS
) -> duckdb.DuckDBPyConnection:
    """A warehouse with these products, the stores and these receipts of DAY, all staged."""
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    _insert(conn, "products", landing.PRODUCTS.columns, products, None)
    _insert(conn, "stores", landing.STORES.columns, STORES, None)
    _insert(conn, "store_purchases", landing.STORE_PURCHASES.columns, receipts, DAY)
    _stage(conn, "products", landing.PRODUCTS.columns, None)
    _stage(conn, "stores", landing.STORES.columns, None)
    _stage(conn, "store_purchases", landing.STORE_PURCHASES.columns, [DAY])
    return conn


def test_a_line_priced_0_a_free_gift_is_staged(tmp_path: Path) -> None:
    gift = ["G1", "S1", "2025-03-01 15:00:00", "lc1", "", "SKU1", "1", "0.00", "card"]
    conn = _receipts_staged(tmp_path, [RECEIPTS[0], gift])
    assert conn.execute(
        "SELECT receipt_id, unit_price FROM staging.store_purchases ORDER BY 1"
    ).fetchall() == [("G1", 0), ("R1", 20)]
    assert conn.execute("SELECT count(*) FROM quarantine.staging_rejects").fetchall() == [(0,)]


def test_a_price_with_a_decimal_comma_is_set_aside_saying_how_to_write_it(tmp_path: Path) -> None:
    comma = ["R8", "S1", "2025-03-01 15:00:00", "", "", "SKU1", "1", "12,50", "cash"]
    conn = _receipts_staged(tmp_path, [comma])
    assert _rules(conn, "store_purchases") == {
        "R8": (
            "invalid_value",
            (
                'unit_price "12,50" is not a valid decimal(12,2) (a point before the decimals: '
                "12.50, not 12,50)"
            ),
        )
    }


def test_a_return_line_is_set_aside_for_its_quantity_alone(tmp_path: Path) -> None:
    # Its negative line price also read as a discount greater than the price.
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    _insert(conn, "products", landing.PRODUCTS.columns, PRODUCTS, None)
    _stage(conn, "products", landing.PRODUCTS.columns, None)
    returned = ["O1", "1", "SKU1", "-1", "13.50", "0"]
    _insert(conn, "online_order_items", landing.ORDER_ITEMS.columns, [returned], DAY)
    _stage(conn, "online_order_items", landing.ORDER_ITEMS.columns, [DAY])
    assert conn.execute(
        "SELECT rule, reason FROM quarantine.staging_rejects WHERE source = 'online_order_items'"
    ).fetchall() == [("non_positive_quantity", "quantity -1 is not positive")]


def test_sales_of_a_product_whose_row_was_set_aside_say_why_it_was(tmp_path: Path) -> None:
    # The sales said only "sku SKU3 is not in staging.products", though products.csv had it.
    comma = ["SKU3", "Shade", "Home", "Lighting", "physical", "13,50", "7.00"]
    sale = ["R9", "S1", "2025-03-01 15:00:00", "", "", "SKU3", "1", "13.50", "cash"]
    conn = _receipts_staged(tmp_path, [RECEIPTS[0], sale], [*PRODUCTS, comma])
    result = conserved_result(conn, "store_purchases", [DAY])
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert (
        "1 row(s) quarantined for a product or store that the reference delivery holds but "
        'staging set aside (products SKU3: unit_price "13,50" is not a valid decimal(12,2)'
    ) in result.description


def test_an_inquiry_about_a_product_the_catalogue_lacks_is_kept_without_it(
    tmp_path: Path,
) -> None:
    # It was set aside whole: a customer's complaint lost for a product code.
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    _insert(conn, "products", landing.PRODUCTS.columns, PRODUCTS, None)
    _stage(conn, "products", landing.PRODUCTS.columns, None)
    inquiry = dict.fromkeys(landing.INQUIRIES.columns, "")
    asked = [
        inquiry
        | {"inquiry_id": i, "opened_at": "2025-03-01 09:00:00", "topic": "complaint"}
        | {"sku": sku}
        for i, sku in (("Q1", "SKU1"), ("Q2", "SKU404"))
    ]
    rows = [[row[c] for c in landing.INQUIRIES.columns] for row in asked]
    _insert(conn, "inquiries", landing.INQUIRIES.columns, rows, DAY)
    _stage(conn, "inquiries", landing.INQUIRIES.columns, [DAY])
    assert conn.execute(
        "SELECT inquiry_id, topic, sku FROM staging.inquiries ORDER BY 1"
    ).fetchall() == [("Q1", "complaint", "SKU1"), ("Q2", "complaint", None)]
    assert conn.execute(
        "SELECT column_name, rows FROM quarantine.nulled_values WHERE source = 'inquiries'"
    ).fetchall() == [("sku", 1)]


def test_a_repeated_line_is_kept_once_and_recorded_as_merged(staged) -> None:
    kept = staged.execute(
        "SELECT receipt_id, source_line, quantity FROM staging.store_purchases ORDER BY 1"
    ).fetchall()
    assert kept == [("R1", 3, 2), ("R7", 10, 3)]
    merged = staged.execute(
        "SELECT source_line, kept_source_line, rule FROM quarantine.merged_duplicates"
    ).fetchall()
    assert merged == [(2, 3, "exact_duplicate")]


def test_values_are_typed_and_normalised(staged) -> None:
    row = staged.execute(
        "SELECT loyalty_card, phone, payment_method, unit_price, purchased_at "
        "FROM staging.store_purchases WHERE receipt_id = 'R7'"
    ).fetchone()
    assert row[1:] == ("+49301234567", "card", 20, datetime(2025, 3, 1, 14))
    assert staged.execute(
        "SELECT loyalty_card FROM staging.store_purchases WHERE receipt_id = 'R1'"
    ).fetchone() == ("LC1",)


def test_a_product_listed_at_zero_a_free_service_is_kept(staged) -> None:
    assert _rules(staged, "products") == {}
    assert staged.execute(
        "SELECT unit_price FROM staging.products WHERE sku = 'SKU2'"
    ).fetchone() == (0,)
    assert contract_result(staged, SOURCES["products"], None).passed


def test_conservation_holds_and_warns_with_the_counts(staged) -> None:
    result = conserved_result(staged, "store_purchases", [DAY])
    assert result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["raw_rows"].value == 9
    assert result.metadata["staged_rows"].value == 2
    assert result.metadata["quarantined_rows"].value == 6
    assert result.metadata["merged_rows"].value == 1
    assert contract_result(staged, SOURCES["store_purchases"], [DAY]).passed


def test_conservation_fails_when_a_row_is_lost(staged) -> None:
    staged.execute("DELETE FROM staging.store_purchases WHERE receipt_id = 'R7'")
    result = conserved_result(staged, "store_purchases", [DAY])
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert "2025-03-01: raw 9, staged 1, quarantined 6, merged 1 (+1)" in result.description
    # The lost row is named by where it came from, so an operator can find it.
    lost = "store_purchases.csv line 10: in raw, not staged, quarantined or merged"
    assert lost in result.description
    assert "store_purchases.csv" in result.metadata["failing_rows"].value


def test_contract_check_names_a_failing_row_by_key_and_a_repeated_key(staged) -> None:
    staged.execute("UPDATE staging.store_purchases SET quantity = -3 WHERE receipt_id = 'R7'")
    staged.execute(
        "INSERT INTO staging.store_purchases SELECT * REPLACE ('2025-03-02' AS partition_date) "
        "FROM staging.store_purchases WHERE receipt_id = 'R1'"
    )
    result = contract_result(staged, SOURCES["store_purchases"], None)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert (
        "receipt_id=R7, sku=SKU1, source_file=store_purchases.csv, source_line=10: "
        "column quantity failed greater_than(0) with '-3'"
    ) in result.description
    assert "receipt_id=R1, sku=SKU1 (2 rows on 2025-03-01, 2025-03-02)" in result.description
    assert "R7" in result.metadata["failing_rows"].value
    assert "R1" in result.metadata["repeated_keys"].value


def test_restaging_a_day_replaces_it(staged) -> None:
    clear(staged, SOURCES["store_purchases"], [DAY])
    _stage(staged, "store_purchases", landing.STORE_PURCHASES.columns, [DAY])
    assert conserved_result(staged, "store_purchases", [DAY]).metadata["raw_rows"].value == 9
    assert staged.execute("SELECT count(*) FROM staging.store_purchases").fetchone() == (2,)
    assert staged.execute(
        "SELECT count(*) FROM quarantine.staging_rejects WHERE source = 'store_purchases'"
    ).fetchone() == (6,)


def _one_source(tmp_path: Path, name: str, columns: tuple[str, ...], rows, day=None):
    conn = duckdb.connect(str(tmp_path / f"{name}.duckdb"))
    _insert(conn, name, columns, rows, day)
    _stage(conn, name, columns, [day] if day else None)
    return conn


def test_accounts_are_normalised_and_a_bad_attribute_or_an_impossible_age_is_nulled(
    tmp_path: Path,
) -> None:
    base = [
        "a1",
        "Anna.Berg+shop@Gmail.com",
        "(415) 555-0100",
        "BERG, ANNA",
        "F",
        "1990-02-03",
        "  12  Main St ",
        "Boston",
        "Individual",
        "",
        "",
        "2024-01-01 10:00:00",
    ]
    old = [
        "a2",
        "bob@@x.com",
        "555",
        "Bob Ray",
        "m",
        "1850-01-01",
        "",
        "",
        "",
        "",
        "",
        "2024-01-01",
    ]
    no_type = ["a3", "", "", "Cy Dee", "", "", "", "", "", "", "52000", "2024-02-01"]
    bad_contact = [
        "a4",
        "dee@@x.com",
        "555",
        "Dee Fox",
        "x",
        "",
        "",
        "",
        "robot",
        "",
        "",
        "2024-03-01",
    ]
    # A birth date that is no day and an income in a continental notation: the account stays.
    bad_birth = [
        "a5",
        "",
        "",
        "Eve Ng",
        "",
        "1990-02-30",
        "",
        "",
        "",
        "",
        "45.000,00",
        "2024-04-01",
    ]
    conn = _one_source(
        tmp_path,
        "online_accounts",
        landing.ACCOUNTS.columns,
        [base, old, no_type, bad_contact, bad_birth],
    )
    # Invalid optional values are kept as NULL and counted per column.
    assert dict(
        conn.execute("SELECT column_name, rows FROM quarantine.nulled_values").fetchall()
    ) == {"email": 2, "phone": 2, "gender": 1, "customer_type": 1, "birth_date": 2, "income": 1}
    assert conn.execute(
        "SELECT full_name, birth_date, income FROM staging.online_accounts WHERE account_id = 'A5'"
    ).fetchone() == ("Eve Ng", None, None)
    row = conn.execute(
        "SELECT account_id, email, phone, full_name, name_key, gender, birth_date, address, "
        "customer_type FROM staging.online_accounts WHERE account_id = 'A1'"
    ).fetchone()
    assert row == (
        "A1",
        "annaberg@gmail.com",
        "+14155550100",
        "Anna Berg",
        "anna berg",
        "f",
        datetime(1990, 2, 3).date(),
        "12 Main St",
        "individual",
    )
    # A birth date giving an age of 174 (a placeholder): the account stays, the date is NULL.
    assert conn.execute(
        "SELECT full_name, birth_date FROM staging.online_accounts WHERE account_id = 'A2'"
    ).fetchone() == ("Bob Ray", None)
    assert conn.execute("SELECT count(*) FROM quarantine.staging_rejects").fetchone() == (0,)
    # Missing optional values stay NULL (customer_type defaults to individual only in core).
    assert conn.execute(
        "SELECT email, customer_type, income FROM staging.online_accounts WHERE account_id = 'A3'"
    ).fetchone() == (None, None, 52000)


def _count_rule(conn, source: str, rule: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM quarantine.staging_rejects WHERE source = ? AND rule = ?",
        [source, rule],
    ).fetchone()[0]


def test_ratings_off_their_scale_and_bad_dates_are_quarantined(tmp_path: Path) -> None:
    needs = ["4", "5"] * 5
    good = ["r1", "2025-03-01 09:00:00", "A1", "", "", "5", "10", *needs, "fine"]
    off = ["r2", "2025-03-01 09:00:00", "A1", "", "", "6", "10", *needs, ""]
    nps_off = ["r3", "2025-03-01 09:00:00", "", "x@y.de", "", "3", "11", *needs, ""]
    undated = ["r4", "", "", "", "", "3", "5", *needs, ""]
    bad_date = ["r5", "2025-02-30 10:00:00", "", "", "", "3", "5", *needs, ""]
    conn = _one_source(
        tmp_path, "feedback", landing.FEEDBACK.columns, [good, off, nps_off, undated, bad_date], DAY
    )
    rules = dict(
        conn.execute(
            "SELECT json_extract_string(record, '$.response_id'), rule "
            "FROM quarantine.staging_rejects"
        ).fetchall()
    )
    assert rules == {
        "r2": "rating_off_scale",
        "r3": "rating_off_scale",
        "r4": "missing_required",
        "r5": "invalid_value",
    }
    assert conn.execute("SELECT response_id, nps FROM staging.feedback").fetchall() == [("R1", 10)]


def test_times_with_an_offset_or_am_pm_are_read_and_a_guess_is_refused(tmp_path: Path) -> None:
    needs = ["4", "5"] * 5
    times = {
        "r1": "2025-03-01T09:00:00Z",  # UTC: 10:00 in Berlin
        "r2": "2025-03-01 09:00:00+05:30",
        "r3": "2025-03-01 05:35 PM",
        "r4": "3/1/25 09:00",  # March or January? refused
        "r5": "2025-03-01 09:00:00",  # the business's own wall time
        "r6": "2025/03/01 09:00",
        "r7": "2025-03-01 9:00:00 pm",
        "r8": "2025-03-01T23:30:00Z",  # 00:30 the next day in Berlin: not after its delivery
        "r9": "2025-03-01 9:05",
        "r10": "2025-03-01 10:00 +0200",
        "r11": "2025/03/01 1:00 PM",
        "r12": "2025-03-02 00:30:00",  # Berlin's own time, the next day: after its delivery
    }
    rows = [[r, t, "A1", "", "", "5", "10", *needs, ""] for r, t in times.items()]
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    conn.execute("SET TimeZone = 'Europe/Berlin'")  # as the warehouse's time_zone sets it
    _insert(conn, "feedback", landing.FEEDBACK.columns, rows, DAY)
    _stage(conn, "feedback", landing.FEEDBACK.columns, [DAY])
    staged = dict(conn.execute("SELECT response_id, submitted_at FROM staging.feedback").fetchall())
    assert staged == {
        "R1": datetime(2025, 3, 1, 10, 0),
        "R2": datetime(2025, 3, 1, 4, 30),
        "R3": datetime(2025, 3, 1, 17, 35),
        "R5": datetime(2025, 3, 1, 9, 0),
        "R6": datetime(2025, 3, 1, 9, 0),
        "R7": datetime(2025, 3, 1, 21, 0),
        "R8": datetime(2025, 3, 2, 0, 30),
        "R9": datetime(2025, 3, 1, 9, 5),
        "R10": datetime(2025, 3, 1, 9, 0),
        "R11": datetime(2025, 3, 1, 13, 0),
    }
    (_, future), (_, guess) = conn.execute(  # r12, then r4
        "SELECT json_extract_string(record, '$.response_id'), rule || ': ' || reason "
        "FROM quarantine.staging_rejects WHERE source = 'feedback' ORDER BY 1"
    ).fetchall()
    assert guess.startswith(
        'invalid_value: submitted_at "3/1/25 09:00" is not a valid timestamp (YYYY-MM-DD'
    )
    assert future == "future_timestamp: submitted_at 2025-03-02 00:30:00 is after its delivery"


def test_a_line_of_a_billion_or_more_is_quarantined_before_it_overflows_an_order(staged) -> None:
    why = "is a billion or more: a quantity or price typed wrong?"
    later = "2025-03-02"
    barcode = ["R8", "S1", "2025-03-02 15:00:00", "", "", "SKU1", "400638133", "2499.99", "card"]
    _insert(staged, "store_purchases", landing.STORE_PURCHASES.columns, [barcode], later)
    _stage(staged, "store_purchases", landing.STORE_PURCHASES.columns, [later])
    assert staged.execute(
        "SELECT rule, reason FROM quarantine.staging_rejects WHERE partition_date = ?", [later]
    ).fetchall() == [("implausible_amount", f"quantity 400638133 x unit_price 2499.99 {why}")]


def test_a_snapshot_row_made_before_the_load_on_the_business_clock_is_not_in_the_future(
    tmp_path: Path,
) -> None:
    # Loaded at 06:00 UTC, 07:00 in Berlin: an account opened at 06:30 Berlin time was there.
    conn = duckdb.connect(str(tmp_path / "accounts.duckdb"))
    conn.execute("SET TimeZone = 'Europe/Berlin'")
    columns = landing.ACCOUNTS.columns
    row = dict.fromkeys(columns, "")
    opened = {**row, "account_id": "A1", "created_at": "2025-03-01 06:30:00"}
    later = {**row, "account_id": "A2", "created_at": "2025-03-01 07:30:00"}
    _insert(conn, "online_accounts", columns, [list(opened.values()), list(later.values())], None)
    _stage(conn, "online_accounts", columns, None)
    assert conn.execute("SELECT account_id FROM staging.online_accounts").fetchall() == [("A1",)]
    assert _count_rule(conn, "online_accounts", "future_timestamp") == 1


def test_a_time_zone_that_does_not_exist_is_named(tmp_path: Path) -> None:
    warehouse = WarehouseResource(path=str(tmp_path / "w.duckdb"), time_zone="Europe/Atlantis")
    refused = pytest.raises(ActionableError, match="CRM_TIME_ZONE 'Europe/Atlantis' is not a time")
    with refused, warehouse.connect():
        pass


def test_order_lines_rules_and_a_changed_redelivery_supersedes(tmp_path: Path) -> None:
    rows = [
        ["o1", "1", "SKU1", "1", "20.00", ""],  # no discount given: 0
        ["o1", "2", "SKU1", "0", "20.00", "0"],  # zero quantity
        ["o1", "3", "SKU1", "1", "20.00", "-1"],  # negative discount
        ["o2", "1", "SKU1", "1", "20.00", "0"],
        ["o2", "1", "SKU1", "2", "20.00", "0"],  # the same line again, changed: the later wins
        ["o3", "1", "SKU1", "2.6", "20.00", "0"],  # a fraction of a unit
        ["o3", "2", "SKU1", "1", "20.00", "abc"],  # a discount that is no number
        ["o3", "3", "SKU1", "1", "20.005", "0"],  # a price finer than cents
        # Numbers DuckDB's cast would read, in notations no export means as these numbers.
        ["o4", "1", "SKU1", "1e3", "20.00", "0"],
        ["o4", "2", "SKU1", "1_000", "20.00", "0"],
        ["o4", "3", "SKU1", "0x10", "20.00", "0"],
        ["o4", "4", "SKU1", "1", "2E1", "0"],
        ["o5", "1", "SKU1", "+3", ".50", "0."],  # plain, if unusual: staged
        ["o5", "2", "SKU1", "2\t", "10.00", "0"],  # a tab the export left: staged
    ]
    conn = duckdb.connect(str(tmp_path / "items.duckdb"))
    _insert(conn, "products", landing.PRODUCTS.columns, PRODUCTS, None)
    _stage(conn, "products", landing.PRODUCTS.columns, None)
    _insert(conn, "online_order_items", landing.ORDER_ITEMS.columns, rows, DAY)
    _stage(conn, "online_order_items", landing.ORDER_ITEMS.columns, [DAY])
    assert conn.execute(
        "SELECT order_id, line_no, quantity, discount, source_line FROM staging.online_order_items "
        "ORDER BY 1, 2"
    ).fetchall() == [
        ("O1", 1, 1, 0, 2),
        ("O2", 1, 2, 0, 6),
        ("O5", 1, 3, 0, 14),
        ("O5", 2, 2, 0, 15),
    ]
    assert _count_rule(conn, "online_order_items", "non_positive_quantity") == 1
    assert _count_rule(conn, "online_order_items", "negative_discount") == 1
    assert _count_rule(conn, "online_order_items", "invalid_value") == 7
    assert conn.execute(
        "SELECT source_line, kept_source_line, rule FROM quarantine.merged_duplicates"
    ).fetchall() == [(5, 6, "superseded")]
    conserved = conserved_result(conn, "online_order_items", [DAY])
    assert conserved.metadata["merged_rows"].value == 1
    assert conserved.metadata["merged_superseded"].value == 1
    assert (
        "of the merged, 1 into another version of the same record with other values (superseded; "
        in (conserved.description)
    )


def test_a_negative_unit_cost_is_quarantined(tmp_path: Path) -> None:
    rows = [*PRODUCTS, ["SKU3", "Mug", "Home", "Kitchen", "physical", "5.00", "-1.00"]]
    conn = _one_source(tmp_path, "products", landing.PRODUCTS.columns, rows)
    assert _count_rule(conn, "products", "negative_unit_cost") == 1


def test_a_record_delivered_again_on_a_later_day_is_merged_into_the_first(staged) -> None:
    later = "2025-03-02"
    # The same values, the price written 20 where the first delivery wrote 20.00.
    again = [["R7", "S1", "2025-03-01 14:00:00", "", "+49 30 1234567", "SKU1", "3", "20", "card"]]
    _insert(staged, "store_purchases", landing.STORE_PURCHASES.columns, again, later)
    for _ in range(2):  # re-running the later day changes nothing
        clear(staged, SOURCES["store_purchases"], [later])
        _stage(staged, "store_purchases", landing.STORE_PURCHASES.columns, [later])
    assert staged.execute(
        "SELECT partition_date FROM staging.store_purchases WHERE receipt_id = 'R7'"
    ).fetchall() == [(datetime(2025, 3, 1).date(),)]
    assert staged.execute(
        "SELECT rule, kept_source_line FROM quarantine.merged_duplicates "
        "WHERE partition_date = '2025-03-02'"
    ).fetchall() == [("redelivered", 10)]
    assert conserved_result(staged, "store_purchases", [DAY, later]).severity == (
        dg.AssetCheckSeverity.WARN
    )
    assert contract_result(staged, SOURCES["store_purchases"], [later]).passed


def test_a_run_that_removes_the_copy_another_day_was_merged_into_fails_naming_that_day(
    staged,
) -> None:
    later = "2025-03-02"
    again = [["R7", "S1", "2025-03-01 14:00:00", "", "+49 30 1234567", "SKU1", "3", "20", "card"]]
    _insert(staged, "store_purchases", landing.STORE_PURCHASES.columns, again, later)
    _stage(staged, "store_purchases", landing.STORE_PURCHASES.columns, [later])
    # The first day's file is delivered again without R7, and its day run again: the later
    # copy, merged into the one now gone, is in no table.
    staged.execute(
        "DELETE FROM raw.store_purchases WHERE partition_date = ? AND source_line = 10", [DAY]
    )
    clear(staged, SOURCES["store_purchases"], [DAY])
    _stage(staged, "store_purchases", landing.STORE_PURCHASES.columns, [DAY])
    check = conserved_result(staged, "store_purchases", [DAY])
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert (
        f"1 row(s) of {later} merged into a copy no longer staged (its delivery removed or "
        f"changed): in no table now. Re-materialize staging.store_purchases for {later}"
    ) in check.description
    # Run again, that day stages R7 from its own delivery, and every check passes.
    clear(staged, SOURCES["store_purchases"], [later])
    _stage(staged, "store_purchases", landing.STORE_PURCHASES.columns, [later])
    assert staged.execute(
        "SELECT partition_date FROM staging.store_purchases WHERE receipt_id = 'R7'"
    ).fetchall() == [(datetime(2025, 3, 2).date(),)]
    assert conserved_result(staged, "store_purchases", [DAY]).severity != (
        dg.AssetCheckSeverity.ERROR
    )


def test_a_record_delivered_again_later_with_other_values_keeps_the_first_and_warns(
    staged,
) -> None:
    later = "2025-03-02"
    # R7 again, the quantity corrected from 3 to 4.
    changed = [
        ["R7", "S1", "2025-03-01 14:00:00", "", "+49 30 1234567", "SKU1", "4", "20.00", "card"]
    ]
    _insert(staged, "store_purchases", landing.STORE_PURCHASES.columns, changed, later)
    _stage(staged, "store_purchases", landing.STORE_PURCHASES.columns, [later])
    assert staged.execute(
        "SELECT quantity, partition_date FROM staging.store_purchases WHERE receipt_id = 'R7'"
    ).fetchall() == [(3, datetime(2025, 3, 1).date())]
    assert staged.execute(
        "SELECT rule, json_extract_string(record, '$.quantity') FROM quarantine.merged_duplicates "
        "WHERE partition_date = ?",
        [later],
    ).fetchall() == [("redelivered_changed", "4")]
    check = conserved_result(staged, "store_purchases", [later])
    assert check.severity == dg.AssetCheckSeverity.WARN and not check.passed
    assert check.description == (
        "All 1 raw rows conserved: 0 staged, 1 merged duplicates, 0 quarantined; of the merged, "
        "1 into another version of the same record with other values (redelivered_changed; the "
        "earliest day's delivery "
        "is kept: see quarantine.merged_duplicates where source = 'store_purchases' and rule = "
        "'redelivered_changed')."
    )


def test_copies_of_a_record_are_told_apart_by_their_typed_values_not_their_text(
    staged,
) -> None:
    later = "2025-03-02"
    again = [  # R7 as before with its price written 20; R1 with another quantity
        ["R7", "S1", "2025-03-01 14:00:00", "", "+49 30 1234567", "SKU1", "3", "20", "card"],
        ["R1", "S1", "2025-03-01 10:00:00", "lc1", "", "SKU1", "5", "20.00", "Card"],
        ["R8", "S1", "2025-03-02 09:00:00", "", "", "SKU1", "1", "20", "cash"],
        ["R8", "S1", "2025-03-02 09:00:00", "", "", "SKU1", "1", "20.0", "cash"],  # the same
    ]
    _insert(staged, "store_purchases", landing.STORE_PURCHASES.columns, again, later, "pos2.csv")
    clear(staged, SOURCES["store_purchases"], [DAY, later])
    _stage(staged, "store_purchases", landing.STORE_PURCHASES.columns, [DAY, later])
    assert staged.execute(
        "SELECT json_extract_string(record, '$.receipt_id'), rule FROM quarantine.merged_duplicates "
        "WHERE partition_date = ? ORDER BY 1",
        [later],
    ).fetchall() == [
        ("R1", "redelivered_changed"),
        ("R7", "redelivered"),
        ("R8", "exact_duplicate"),
    ]


def test_a_shop_order_read_again_a_day_later_under_another_row_number_is_merged_once(
    tmp_path: Path,
) -> None:
    # A shop numbers rows anew with each read: O2 takes row 2 on the second day, which was
    # O1's the day before, and O1 comes back as row 3.
    conn = duckdb.connect(str(tmp_path / "orders.duckdb"))
    columns = landing.ORDERS.columns
    o1 = ["O1", "A1", "2025-03-01 10:00:00", "completed", "card", "EUR", "20.00"]
    o2 = ["O2", "A2", "2025-03-02 10:00:00", "completed", "card", "EUR", "30.00"]
    _insert(conn, "online_orders", columns, [o1], DAY, "shop:orders")
    _insert(conn, "online_orders", columns, [o2, o1], "2025-03-02", "shop:orders")
    for day in (DAY, "2025-03-02"):
        _stage(conn, "online_orders", columns, [day])
    assert conn.execute(
        "SELECT source_line, kept_source_line, rule FROM quarantine.merged_duplicates"
    ).fetchall() == [(3, 2, "redelivered")]
    assert conserved_result(conn, "online_orders", ["2025-03-02"]).passed


def test_a_record_delivered_again_on_a_later_day_of_one_run_is_merged_into_the_first(
    staged,
) -> None:
    later = "2025-03-02"
    again = [
        ["R8", "S1", "2025-03-02 09:00:00", "", "", "SKU1", "1", "20.00", "cash"],
        ["R7", "S1", "2025-03-01 14:00:00", "", "+49 30 1234567", "SKU1", "3", "20.00", "card"],
    ]
    columns = landing.STORE_PURCHASES.columns
    _insert(staged, "store_purchases", columns, again, later, f"store_purchases/{later}/pos.csv")
    # Both days in one run (a backfill), twice: as when the days are run one by one.
    for _ in range(2):
        clear(staged, SOURCES["store_purchases"], [DAY, later])
        _stage(staged, "store_purchases", columns, [DAY, later])
    assert staged.execute(
        "SELECT receipt_id, partition_date FROM staging.store_purchases "
        "WHERE receipt_id IN ('R7', 'R8') ORDER BY 1"
    ).fetchall() == [("R7", datetime(2025, 3, 1).date()), ("R8", datetime(2025, 3, 2).date())]
    assert staged.execute(
        "SELECT rule, source_line, kept_source_file, kept_source_line "
        "FROM quarantine.merged_duplicates WHERE partition_date = '2025-03-02'"
    ).fetchall() == [("redelivered", 3, "store_purchases.csv", 10)]
    assert contract_result(staged, SOURCES["store_purchases"], [DAY, later]).passed
    assert conserved_result(staged, "store_purchases", [DAY, later]).severity == (
        dg.AssetCheckSeverity.WARN
    )


def test_the_email_contract_refuses_the_whitespace_python_knows_on_either_engine() -> None:
    # The contract spells \s out, so pandas runs it on Arrow's RE2: the same characters, and
    # the same verdicts as Python's re gives the pattern with \s.
    chars = "".join(map(chr, range(0x110000)))
    spaces = re.findall(r"\s", chars)
    assert set(re.findall(f"[{WHITESPACE}]", chars)) == set(spaces)
    emails = [f"an{c}na@example.com" for c in spaces] + [f"anna@exam{c}ple.com" for c in spaces]
    emails += ["anna@example.com", "a.b+c@x.co", "anna@example", "@example.com", "a@@b.com"]
    emails += ["anna@example.c", "ANNA@example.COM", "anna@例子.com", "anna@example.com\n"]
    verdicts = pd.Series(emails, dtype="str").str.match(EMAIL).tolist()
    python = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
    assert verdicts == [python.match(e) is not None for e in emails]
    assert [e for e, ok in zip(emails, verdicts, strict=True) if ok] == [
        "anna@example.com",
        "a.b+c@x.co",
        "anna@例子.com",
        "anna@example.com\n",  # '$' takes a final newline, in both
    ]


def test_days_staged_with_other_settings_stop_a_run_of_some_days_but_not_of_all(
    tiny_zone: Path, tmp_path: Path
) -> None:
    from crm_pipeline.definitions import defs
    from crm_pipeline.run import range_tags
    from crm_pipeline_tests.conftest import bind
    from crm_pipeline_tests.landing_builder import DAY1, DAY2

    layers = [a for a in defs.assets if {k.path[0] for k in a.keys} <= {"raw", "staging"}]

    def run(
        time_zone: str, first: str | None, regions: str = "US,CN,DE", only: str | None = None
    ) -> dg.ExecuteInProcessResult:
        resources = bind(tiny_zone, tmp_path / "w.duckdb")
        resources["warehouse"] = WarehouseResource(
            path=str(tmp_path / "w.duckdb"), time_zone=time_zone, phone_regions=regions
        )
        return dg.materialize(
            layers,
            selection=[dg.AssetKey.from_user_string(only)] if only else None,
            resources=resources,
            tags=range_tags(first, DAY2) if first else None,
            raise_on_error=False,
        )

    def settings() -> set[tuple]:
        with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as conn:
            return set(
                conn.execute(
                    "SELECT DISTINCT time_zone, phone_regions FROM staging.staged_with"
                ).fetchall()
            )

    assert run("UTC", DAY1).success
    assert settings() == {("UTC", "US,CN,DE")}
    refused = run("Europe/Berlin", DAY2)
    assert (
        f"staging.feedback holds 1 day(s) ({DAY1}..{DAY1}) staged with CRM_TIME_ZONE 'UTC'; "
        "this run has CRM_TIME_ZONE 'Europe/Berlin' and does not stage them again, so the "
        "warehouse would be read two ways. Set CRM_TIME_ZONE back to 'UTC', or stage every "
        "source's every day again" in _failures(refused)["staging__feedback"]
    )
    assert settings() == {("UTC", "US,CN,DE")}  # no table changed, snapshots included
    other_phones = _failures(run("UTC", DAY2, regions="GB"))
    assert (
        "staged with CRM_PHONE_REGIONS 'US,CN,DE'; this run has CRM_PHONE_REGIONS 'GB'"
        in other_phones["staging__feedback"]
    )
    # A snapshot staged alone with other phone countries would not match the daily tables.
    alone = _failures(run("UTC", None, regions="GB", only="staging/online_accounts"))
    assert (
        "staging.online_accounts failed for no partition (the whole table)"
        in alone["staging__online_accounts"]
    )
    assert (
        "staging.loyalty_members holds its snapshot staged with CRM_PHONE_REGIONS 'US,CN,DE'; "
        "this run has CRM_PHONE_REGIONS 'GB'" in alone["staging__online_accounts"]
    )
    assert settings() == {("UTC", "US,CN,DE")}
    assert run("Europe/Berlin", DAY1, regions="GB").success  # every source, every day
    assert settings() == {("Europe/Berlin", "GB")}


def test_days_an_earlier_version_staged_are_named_until_they_are_run_again(
    tiny_zone: Path, tmp_path: Path
) -> None:
    from crm_pipeline.definitions import defs
    from crm_pipeline.run import range_tags
    from crm_pipeline_tests.conftest import bind
    from crm_pipeline_tests.landing_builder import DAY1, DAY2

    layers = [a for a in defs.assets if {k.path[0] for k in a.keys} <= {"raw", "staging"}]
    resources = bind(tiny_zone, tmp_path / "w.duckdb")

    def run(first: str) -> dict[str, tuple[bool, list]]:
        result = dg.materialize(layers, resources=resources, tags=range_tags(first, DAY2))
        return {
            e.asset_key.path[-1]: (e.passed, e.metadata.get("days_to_run", None))
            for e in result.get_asset_check_evaluations()
            if e.check_name == "staged_by_this_version"
        }

    daily = {"store_purchases", "inquiries", "feedback", "online_orders", "online_order_items"}
    assert run(DAY1) == {name: (True, None) for name in daily}
    # A warehouse an earlier version staged: its record has no code (nor any column for it).
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.execute("ALTER TABLE staging.staged_with DROP COLUMN code")
    after_upgrade = run(DAY2)
    assert {name: passed for name, (passed, _) in after_upgrade.items()} == dict.fromkeys(
        daily, False
    )
    # The day run since is this version's; the other keeps the earlier one's rules.
    days_to_run = {name: days.value for name, (_, days) in after_upgrade.items()}
    assert days_to_run == {name: [DAY1] for name in daily}
    assert run(DAY1) == {name: (True, None) for name in daily}


def _failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    assert not result.success
    return {
        e.step_key: e.step_failure_data.error.message
        for e in result.all_events
        if e.is_step_failure
    }


def test_a_phone_without_its_country_code_is_read_in_the_business_regions(
    tmp_path: Path,
) -> None:
    columns = landing.ACCOUNTS.columns
    row = dict.fromkeys(columns, "")
    uk = {**row, "account_id": "A1", "phone": "07911 123456", "created_at": "2025-01-01"}
    us = {**row, "account_id": "A2", "phone": "(415) 555-0100", "created_at": "2025-01-01"}
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    _insert(conn, "online_accounts", columns, [list(uk.values()), list(us.values())], None)

    def phones(regions: tuple[str, ...]) -> dict[str, str]:
        ensure_tables(conn, SOURCES["online_accounts"])
        clear(conn, SOURCES["online_accounts"], None)
        stage(conn, SOURCES["online_accounts"], columns, None, LOADED, regions)
        return dict(
            conn.execute("SELECT account_id, phone FROM staging.online_accounts").fetchall()
        )

    assert phones(("GB", "US")) == {"A1": "+447911123456", "A2": "+14155550100"}
    # Read as the default regions read it (US, China, Germany), the British mobile is German.
    assert phones(("US", "CN", "DE"))["A1"] == "+497911123456"
    assert phones(("GB",)) == {"A1": "+447911123456", "A2": None}


def test_phone_regions_that_are_no_countries_are_named() -> None:
    for regions, said in (
        ("GB,XX", "names no country phonenumbers knows: ['XX']"),
        (" ,", "is empty"),
    ):
        with pytest.raises(
            ActionableError, match=re.escape(f"CRM_PHONE_REGIONS {regions!r} {said}")
        ):
            WarehouseResource(phone_regions=regions).phone_region_codes()


def test_a_product_cost_written_oddly_is_kept_as_null_or_rounded_with_its_product(
    tmp_path: Path,
) -> None:
    rows = [
        ["SKU1", "Lamp", "Home", "Lighting", "physical", "20.00", "59.994"],
        ["SKU2", "Vase", "Home", "Decor", "physical", "30.00", "£18.00"],
    ]
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    _insert(conn, "products", landing.PRODUCTS.columns, rows, None)
    _stage(conn, "products", landing.PRODUCTS.columns, None)
    assert conn.execute("SELECT sku, unit_cost FROM staging.products ORDER BY 1").fetchall() == [
        ("SKU1", Decimal("59.99")),
        ("SKU2", None),
    ]
    assert conn.execute("SELECT column_name, rows FROM quarantine.nulled_values").fetchall() == [
        ("unit_cost", 1)
    ]


def test_a_date_with_a_mistyped_year_is_quarantined_not_a_failed_run(staged) -> None:
    later = "2025-03-02"
    old = ["R8", "S1", "0205-03-02 10:00:00", "", "", "SKU1", "1", "20.00", "cash"]
    _insert(staged, "store_purchases", landing.STORE_PURCHASES.columns, [old], later, "pos2.csv")
    _stage(staged, "store_purchases", landing.STORE_PURCHASES.columns, [later])
    assert staged.execute(
        "SELECT rule, reason FROM quarantine.staging_rejects WHERE partition_date = ?", [later]
    ).fetchall() == [
        (
            "implausible_date",
            "purchased_at 0205-03-02 10:00:00 is before 1900 or after 2199: a mistyped year?",
        )
    ]
    assert contract_result(staged, SOURCES["store_purchases"], [later]).passed


def test_rows_quarantined_for_a_product_now_in_the_reference_data_name_their_day(staged) -> None:
    # R4 sold SKU9, which the product file lacked; delivered again with it, then a later day.
    later = "2025-03-02"
    staged.execute(
        "INSERT INTO staging.products BY NAME SELECT * REPLACE ('SKU9' AS sku) "
        "FROM staging.products WHERE sku = 'SKU1'"
    )
    again = [["R8", "S1", "2025-03-02 09:00:00", "", "", "SKU1", "1", "20.00", "cash"]]
    _insert(staged, "store_purchases", landing.STORE_PURCHASES.columns, again, later)
    _stage(staged, "store_purchases", landing.STORE_PURCHASES.columns, [later])
    check = conserved_result(staged, "store_purchases", [later])
    assert check.severity == dg.AssetCheckSeverity.WARN and not check.passed
    assert (
        f"1 row(s) quarantined on {DAY} for a product or store the reference data holds now: "
        f"re-materialize staging.store_purchases for these days to stage them"
    ) in check.description
    assert check.metadata["days_to_release"].value == [DAY]
    # Its day run again, R4 is staged and nothing is left to release.
    clear(staged, SOURCES["store_purchases"], [DAY])
    _stage(staged, "store_purchases", landing.STORE_PURCHASES.columns, [DAY])
    assert staged.execute(
        "SELECT sku FROM staging.store_purchases WHERE receipt_id = 'R4'"
    ).fetchall() == [("SKU9",)]
    assert "reference data" not in conserved_result(staged, "store_purchases", [DAY]).description


def test_the_code_a_day_is_stamped_with_changes_with_its_code_not_its_comments(
    tmp_path: Path,
) -> None:
    from crm_pipeline import code_digest

    module = tmp_path / "layer" / "rules.py"
    module.parent.mkdir()

    def digest(source: str) -> str:
        module.write_text(source)
        return code_digest(("layer",), "1.0", root=str(tmp_path))

    first = digest('"""Rules."""\n\ndef cap(x):\n    """At most 5."""\n    return min(x, 5)\n')
    reworded = digest(
        '"""The rules."""\n\n# Why 5: the contract.\ndef cap(x):\n    return min(x, 5)  # cap\n'
    )
    assert reworded == first
    assert digest('"""Rules."""\n\ndef cap(x):\n    return min(x, 6)\n') != first
    module.write_text('"""Rules."""\n\ndef cap(x):\n    return min(x, 5)\n')
    assert code_digest(("layer",), "1.1", root=str(tmp_path)) != first  # a library's version
