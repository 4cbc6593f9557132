"""Day after day: re-running a day changes no table; a file delivered twice changes no core table
or mart."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crm_pipeline.analytics.settings import AnalysisSettings
from crm_pipeline.automation import daily_refresh
from crm_pipeline.checked import take_record
from crm_pipeline.core.classify import CoreRules
from crm_pipeline.core.crosswalk import build_crosswalk
from crm_pipeline.core.order_lines import build_order_lines
from crm_pipeline.core.schemas import CORE_MODELS
from crm_pipeline.definitions import defs
from crm_pipeline.generate import generate
from crm_pipeline.mining.settings import MiningSettings
from crm_pipeline.privacy import erase
from crm_pipeline.resources import LandingZoneResource, WarehouseResource
from crm_pipeline.run import landing_days, materialize_all

# When a row was loaded, and the log of model fits (one set of rows per run), are the only
# things a run may change on its own.
LOAD_TIME = "loaded_at"
RUN_LOG = "analytics.model_runs"
SECRET = b"a test secret of at least 32 characters"


def _tables(warehouse: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, without load times; the run log without its run times."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        tables = {}
        for schema, table in conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL"
        ).fetchall():
            name = f"{schema}.{table}"
            dropped = [LOAD_TIME, "run_at", "seconds"] if name == RUN_LOG else [LOAD_TIME]
            columns = [c for (c, *_) in conn.execute(f"DESCRIBE {name}").fetchall()]
            kept = ", ".join(f'"{c}"' for c in columns if c not in dropped)
            tables[name] = sorted(
                conn.execute(f"SELECT DISTINCT {kept} FROM {name}").fetchall()
                if name == RUN_LOG  # every run adds the same fits again
                else conn.execute(f"SELECT {kept} FROM {name}").fetchall(),
                key=repr,
            )
    return tables


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    """A landing zone of three weeks, materialized in one run over all its days."""
    root = tmp_path_factory.mktemp("daily") / "landing"
    generate(root, customers=150, days=21, seed=11, defect_rate=0.05)
    warehouse = root.parent / "warehouse.duckdb"
    zone = LandingZoneResource(root=str(root))
    days = landing_days(zone)
    test_defs = dg.Definitions(
        assets=list(defs.assets),
        jobs=[daily_refresh],
        resources={
            "warehouse": WarehouseResource(path=str(warehouse)),
            "landing_zone": zone,
            "core_rules": CoreRules(),
            # A fixed day, as a scheduled deployment would not have: re-runs compare alike.
            "analysis": AnalysisSettings(as_of=days[-1]),
            "mining": MiningSettings(),
        },
    )
    assert materialize_all(test_defs, dg.DagsterInstance.ephemeral(), days[0], days[-1]).success
    return test_defs, root, warehouse, days, _tables(warehouse)


def _daily_run(test_defs: dg.Definitions, day: str) -> None:
    result = test_defs.resolve_job_def("daily_refresh").execute_in_process(
        partition_key=day, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert result.success


def test_rerunning_a_day_gives_identical_tables(loaded) -> None:
    test_defs, _, warehouse, days, before = loaded
    _daily_run(test_defs, days[len(days) // 2])
    after = _tables(warehouse)
    assert [name for name in before if after[name] != before[name]] == []
    assert after.keys() == before.keys()


def test_a_file_delivered_twice_is_counted_once(loaded) -> None:
    test_defs, root, warehouse, days, _ = loaded
    day = days[len(days) // 2]
    before = _tables(warehouse)
    (delivered,) = sorted((root / "store_purchases" / day).glob("*.csv"))
    again = delivered.with_name(f"again_{delivered.name}")
    shutil.copy(delivered, again)
    try:
        _daily_run(test_defs, day)
    finally:
        again.unlink()
    after = _tables(warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        lines = conn.execute(
            "SELECT count(*) FROM raw.store_purchases WHERE source_file LIKE ?",
            [f"%/{day}/again_%"],
        ).fetchall()[0][0]
        merged, quarantined = (
            conn.execute(
                f"SELECT count(*) FROM quarantine.{table} "
                "WHERE source = 'store_purchases' AND source_file LIKE ?",
                [f"%/{day}/again_%"],
            ).fetchall()[0][0]
            for table in ("merged_duplicates", "staging_rejects")
        )
    # Raw keeps the second copy as delivered; staging merges each of its rows into the first,
    # but for the rows that broke a rule in the first copy too, which are set aside again; the
    # quality report counts them. Nothing else changes: core and every mart are as they were.
    assert lines > 0
    assert merged + quarantined == lines
    assert merged > quarantined
    changed = {name for name in before if after[name] != before[name]}
    set_aside_again = {"quarantine.staging_rejects"} if quarantined else set()
    assert (
        changed
        == {
            "core.quality_report",
            "quarantine.merged_duplicates",
            "raw.deliveries",
            "raw.store_purchases",
        }
        | set_aside_again
    )


def _order_lines_and_exclusions(conn: duckdb.DuckDBPyConnection) -> tuple[list, list]:
    columns = [c for (c, *_) in conn.execute("DESCRIBE core.order_lines").fetchall()]
    kept = ", ".join(c for c in columns if c != LOAD_TIME)
    return (
        conn.execute(f"SELECT {kept} FROM core.order_lines ORDER BY ALL").fetchall(),
        conn.execute(
            "SELECT id, rule FROM core.excluded_rows WHERE entity = 'order_lines' ORDER BY ALL"
        ).fetchall(),
    )


def _updated_and_whole(warehouse: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the warehouse to update (then copied to the second path, built whole)."""
    updated, whole = tmp_path / "updated.duckdb", tmp_path / "whole.duckdb"
    shutil.copy(warehouse, updated)
    return updated, whole


