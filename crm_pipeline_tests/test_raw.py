"""The raw layer on a tiny hand-made landing zone: every row lands or is rejected with a reason."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crm_pipeline.raw.assets import raw_assets
from crm_pipeline.raw.checks import rows_accounted_result
from crm_pipeline.run import failure_messages, range_tags
from crm_pipeline_tests.conftest import bind
from crm_pipeline_tests.landing_builder import DAY1, DAY2


def _load(zone: Path, warehouse: Path, first: str, last: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        raw_assets,
        resources=bind(zone, warehouse),
        tags=range_tags(first, last),
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def loaded(tiny_zone: Path, tmp_path_factory: pytest.TempPathFactory):
    warehouse = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    result = _load(tiny_zone, warehouse, DAY1, DAY2)
    conn = duckdb.connect(str(warehouse), read_only=True)
    yield result, conn, warehouse
    conn.close()


def _count(conn: duckdb.DuckDBPyConnection, sql: str, *params: object) -> int:
    return conn.execute(sql, list(params)).fetchone()[0]


def _rejects(conn: duckdb.DuckDBPyConnection, source: str) -> list[tuple]:
    return conn.execute(
        "SELECT source_line, reason, raw_text FROM quarantine.raw_rejects "
        "WHERE source = ? ORDER BY partition_date NULLS LAST, source_line",
        [source],
    ).fetchall()


def test_every_raw_asset_materializes(loaded) -> None:
    result, _, _ = loaded
    assert result.success
    keys = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    # One table per source of the landing contract: the shop's three, the three daily
    # exports, the three reference files.
    assert keys == {
        f"raw/{table}"
        for table in (
            "online_accounts",
            "online_orders",
            "online_order_items",
            "store_purchases",
            "inquiries",
            "feedback",
            "products",
            "stores",
            "loyalty_members",
        )
    }


def test_shop_tables_land_by_order_day_and_undatable_orders_are_quarantined(loaded) -> None:
    _, conn, _ = loaded
    assert _count(conn, "SELECT count(*) FROM raw.online_accounts") == 2
    by_day = conn.execute(
        "SELECT partition_date::VARCHAR, count(*) FROM raw.online_orders GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert by_day == [(DAY1, 1), (DAY2, 2)]  # the re-exported O2 is kept twice, as delivered
    rejected = conn.execute(
        "SELECT raw_text ->> 'order_id', reason FROM quarantine.raw_rejects "
        "WHERE source = 'online_orders' ORDER BY 1"
    ).fetchall()
    assert rejected == [("O3", "no_partition"), ("O4", "no_partition")]
    items = conn.execute(
        "SELECT order_id, partition_date::VARCHAR FROM raw.online_order_items ORDER BY ALL"
    ).fetchall()
    assert items == [("O1", DAY1), ("O1", DAY1), ("O2", DAY2)]
    orphans = conn.execute(
        "SELECT raw_text ->> 'order_id' FROM quarantine.raw_rejects "
        "WHERE source = 'online_order_items' ORDER BY 1"
    ).fetchall()
    assert orphans == [("O3",), ("O9",)]
    # The check says those are of no day, swept again by every load, apart from a day's own.
    result, _, _ = loaded
    [check] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.path[-1] == "online_orders" and e.check_name == "rows_accounted"
    ]
    assert check.description.endswith(
        "2 set aside in quarantine.raw_rejects in all (query it with source = 'online_orders' "
        "for the reasons, all of no partition, set aside again by every load)."
    )


def test_extra_delivered_columns_are_kept_as_json(loaded) -> None:
    _, conn, _ = loaded
    wrap = conn.execute(
        "SELECT extra_columns ->> 'gift_wrap' FROM raw.online_order_items WHERE line_no = '2'"
    ).fetchone()[0]
    assert wrap == "yes"
    priority = conn.execute(
        "SELECT extra_columns ->> 'priority' FROM raw.inquiries WHERE inquiry_id = 'I1'"
    ).fetchone()[0]
    assert priority == "high"


def test_cut_off_and_non_utf8_lines_are_quarantined_with_their_raw_text(loaded) -> None:
    _, conn, _ = loaded
    assert (
        _count(conn, "SELECT count(*) FROM raw.store_purchases WHERE partition_date = ?", DAY1) == 3
    )
    kept = conn.execute(
        "SELECT receipt_id, source_line FROM raw.store_purchases WHERE partition_date = ? ORDER BY 2",
        [DAY2],
    ).fetchall()
    assert kept == [("R3", 2), ("R5", 4)]
    assert _rejects(conn, "store_purchases") == [
        (3, "invalid_encoding", f"R4,S2,{DAY2} 10:00:00,,,SKU2,1,5.0,caf\\xe9"),
        (5, "missing_values", f"R6,S2,{DAY2} 11:30:00,,,SK"),
    ]


def test_truncated_json_line_is_quarantined_and_the_rest_loads(loaded) -> None:
    _, conn, _ = loaded
    assert conn.execute("SELECT inquiry_id, text FROM raw.inquiries ORDER BY 1").fetchall() == [
        ("I1", "broken\nlid"),
        ("I2", None),
    ]
    assert _rejects(conn, "inquiries") == [
        (3, "invalid_json", '{"inquiry_id": "I3", "topic": "comp')
    ]


def test_file_with_a_renamed_column_goes_to_quarantine_whole(loaded) -> None:
    _, conn, _ = loaded
    assert conn.execute("SELECT response_id FROM raw.feedback ORDER BY 1").fetchall() == [
        ("F1",),
        ("F2",),
    ]
    reason, detail = conn.execute(
        "SELECT reason, detail FROM quarantine.raw_rejects WHERE source = 'feedback'"
    ).fetchone()
    assert reason == "header_mismatch"
    assert "lacks ['nps']" in detail and "nps_score" in detail
    # The check names the file first: its day is without it.
    result, _, _ = loaded
    [check] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.path[-1] == "feedback" and e.check_name == "rows_accounted"
    ]
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith(
        "All 4 delivered rows accounted for; 1 file(s) set aside whole for their header, "
        "encoding or line breaks (each line in quarantine.raw_rejects, none in raw.feedback): "
        f"feedback/{DAY2}/survey.csv; 1 set aside in quarantine.raw_rejects in all"
    )
    assert check.metadata["files_set_aside_whole"].value == [f"feedback/{DAY2}/survey.csv"]


def test_rows_accounted_check_warns_with_the_reject_count(loaded) -> None:
    result, _, _ = loaded
    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    store = checks[("store_purchases", "rows_accounted")]
    assert not store.passed and store.severity == dg.AssetCheckSeverity.WARN
    assert store.metadata["rejected_rows"].value == 2
    assert checks[("products", "rows_accounted")].passed
    assert all(e.passed for (_, name), e in checks.items() if name == "contract")


def test_a_file_loaded_before_and_no_longer_delivered_is_named_with_its_rows(
    tiny_zone: Path, tmp_path: Path
) -> None:
    # A day's second export taken away: its rows left raw with it, with no word.
    zone = tmp_path / "zone"
    shutil.copytree(tiny_zone, zone)
    day = zone / "store_purchases" / DAY1
    shutil.copy(day / "pos.csv", day / "pos_2.csv")
    warehouse = tmp_path / "warehouse.duckdb"
    _load(zone, warehouse, DAY1, DAY1)
    (day / "pos_2.csv").unlink()
    result = _load(zone, warehouse, DAY1, DAY1)
    checks = {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}
    store = checks[("store_purchases", "rows_accounted")]
    assert store.severity == dg.AssetCheckSeverity.WARN and not store.passed
    gone = f"store_purchases/{DAY1}/pos_2.csv"
    assert store.metadata["files_gone"].value == {gone: 3}
    assert (
        f"1 file(s) loaded before are no longer delivered, and their 3 row(s) left "
        f"raw.store_purchases with them: {gone} (3 rows)"
    ) in store.description
    # The next load of the day has nothing to say of it.
    again = _load(zone, warehouse, DAY1, DAY1)
    evaluations = again.get_asset_check_evaluations()
    assert not any("files_gone" in e.metadata for e in evaluations)


def test_rows_accounted_check_fails_when_a_row_is_lost(loaded, tmp_path: Path) -> None:
    _, _, warehouse = loaded
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(warehouse.read_bytes())
    with duckdb.connect(str(copy)) as conn:
        conn.execute("DELETE FROM raw.stores WHERE store_id = 'S2'")
        result = rows_accounted_result(conn, "stores", "TRUE", [])
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert "reference/stores.csv: delivered 2, raw 1, rejected 0" in result.description


def test_rerunning_a_day_replaces_it_and_never_double_counts(
    tiny_zone: Path, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    _load(tiny_zone, warehouse, DAY1, DAY2)
    assert _load(tiny_zone, warehouse, DAY2, DAY2).success
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        counts = conn.execute(
            "SELECT partition_date::VARCHAR, count(*) FROM raw.store_purchases GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert counts == [(DAY1, 3), (DAY2, 2)]
        assert (
            _count(
                conn, "SELECT count(*) FROM quarantine.raw_rejects WHERE source = 'online_orders'"
            )
            == 2
        )
        assert (
            _count(conn, "SELECT count(*) FROM raw.deliveries WHERE source = 'store_purchases'")
            == 2
        )


def test_files_outside_the_day_folders_are_reported_not_silently_skipped(
    tiny_zone: Path, tmp_path: Path
) -> None:
    zone = tmp_path / "zone"
    shutil.copytree(tiny_zone, zone)
    (zone / "store_purchases" / "pos.csv").write_text("receipt_id\n")
    (zone / "store_purchases" / "2025-1-5").mkdir()
    (zone / "store_purchases" / "2025-1-5" / "pos.csv").write_text("receipt_id\n")
    result = _load(zone, tmp_path / "warehouse.duckdb", DAY1, DAY2)
    store = next(
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.path[-1] == "store_purchases"
    )
    assert store.materialization.metadata["files_not_read"].value == [
        "store_purchases/2025-1-5/pos.csv",
        "store_purchases/pos.csv",
    ]


SHOP_ROWS = "source IN ('online_orders', 'online_order_items')"
SHOP_TABLES = {
    "orders": "FROM raw.online_orders ORDER BY source_line",
    "items": "FROM raw.online_order_items ORDER BY source_line",
    "rejects": f"FROM quarantine.raw_rejects WHERE {SHOP_ROWS} ORDER BY source, source_line",
    "deliveries": f"FROM raw.deliveries WHERE {SHOP_ROWS} ORDER BY ALL",
}


def _zone_with(
    tiny_zone: Path, tmp_path: Path, rows: dict[str, list[dict]], real_item_ids: bool = False
) -> Path:
    """A copy of the tiny zone whose shop has these rows too (table -> rows by column);
    real_item_ids: order_items.order_id declared REAL, so SQLite stores numbers as numbers."""
    zone = tmp_path / "zone"
    shutil.copytree(tiny_zone, zone)
    with sqlite3.connect(zone / "online_shop.sqlite") as db:
        if real_item_ids:
            names = [c[1] for c in db.execute("PRAGMA table_info(order_items)")]
            declared = ", ".join(f"{n} {'REAL' if n == 'order_id' else 'TEXT'}" for n in names)
            db.execute(f"CREATE TABLE items ({declared})")
            db.execute("INSERT INTO items SELECT * FROM order_items ORDER BY rowid")
            db.execute("DROP TABLE order_items")
            db.execute("ALTER TABLE items RENAME TO order_items")
        for table, inserted in rows.items():
            for row in inserted:
                db.execute(
                    f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                    list(row.values()),
                )
    return zone


def _day2_alone(zone: Path, tmp_path: Path) -> dict:
    """The shop tables after a run over DAY2 alone."""
    warehouse = tmp_path / "day2.duckdb"
    assert _load(zone, warehouse, DAY2, DAY2).success
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return {
            name: conn.execute(f"SELECT * EXCLUDE (loaded_at) {query}").fetchall()
            for name, query in SHOP_TABLES.items()
        }


def _shop_row(tiny_zone: Path, table: str, order_id: str) -> dict:
    with sqlite3.connect(tiny_zone / "online_shop.sqlite") as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute(f"SELECT * FROM {table} WHERE order_id = ?", [order_id]).fetchone())


def test_a_run_of_one_day_routes_an_order_exported_twice_to_its_first_day(
    tiny_zone: Path, tmp_path: Path
) -> None:
    # DAY2 alone: O1 is also exported on DAY2, so its items still belong to DAY1, its first day.
    again = _shop_row(tiny_zone, "orders", "O1") | {"ordered_at": f"{DAY2} 09:00:00"}
    zone = _zone_with(tiny_zone, tmp_path, {"orders": [again]})
    landed = _day2_alone(zone, tmp_path)
    assert [row[0] for row in landed["items"]] == ["O2"]  # not O1's
    assert [row[0] for row in landed["orders"]] == ["O2", "O2", "O1"]
    assert len(landed["rejects"]) == 4  # orders O3 and O4; the items of O3 and O9


def test_order_ids_that_sqlite_and_duckdb_write_apart_land_as_in_a_whole_read(
    tiny_zone: Path, tmp_path: Path
) -> None:
    # REAL 1e15 is '1.0e+15' to SQLite and '1000000000000000.0' to DuckDB: an item with it
    # and an order of DAY1 with DuckDB's text. Ids are matched as DuckDB writes them, so the
    # item goes to DAY1, in a run over DAY2 alone as in a whole read.
    order = _shop_row(tiny_zone, "orders", "O1") | {"order_id": "1000000000000000.0"}
    item = _shop_row(tiny_zone, "order_items", "O2") | {"order_id": 1e15}
    zone = _zone_with(
        tiny_zone, tmp_path, {"orders": [order], "order_items": [item]}, real_item_ids=True
    )
    landed = _day2_alone(zone, tmp_path)
    assert len(landed["rejects"]) == 4  # as in the tiny zone: the REAL item is placed


def test_shop_rows_of_a_loaded_day_changed_since_are_named_by_a_later_run(
    tiny_zone: Path, tmp_path: Path
) -> None:
    zone = _zone_with(tiny_zone, tmp_path, {})
    warehouse = tmp_path / "warehouse.duckdb"
    assert _load(zone, warehouse, DAY1, DAY1).success

    def current(result: dg.ExecuteInProcessResult) -> dict[str, tuple]:
        return {
            e.asset_key.path[-1]: (e.passed, e.metadata.get("changed_days"))
            for e in result.get_asset_check_evaluations()
            if e.check_name == "shop_days_current"
        }

    unchanged = _load(zone, warehouse, DAY2, DAY2)
    assert current(unchanged) == {"online_orders": (True, None), "online_order_items": (True, None)}
    # After DAY1 was loaded the shop refunds O1 and records an order of DAY1 it had missed.
    late = _shop_row(tiny_zone, "orders", "O1") | {"order_id": "O5"}
    with sqlite3.connect(zone / "online_shop.sqlite") as db:
        db.execute("UPDATE orders SET status = 'refunded' WHERE order_id = 'O1'")
        db.execute(f"INSERT INTO orders VALUES ({', '.join('?' * len(late))})", list(late.values()))
    changed = _load(zone, warehouse, DAY2, DAY2)
    found = current(changed)
    assert found["online_orders"][0] is False
    assert found["online_orders"][1].value == [DAY1]
    assert found["online_order_items"] == (True, None)  # O1's items are as they were
    message = next(
        e.description
        for e in changed.get_asset_check_evaluations()
        if e.check_name == "shop_days_current" and not e.passed
    )
    assert f"a backfill of daily_refresh from {DAY1} to {DAY1} in the UI" in message
    assert f"crm-pipeline materialize --first {DAY1} --last {DAY1} when no run" in message
    assert _load(zone, warehouse, DAY1, DAY1).success  # run again, the day is current
    assert current(_load(zone, warehouse, DAY2, DAY2))["online_orders"] == (True, None)


def test_links_and_special_files_in_the_landing_zone_are_never_read(
    tiny_zone: Path, tmp_path: Path
) -> None:
    zone = _zone_with(tiny_zone, tmp_path, {})
    secret = tmp_path / "customer_key.secret"
    secret.write_text("0123456789abcdef" * 4 + "\n")
    day = zone / "inquiries" / DAY1
    (day / "leak.jsonl").symlink_to(secret)
    os.mkfifo(day / "hang.jsonl")  # read, it would block the load for good
    (zone / "feedback" / "elsewhere").mkdir()
    (zone / "feedback" / "elsewhere" / "survey.csv").write_text("response_id\n")
    shutil.rmtree(zone / "feedback" / DAY1)
    (zone / "feedback" / DAY1).symlink_to(zone / "feedback" / "elsewhere")
    warehouse = tmp_path / "warehouse.duckdb"
    result = _load(zone, warehouse, DAY1, DAY1)
    assert result.success
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM quarantine.raw_rejects WHERE raw_text LIKE '%0123456789abcdef%'"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM raw.feedback").fetchone() == (0,)
    inquiries = next(
        m.materialization.metadata["files_not_read"].value
        for m in result.get_asset_materialization_events()
        if m.asset_key.path[-1] == "inquiries"
    )
    assert inquiries[:2] == [f"inquiries/{DAY1}/hang.jsonl", f"inquiries/{DAY1}/leak.jsonl"]
    # A reference file that is a link: no file, and the message says why.
    stores = zone / "reference" / "stores.csv"
    stores.rename(tmp_path / "stores.csv")
    stores.symlink_to(tmp_path / "stores.csv")
    [message] = failure_messages(_load(zone, warehouse, DAY1, DAY1))
    assert "No stores.csv under" in message
    assert "(reference/stores.csv: a link or special file, never read)" in message