def test_rewriting_only_the_changed_orders_gives_what_a_whole_write_gives(
    loaded, tmp_path: Path
) -> None:
    updated, whole = _updated_and_whole(loaded[2], tmp_path)
    staged_at = datetime.now()
    with duckdb.connect(str(updated)) as conn:
        # What later runs bring. A day staged again, without one line of a receipt of two:
        day, receipt = conn.execute(
            "SELECT any_value(partition_date), receipt_id FROM staging.store_purchases "
            "GROUP BY receipt_id HAVING count(*) > 1 ORDER BY receipt_id LIMIT 1"
        ).fetchall()[0]
        conn.execute(
            "DELETE FROM staging.store_purchases WHERE receipt_id = ? AND source_line = "
            "(SELECT max(source_line) FROM staging.store_purchases WHERE receipt_id = ?)",
            [receipt, receipt],
        )
        # ... and without an order that is quarantined now, with its items:
        (order,) = conn.execute(
            "SELECT min(order_id) FROM staging.online_order_items WHERE partition_date = ?", [day]
        ).fetchall()[0]
        for table in ("online_order_items", "online_orders"):
            conn.execute(f"DELETE FROM staging.{table} WHERE order_id = ?", [order])
        for table in ("store_purchases", "online_order_items", "online_orders"):
            conn.execute(
                f"UPDATE staging.{table} SET loaded_at = ? WHERE partition_date = ?",
                [staged_at, day],
            )
        # Two customers found to be one:
        kept, retired = conn.execute(
            "SELECT customer_key FROM core.order_lines WHERE channel = 'online' "
            "GROUP BY ALL ORDER BY ALL LIMIT 2"
        ).fetchall()
        conn.execute(
            "UPDATE core.customer_crosswalk SET customer_key = ? WHERE customer_key = ?",
            [kept[0], retired[0]],
        )
        # A product moved to another category, and a customer who turns out to be staff:
        conn.execute(
            "UPDATE staging.products SET category = 'Renamed' WHERE sku = "
            "(SELECT sku FROM core.order_lines GROUP BY sku ORDER BY count(*), sku LIMIT 1)"
        )
        conn.execute(
            "UPDATE staging.online_accounts SET email = 'someone@staff.example' WHERE account_id = "
            "(SELECT min(source_id) FROM core.customer_crosswalk AS x "
            " JOIN core.order_lines AS l USING (customer_key) "
            " WHERE x.source = 'online_accounts' AND l.customer_key <> ?)",
            [kept[0]],
        )
        before = _order_lines_and_exclusions(conn)
    shutil.copy(updated, whole)
    rules = CoreRules(staff_email_domains=["staff.example"])
    with duckdb.connect(str(updated)) as conn:
        conn.begin()
        written = build_order_lines(conn, rules, datetime.now())
        rewritten = conn.execute(
            "SELECT count(*) FROM core.order_lines WHERE loaded_at > ?", [staged_at]
        ).fetchall()[0][0]
        conn.commit()
        after = _order_lines_and_exclusions(conn)
    with duckdb.connect(str(whole)) as conn:
        conn.execute("DROP TABLE core.order_lines")
        assert build_order_lines(conn, rules, datetime.now()).whole
        expected = _order_lines_and_exclusions(conn)
    assert not written.whole
    assert 0 < rewritten < len(after[0])
    assert after != before
    assert after == expected


def _order_lines_contract(test_defs: dg.Definitions, warehouse: Path) -> dg.AssetCheckEvaluation:
    """Materialize core.order_lines alone on `warehouse`; its contract check."""
    bound = dg.Definitions(
        assets=list(test_defs.assets),
        resources=test_defs.resources | {"warehouse": WarehouseResource(path=str(warehouse))},
    )
    result = materialize_all(
        bound, dg.DagsterInstance.ephemeral(), None, None, "key:core/order_lines"
    )
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "contract"]
    return check


def _retyped(warehouse: Path, quantity: int) -> int:
    """Give the first staged line of the first order of two lines `quantity` units, staged
    now; how many lines the table has."""
    with duckdb.connect(str(warehouse)) as conn:
        (order,) = conn.execute(
            "SELECT min(order_id) FROM staging.online_order_items WHERE order_id IN "
            "(SELECT order_id FROM core.order_lines GROUP BY ALL HAVING count(*) = 2)"
        ).fetchall()[0]
        conn.execute(
            "UPDATE staging.online_order_items SET quantity = ?, loaded_at = ? "
            "WHERE order_id = ? AND line_no = 1",
            [quantity, datetime.now(UTC).replace(tzinfo=None), order],
        )
        (total,) = conn.execute("SELECT count(*) FROM core.order_lines").fetchall()[0]
    return total


def _last_written(warehouse: Path) -> int:
    """How many order lines the last write wrote (its lines carry its load time)."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM core.order_lines "
            "WHERE loaded_at = (SELECT max(loaded_at) FROM core.order_lines)"
        ).fetchall()[0][0]


def test_a_partial_write_checks_the_rows_it_wrote_until_a_check_fails(loaded, tmp_path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(loaded[2], warehouse)
    # A line of a bad quantity is rewritten: only the lines of the orders the run rewrote (it,
    # and those whose size band it moved) are checked, and it fails.
    total = _retyped(warehouse, -3)
    check = _order_lines_contract(loaded[0], warehouse)
    assert not check.passed
    assert 2 <= check.metadata["rows_checked"].value == _last_written(warehouse) < total / 10
    assert "quantity" in check.description and "loaded after" in check.description
    # The next run rewrites nothing, yet checks every row: the bad line is still there.
    check = _order_lines_contract(loaded[0], warehouse)
    assert not check.passed
    assert check.metadata["rows_checked"].value == total
    # Mended, the order is rewritten and every row checked again, then only what a run wrote.
    _retyped(warehouse, 1)
    check = _order_lines_contract(loaded[0], warehouse)
    assert check.passed and check.metadata["rows_checked"].value == total
    check = _order_lines_contract(loaded[0], warehouse)
    assert check.passed and check.metadata["rows_checked"].value == 0
    # A run that stopped between its write and its check leaves no record: every row next.
    with duckdb.connect(str(warehouse)) as conn:
        conn.begin()
        assert take_record(conn, "core.order_lines", CORE_MODELS["order_lines"]) is not None
        conn.commit()
    check = _order_lines_contract(loaded[0], warehouse)
    assert check.passed and check.metadata["rows_checked"].value == total
    # Another contract (here: another pandera version's) has every row checked again.
    with duckdb.connect(str(warehouse)) as conn:
        (comment,) = conn.execute(
            "SELECT comment FROM duckdb_tables() WHERE table_name = 'order_lines'"
        ).fetchall()[0]
        other = comment.replace(comment.split()[1], "0" * 16)
        conn.execute(f"COMMENT ON TABLE core.order_lines IS '{other}'")
    check = _order_lines_contract(loaded[0], warehouse)
    assert check.passed and check.metadata["rows_checked"].value == total
    # A table of another column type is written whole, checked whole, and recorded again.
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("ALTER TABLE core.order_lines ALTER quantity TYPE BIGINT")
    check = _order_lines_contract(loaded[0], warehouse)
    assert check.passed and check.metadata["rows_checked"].value == total
    check = _order_lines_contract(loaded[0], warehouse)
    assert check.passed and check.metadata["rows_checked"].value == 0


IDENTITY_SOURCES = {
    "online_accounts": "created_at",
    "loyalty_members": "joined_at",
    "store_purchases": "purchased_at",
    "inquiries": "opened_at",
    "feedback": "submitted_at",
    "online_orders": "ordered_at",
}
RESOLVED_TABLES = ("core.customer_crosswalk", "core.customer_key_merges", "core.identity_groups")


def _resolved(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in RESOLVED_TABLES}


def test_resolving_only_the_groups_new_records_touch_gives_what_resolving_all_gives(
    loaded, tmp_path: Path
) -> None:
    updated, whole = _updated_and_whole(loaded[2], tmp_path)
    cutoff = loaded[3][-6]
    with duckdb.connect(str(updated)) as conn:
        # The first run resolves the records up to a day, from scratch.
        for table in RESOLVED_TABLES:
            conn.execute(f"DROP TABLE {table}")
        for source, time in IDENTITY_SOURCES.items():
            conn.execute(f"CREATE TABLE main.{source} AS SELECT * FROM staging.{source}")
            conn.execute(f"DELETE FROM staging.{source} WHERE {time} >= ?", [cutoff])
        # A member who shares nothing with anyone.
        (loner,) = conn.execute(
            "SELECT max(card_no) FROM staging.loyalty_members WHERE joined_at < ?", [cutoff]
        ).fetchall()[0]
        for schema in ("main", "staging"):
            conn.execute(
                f"UPDATE {schema}.loyalty_members SET phone = '+15550000001', email = NULL, "
                "name_key = 'only one', birth_date = NULL, address = NULL WHERE card_no = ?",
                [loner],
            )
            conn.execute(
                f"UPDATE {schema}.store_purchases SET loyalty_card = NULL WHERE loyalty_card = ?",
                [loner],
            )
        assert build_crosswalk(conn, datetime(2030, 1, 1), SECRET).whole
        # The next brings the later days, and changes: an account takes the email of another
        # customer's account (a merge), a member the phone of an account holder of another
        # name, a customer is erased, a receipt is gone.
        for source in IDENTITY_SOURCES:
            conn.execute(f"DELETE FROM staging.{source}")
            conn.execute(f"INSERT INTO staging.{source} SELECT * FROM main.{source}")
        (_, email), (merged, _), (erased, _) = conn.execute(
            "SELECT account_id, email FROM staging.online_accounts WHERE email IS NOT NULL "
            "ORDER BY account_id LIMIT 3"
        ).fetchall()
        conn.execute(
            "UPDATE staging.online_accounts SET email = ? WHERE account_id = ?", [email, merged]
        )
        conn.execute(
            "UPDATE staging.loyalty_members SET phone = (SELECT max(phone) FROM "
            "staging.online_accounts) WHERE card_no = (SELECT min(card_no) FROM "
            "staging.loyalty_members)"
        )
        (erased_key,) = conn.execute(
            "SELECT customer_key FROM core.customer_crosswalk "
            "WHERE source = 'online_accounts' AND source_id = ?",
            [erased],
        ).fetchall()[0]
        erase(conn, [erased_key], "test", datetime(2030, 1, 1))
        # Two members without a receipt, email or phone turn out to be long-standing account
        # holders: one by name and birth date, one by name at the same address.
        (account, birthday), (other, _) = conn.execute(
            "SELECT account_id, birth_date FROM staging.online_accounts WHERE name_key IS NOT "
            "NULL AND address IS NOT NULL AND birth_date IS NOT NULL ORDER BY account_id "
            "LIMIT 2 OFFSET 5"
        ).fetchall()
        first, second = conn.execute(
            "SELECT card_no FROM staging.loyalty_members ANTI JOIN staging.store_purchases AS p "
            "ON p.loyalty_card = card_no ORDER BY card_no LIMIT 2 OFFSET 5"
        ).fetchall()
        for card, holder, birth, address in (
            (first[0], account, birthday, "NULL"),
            (second[0], other, None, "concat_ws(', ', a.address, a.city)"),
        ):
            conn.execute(
                "UPDATE staging.loyalty_members AS m SET name_key = a.name_key, birth_date = ?, "
                f"address = {address}, email = NULL, phone = NULL FROM staging.online_accounts AS a "
                "WHERE m.card_no = ? AND a.account_id = ?",
                [birth, card, holder],
            )
        # A new receipt gives only the card of a member seen before, who shares nothing else.
        conn.execute(
            "INSERT INTO staging.store_purchases SELECT * REPLACE ('Z-NEW' AS receipt_id, "
            "NULL AS phone, ? AS loyalty_card) FROM staging.store_purchases LIMIT 1",
            [loner],
        )
        conn.execute(
            "DELETE FROM staging.store_purchases WHERE receipt_id = "
            "(SELECT min(receipt_id) FROM staging.store_purchases WHERE loyalty_card IS NOT NULL)"
        )
        before = _resolved(conn)
    shutil.copy(updated, whole)
    later = datetime(2030, 1, 2)
    with duckdb.connect(str(updated)) as conn:
        # Five days of a small landing zone touch most customers: resolve only those anyway.
        written = build_crosswalk(conn, later, SECRET, whole_above=1.0)
        after = _resolved(conn)
        again = build_crosswalk(conn, datetime(2030, 1, 3), SECRET)
        assert _resolved(conn) == after
        rules = dict(
            conn.execute(
                "SELECT source_id, match_rule FROM core.customer_crosswalk "
                "WHERE source_id IN (?, ?, 'Z-NEW')",
                [first[0], second[0]],
            ).fetchall()
        )
        # A crosswalk written by anything else is not built on.
        conn.execute(
            "CREATE OR REPLACE TABLE core.customer_crosswalk AS "
            "SELECT * FROM core.customer_crosswalk"
        )
        assert build_crosswalk(conn, datetime(2030, 1, 4), SECRET).whole
        assert _resolved(conn) == after
    with duckdb.connect(str(whole)) as conn:
        conn.execute("DROP TABLE core.identity_groups")
        assert build_crosswalk(conn, later, SECRET).whole
        expected = _resolved(conn)
    assert not written.whole
    redone, everyone = (int(n) for n in written.summary.split(" records")[0].split(" of "))
    assert 0 < redone < 0.6 * everyone
    assert rules == {
        first[0]: "name_and_birth_date",
        second[0]: "name_and_address",
        "Z-NEW": "loyalty_card",
    }
    assert after != before
    assert len(after["core.customer_key_merges"]) > len(before["core.customer_key_merges"])
    assert after == expected
    # Nothing changed since: nothing is resolved again.
    assert again.summary.startswith(f"0 of {everyone} records")


def test_order_lines_are_written_whole_once_a_fifth_lie_outside_the_sort_order(
    loaded, tmp_path: Path
) -> None:
    _, _, warehouse, _, _ = loaded
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, copy)
    with duckdb.connect(str(copy)) as conn:
        unchanged = build_order_lines(conn, CoreRules(), datetime.now())
        assert not unchanged.whole
        assert unchanged.summary.startswith("rewrote the lines of 0 of ")
        # A quarter of the lines as later runs would have written them, after the whole write:
        conn.execute(
            "UPDATE core.order_lines SET loaded_at = loaded_at + INTERVAL 1 SECOND "
            "WHERE hash(order_id) % 4 = 0"
        )
        assert build_order_lines(conn, CoreRules(), datetime.now()).whole
        assert conn.execute(
            "SELECT count(DISTINCT loaded_at) FROM core.order_lines"
        ).fetchall() == [(1,)]


def _small_core() -> duckdb.DuckDBPyConnection:
    """The staging tables order lines read, empty but for two products, and a crosswalk."""
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA staging; CREATE SCHEMA core")
    conn.execute(
        "CREATE TABLE staging.online_order_items (order_id VARCHAR, line_no INTEGER, "
        "sku VARCHAR, quantity INTEGER, unit_price DECIMAL(12,2), discount DECIMAL(12,2), "
        "source_file VARCHAR, source_line BIGINT, partition_date DATE, loaded_at TIMESTAMP)"
    )
    conn.execute(
        "CREATE TABLE staging.online_orders (order_id VARCHAR, account_id VARCHAR, "
        "ordered_at TIMESTAMP, status VARCHAR, payment_method VARCHAR, partition_date DATE, "
        "loaded_at TIMESTAMP)"
    )
    conn.execute(
        "CREATE TABLE staging.store_purchases (receipt_id VARCHAR, store_id VARCHAR, "
        "purchased_at TIMESTAMP, payment_method VARCHAR, sku VARCHAR, quantity INTEGER, "
        "unit_price DECIMAL(12,2), source_file VARCHAR, source_line BIGINT, "
        "partition_date DATE, loaded_at TIMESTAMP)"
    )
    conn.execute(
        "CREATE TABLE staging.products (sku VARCHAR, category VARCHAR, subcategory VARCHAR, "
        "kind VARCHAR, unit_cost DECIMAL(12,2))"
    )
    conn.execute(
        "INSERT INTO staging.products VALUES ('A', 'c', 's', 'k', 1), ('B', 'c', 's', 'k', 2)"
    )
    conn.execute("CREATE TABLE staging.online_accounts (account_id VARCHAR, email VARCHAR)")
    conn.execute(
        "CREATE TABLE core.customer_crosswalk (source VARCHAR, source_id VARCHAR, "
        "customer_key VARCHAR)"
    )
    return conn


def _lines(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return conn.execute(
        "SELECT order_id, line_no, sku, order_size_band FROM core.order_lines ORDER BY ALL"
    ).fetchall()


def test_orders_after_an_empty_first_write_and_a_line_gone_from_a_day_are_rewritten() -> None:
    conn = _small_core()
    start = datetime(2025, 1, 1)
    assert build_order_lines(conn, CoreRules(), start).whole  # nothing staged yet
    for n in range(1, 11):  # ten receipts, one of them (R1) with a line on a second day too
        conn.execute(
            "INSERT INTO staging.store_purchases VALUES "
            "(?, 'S1', '2025-01-02', 'cash', 'A', 1, ?, 'day1.csv', ?, '2025-01-02', ?)",
            [f"R{n}", n, n, start + timedelta(days=1)],
        )
    conn.execute(
        "INSERT INTO staging.store_purchases VALUES "
        "('R1', 'S1', '2025-01-03', 'cash', 'B', 1, 7, 'day2.csv', 1, '2025-01-03', ?)",
        [start + timedelta(days=2)],
    )
    # Every order is new to the table: written (whole, as they are all of it).
    build_order_lines(conn, CoreRules(), start + timedelta(days=3))
    assert len(_lines(conn)) == 11
    # The second day staged again without R1's line: only that day's rows are loaded anew.
    conn.execute("DELETE FROM staging.store_purchases WHERE partition_date = '2025-01-03'")
    written = build_order_lines(conn, CoreRules(), start + timedelta(days=4))
    assert written.summary.startswith("rewrote the lines of 1 of 10 orders")
    rewritten = _lines(conn)
    conn.execute("DROP TABLE core.order_lines")
    assert build_order_lines(conn, CoreRules(), start + timedelta(days=5)).whole
    assert rewritten == _lines(conn)
    assert ("R1", 2, "B", "large") not in rewritten and len(rewritten) == 10


def test_an_order_excluded_by_another_rule_is_rewritten() -> None:
    conn = _small_core()
    start = datetime(2025, 1, 1)
    for n in range(1, 10):  # nine receipts kept, and a cancelled order of an account
        conn.execute(
            "INSERT INTO staging.store_purchases VALUES "
            "(?, 'S1', '2025-01-02', 'cash', 'A', 1, ?, 'day1.csv', ?, '2025-01-02', ?)",
            [f"R{n}", n, n, start],
        )
    conn.execute("INSERT INTO staging.online_accounts VALUES ('A1', 'ann@staff.example')")
    conn.execute(
        "INSERT INTO staging.online_orders VALUES "
        "('O1', 'A1', '2025-01-02', 'cancelled', 'card', '2025-01-02', ?)",
        [start],
    )
    conn.execute(
        "INSERT INTO staging.online_order_items VALUES "
        "('O1', 1, 'B', 1, 5, 0, 'shop:order_items', 1, '2025-01-02', ?)",
        [start],
    )
    conn.execute(
        "INSERT INTO core.customer_crosswalk VALUES "
        "('online_accounts', 'A1', 'K1'), ('online_orders', 'O1', 'K1')"
    )
    assert build_order_lines(conn, CoreRules(), start + timedelta(days=1)).whole

    def rules() -> list[tuple]:
        return conn.execute("SELECT id, rule FROM core.excluded_rows ORDER BY ALL").fetchall()

    assert rules() == [("online:O1:1", "order_status_cancelled")]
    # Nothing staged anew, the same customer and lines: only the rule that excludes it differs.
    staff = CoreRules(staff_email_domains=["staff.example"])
    written = build_order_lines(conn, staff, start + timedelta(days=2))
    assert written.summary.startswith("rewrote the lines of 1 of 10 orders")
    assert rules() == [("online:O1:1", "staff_account")]


def test_order_lines_of_another_column_type_are_written_whole() -> None:
    conn = _small_core()
    conn.execute(
        "INSERT INTO staging.store_purchases VALUES "
        "('R1', 'S1', '2025-01-02', 'cash', 'A', 1, 5, 'day1.csv', 1, '2025-01-02', "
        "TIMESTAMP '2025-01-02')"
    )
    assert build_order_lines(conn, CoreRules(), datetime(2025, 1, 3)).whole
    assert not build_order_lines(conn, CoreRules(), datetime(2025, 1, 4)).whole
    # As an older version of the code might have left it.
    conn.execute("ALTER TABLE core.order_lines ALTER quantity TYPE BIGINT")
    assert build_order_lines(conn, CoreRules(), datetime(2025, 1, 5)).whole
    assert conn.execute(
        "SELECT data_type FROM duckdb_columns() WHERE table_name = 'order_lines' "
        "AND column_name = 'quantity'"
    ).fetchall() == [("INTEGER",)]


def test_an_order_in_a_refund_status_of_the_settings_is_a_refund_and_is_rewritten() -> None:
    conn = _small_core()
    start = datetime(2025, 1, 1)
    for n in range(1, 10):  # nine receipts, and an account's order it sent back
        conn.execute(
            "INSERT INTO staging.store_purchases VALUES "
            "(?, 'S1', '2025-01-02', 'cash', 'A', 1, ?, 'day1.csv', ?, '2025-01-02', ?)",
            [f"R{n}", n, n, start],
        )
    conn.execute("INSERT INTO staging.online_accounts VALUES ('A1', 'ann@shop.example')")
    conn.execute(
        "INSERT INTO staging.online_orders VALUES "
        "('O1', 'A1', '2025-01-02', 'returned', 'card', '2025-01-02', ?)",
        [start],
    )
    conn.execute(
        "INSERT INTO staging.online_order_items VALUES "
        "('O1', 1, 'B', 2, 5, 0, 'shop:order_items', 1, '2025-01-02', ?)",
        [start],
    )
    conn.execute(
        "INSERT INTO core.customer_crosswalk VALUES "
        "('online_accounts', 'A1', 'K1'), ('online_orders', 'O1', 'K1')"
    )

    def o1() -> tuple:
        return conn.execute(
            "SELECT order_status, net_amount, refund_amount FROM core.order_lines "
            "WHERE order_id = 'O1'"
        ).fetchone()

    assert build_order_lines(conn, CoreRules(), start + timedelta(days=1)).whole
    assert o1() == ("returned", 10, 0)  # a status the settings do not name: a sale
    # Nothing staged anew: only the setting that reads the status differs.
    returns = CoreRules(refund_statuses=["refunded", "Returned"])
    written = build_order_lines(conn, returns, start + timedelta(days=2))
    assert written.summary.startswith("rewrote the lines of 1 of 10 orders")
    assert o1() == ("refunded", 0, 10)
